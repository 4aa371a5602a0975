"""Any session server's log lines, read into the one shape checkers, reports and incidents use.

CONTEXT.md promises the *events* (``chat_start``, ``chat_done`` with its timing
buckets, the ``state_changed_during_proxy`` and ``proxy_transport_error``
warnings, heartbeats), not how a server prints them. Our reference server
writes one JSON object per line; a production server usually goes through
Python ``logging``: a prefix (time, level, logger name, ``pid=<n>``), then
``chat_done req_id=3fa2 status=200 total_ms=812.4 ...``, and its warnings may be
free text (``state_changed_during_proxy: session 9c.. moved on while ...``).
Names differ too (``request_id`` for ``req_id``, ``latency_ms`` for
``total_ms``). If each consumer parsed its own way, a text log would feed the
incident importer but leave every report bucket at n=0, or the reverse; so
there is one parser, and everything downstream reads its output: plain dicts
with our field names (docs/contracts.md, "Log lines"), ``ts`` in epoch
seconds, ids as strings and numbers as numbers.

A line is tried as:

- **JSON**: an object after any prefix (``2026-11-26 07:12:01 INFO app: {...}``);
  the prefix's time and ``pid`` fill what the object lacks;
- **key=value**: the event is the first bare word that names an event
  (``chat_done``, or a name in the ``events`` mapping), or ``event=...``; values
  may be quoted (``error="connect failed: \\"x\\""``, ``'...'``), ``-`` / ``None``
  mean no value; the time comes from ``ts=`` or the prefix (``2026-12-01
  09:30:00,123``, ISO 8601 with or without a zone; a zone-less time is local
  time, as ``logging``'s ``asctime`` is), the pid from ``pid=<n>`` or ``name[<n>]``;
- **a pattern**: a regex per event (``patterns``), searched in the line; its
  named groups become fields. The defaults find the two warnings by name, with a
  ``session <id>`` / ``request <id>`` / URL in the free text.

Bad lines never raise: each is an event or a counted skip with its reason
(``SKIP_REASONS``), and the stats say how many of each, first where.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PATTERNS",
    "FORMATS",
    "KNOWN_EVENTS",
    "SKIP_REASONS",
    "LogConfig",
    "LogConfigError",
    "LogStats",
    "fill_worker_ports",
    "lines_of_run",
    "parse_line",
    "parse_lines",
    "read_events",
    "read_server_logs",
]

FORMATS = ("auto", "json", "kv")
KNOWN_EVENTS = (
    "chat_start",
    "chat_done",
    "state_changed_during_proxy",
    "proxy_transport_error",
    "heartbeat",
    "session_created",
    "session_deleted",
)
SKIP_REASONS = ("not_json", "no_event", "no_time", "truncated", "missing_fields", "unknown_event", "duplicate")

_ID = r"[0-9A-Za-z][\w-]*"
DEFAULT_PATTERNS: dict[str, str] = {
    "state_changed_during_proxy": (
        r"^(?=.*?\bstate_changed_during_proxy\b)"
        rf"(?=(?:.*?\bsession[\s:=#]+(?P<session_id>{_ID}))?)"
        rf"(?=(?:.*?\brequest[\s:=#]+(?P<req_id>{_ID}))?)"
    ),
    "proxy_transport_error": (
        r"^(?=.*?\bproxy_transport_error\b)"
        rf"(?=(?:.*?\bsession[\s:=#]+(?P<session_id>{_ID}))?)"
        rf"(?=(?:.*?\brequest[\s:=#]+(?P<req_id>{_ID}))?)"
        r"(?=(?:.*?(?P<url>https?://[^\s,;)\]]+))?)"
    ),
}

# Always strings (an 8-hex request id may well be all digits), and always numbers.
STRING_FIELDS = frozenset(
    {"event", "level", "logger", "req_id", "session_id", "caller_request_id", "outcome", "url", "error", "rid"}
)
NUMERIC_FIELDS = frozenset(
    {
        "ts",
        "pid",
        "worker_port",
        "status",
        "lock_wait_ms",
        "tokenize_in_ms",
        "proxy_elapsed_ms",
        "tokenize_out_ms",
        "total_ms",
        "read_body_ms",
        "elapsed_ms",
        "inflight_now",
        "inflight",
        "inflight_chat_count",
        "prompt_tokens",
        "completion_tokens",
        "expected_num_assistant",
        "actual_num_assistant",
        "rss_mb",
        "vms_mb",
        "reqs_total",
        "turns_completed",
        "sessions",
    }
)
LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "WARN": "WARNING", "ERROR": "ERROR"}
LEVELS.update({"CRITICAL": "CRITICAL", "FATAL": "CRITICAL"})
_NONE = frozenset({"-", "None", "null", "nil", ""})


class LogConfigError(ValueError):
    """A ``[target.logs]`` value that cannot be used: names the key and the fix."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class LogConfig:
    """How to read one server's logs (``[target.logs]`` in a scenario)."""

    format: str = "auto"  # auto | json | kv
    fields: dict[str, str] = field(default_factory=dict)  # their field name -> ours
    events: dict[str, str] = field(default_factory=dict)  # their event name -> ours
    patterns: dict[str, str] = field(default_factory=dict)  # our event name -> regex (named groups = fields)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LogConfig:
        """Validate plain data (a TOML table, ``scenario.json``); raises :class:`LogConfigError`."""
        allowed = ("format", "fields", "events", "patterns")
        for k in data:
            if k not in allowed:
                raise LogConfigError(k, f"unknown key; allowed here: {', '.join(allowed)}")
        fmt = data.get("format", "auto")
        if fmt not in FORMATS:
            raise LogConfigError("format", f"{fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")

        def table(k: str) -> dict[str, str]:
            v = data.get(k, {})
            if not isinstance(v, Mapping) or not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
                raise LogConfigError(k, f'expected a table of strings ({k} = {{their_name = "our_name"}}), got {v!r}')
            return dict(v)

        fields_, events, patterns = table("fields"), table("events"), table("patterns")
        for theirs, ours in fields_.items():
            if not ours or not theirs:
                raise LogConfigError(f"fields.{theirs}", "field names must not be empty")
        for theirs, ours in events.items():
            if not ours or not theirs:
                raise LogConfigError(f"events.{theirs}", "event names must not be empty")
        for ev, rx in patterns.items():
            try:
                re.compile(rx)
            except re.error as exc:
                raise LogConfigError(f"patterns.{ev}", f"not a valid regular expression ({exc}): {rx!r}") from None
        return cls(fmt, fields_, events, patterns)

    def to_plain(self) -> dict[str, Any]:
        return {"format": self.format, "fields": self.fields, "events": self.events, "patterns": self.patterns}


@dataclass
class LogStats:
    """What a read did: lines seen, used, and every skip counted by reason (first offending file:line)."""

    lines: int = 0
    used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    formats: Counter[str] = field(default_factory=Counter)  # json | kv | pattern -> lines used

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def summary(self) -> str:
        parts = [f"{self.lines} line(s) read, {self.used} used"]
        if self.formats:
            parts[0] += " (" + ", ".join(f"{k} {self.formats[k]}" for k in sorted(self.formats)) + ")"
        if self.skipped:
            detail = ", ".join(f"{r} {self.skipped[r]} (first at {self.examples[r]})" for r in sorted(self.skipped))
            parts.append(f"skipped {sum(self.skipped.values())}: {detail}")
        else:
            parts.append("none skipped")
        return "; ".join(parts)


# ---------------------------------------------------------------- one line

_TS = re.compile(
    r"^\[?(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<time>\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d{1,9}))?"
    r"\s*(?P<zone>Z|UTC|[+-]\d{2}:?\d{2})?\]?"
)
_EPOCH = re.compile(r"^\[?(?P<epoch>\d{9,11}(?:\.\d+)?)\]?(?=\s)")
_TOKEN = re.compile(
    r"""(?P<pre>[(\[{,;]*)(?P<key>[A-Za-z_][\w.\-]*)=
        (?:"(?P<dq>(?:[^"\\]|\\.)*)(?P<dqend>"?)
          |'(?P<sq>(?:[^'\\]|\\.)*)(?P<sqend>'?)
          |(?P<bare>\S*))
      |(?P<word>\S+)""",
    re.X,
)
_WORD = re.compile(r"[A-Za-z_][\w.]*")
_QUOTEY = re.compile(r"[\"'{}]")
_CLOSERS = frozenset(",;)]}")
_PID_BRACKET = re.compile(r"\[(\d{1,9})\]")


def _prefix_time(line: str) -> tuple[float | None, int]:
    """(epoch seconds, length of the time prefix) of a leading timestamp; (None, 0) if there is none."""
    m = _EPOCH.match(line)
    if m:
        return float(m["epoch"]), m.end()
    m = _TS.match(line)
    if not m:
        return None, 0
    frac = (m["frac"] or "0")[:6].ljust(6, "0")
    try:
        dt = datetime.fromisoformat(f"{m['date']}T{m['time']}").replace(microsecond=int(frac))
    except ValueError:
        return None, 0
    zone = m["zone"]
    if zone in ("Z", "UTC"):
        dt = dt.replace(tzinfo=UTC)
    elif zone:
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        dt = dt.replace(tzinfo=timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))))
    return dt.timestamp(), m.end()  # zone-less: local time, as logging's asctime


def _ts_value(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, str):
        try:
            f = float(v)
            return f if math.isfinite(f) else None
        except ValueError:
            t, n = _prefix_time(v.strip())
            return t if n else None
    return None


def _unescape(s: str, quote: str) -> str:
    if quote == '"':
        try:
            out = json.loads(f'"{s}"')
            if isinstance(out, str):
                return out
        except ValueError:
            pass
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), s)


def _typed(v: str) -> Any:
    """A bare text value as what it spells: None, a bool, an int, a finite float, else the text."""
    if v in _NONE:
        return None
    if v in ("true", "True"):
        return True
    if v in ("false", "False"):
        return False
    try:
        return int(v)
    except ValueError:
        pass
    try:
        f = float(v)
    except ValueError:
        return v
    return f if math.isfinite(f) else v


def _strip_close(v: str) -> str:
    """``x=2);`` in free text: the closing punctuation belongs to the sentence, not the value."""
    v = v.rstrip(",;")
    while v and v[-1] in ")]}" and {")": "(", "]": "[", "}": "{"}[v[-1]] not in v:
        v = v[:-1].rstrip(",;")
    return v


@dataclass
class _Text:
    fields: dict[str, str]  # raw text; typed by _normalize once names are mapped
    quoted: set[str]  # keys whose value was quoted: always text
    words: list[tuple[int, str]]  # (position, word) of bare words, values excluded
    truncated: bool


def _scan(text: str) -> _Text:
    fields: dict[str, str] = {}
    quoted: set[str] = set()
    words: list[tuple[int, str]] = []
    truncated = False
    for m in _TOKEN.finditer(text):
        word = m["word"]
        if word is not None:
            if _QUOTEY.search(word):
                continue  # a JSON fragment or a quotation: not where an event is named
            start = m.start()
            words.extend((start + w.start(), w[0]) for w in _WORD.finditer(word))
            continue
        key = m["key"]
        bare = m["bare"]
        if bare is not None:
            fields[key] = _strip_close(bare) if bare and bare[-1] in _CLOSERS else bare
            quoted.discard(key)
        elif m["dq"] is not None:
            if not m["dqend"]:
                truncated = True
            fields[key] = _unescape(m["dq"], '"')
            quoted.add(key)
        elif m["sq"] is not None:
            if not m["sqend"]:
                truncated = True
            fields[key] = _unescape(m["sq"], "'")
            quoted.add(key)
    return _Text(fields, quoted, words, truncated)


def _normalize(obj: dict[str, Any], config: LogConfig, *, quoted: set[str] | None = None) -> dict[str, Any]:
    """Our names, then our types. ``quoted`` is None for JSON (the server chose the types), else
    the text keys whose value was quoted (kept as text); other text values are typed by shape."""
    if config.fields:
        out = {k: v for k, v in obj.items() if k not in config.fields}
        out.update({config.fields[k]: v for k, v in obj.items() if k in config.fields})  # the mapping wins
        if quoted is not None:
            quoted = {config.fields.get(k, k) for k in quoted}
    else:
        out = obj
    ev = out.get("event")
    if isinstance(ev, str) and config.events:
        out["event"] = config.events.get(ev, ev)
    if quoted is None:  # JSON: only a known field of the wrong type is touched
        for k in STRING_FIELDS.intersection(out):
            v = out[k]
            if v is not None and not isinstance(v, str):
                out[k] = str(v)
        for k in NUMERIC_FIELDS.intersection(out):
            v = out[k]
            if isinstance(v, str):
                t = _typed(v.strip())
                out[k] = t if isinstance(t, int | float) and not isinstance(t, bool) else (None if t is None else v)
    else:
        for k, v in out.items():
            if not isinstance(v, str):
                continue
            if k in STRING_FIELDS:
                if v in _NONE and k not in quoted:
                    out[k] = None
            elif k not in quoted or k in NUMERIC_FIELDS:
                t = _typed(v.strip())
                if k in NUMERIC_FIELDS and isinstance(t, bool | str):
                    t = v  # a non-number where a number belongs stays visible as text
                out[k] = t
    level = out.get("level")
    if isinstance(level, str) and level not in LEVELS.values():
        out["level"] = LEVELS.get(level.upper(), level)
    return out


def _event_names(config: LogConfig) -> dict[str, str]:
    names = {e: e for e in KNOWN_EVENTS}
    names.update(config.events)
    names.update({e: e for e in config.patterns})
    return names


def _patterns(config: LogConfig) -> list[tuple[str, re.Pattern[str]]]:
    out = [(ev, re.compile(rx)) for ev, rx in config.patterns.items()]
    out += [(ev, re.compile(rx)) for ev, rx in DEFAULT_PATTERNS.items() if ev not in config.patterns]
    return out


def _json_line(line: str, brace: int) -> tuple[dict[str, Any] | None, str | None]:
    part = line[brace:]
    try:
        obj = json.loads(part)
    except json.JSONDecodeError as exc:
        stripped = part.rstrip()
        cut = not stripped.endswith("}") and (exc.pos >= len(stripped) - 1 or exc.msg.startswith("Unterminated"))
        return None, "truncated" if cut else "not_json"
    except RecursionError:
        return None, "not_json"
    if not isinstance(obj, dict):
        return None, "not_json"
    return obj, None


def _prefix_facts(prefix: str) -> dict[str, Any]:
    """Level and pid from the text before the message (``INFO``, ``[WARNING]``, ``pid=12``, ``app[12]:``)."""
    facts: dict[str, Any] = {}
    scan = _scan(prefix)
    for _, w in scan.words:
        if w.upper() in LEVELS and w.isupper():
            facts["level"] = LEVELS[w]
            break
    pid = scan.fields.get("pid", "")
    if pid.isdigit():
        facts["pid"] = int(pid)
    else:
        m = _PID_BRACKET.search(prefix)
        if m:
            facts["pid"] = int(m[1])
    return facts


@dataclass(frozen=True)
class _Compiled:
    config: LogConfig
    names: dict[str, str]
    patterns: list[tuple[str, re.Pattern[str]]]

    @classmethod
    def of(cls, config: LogConfig | None) -> _Compiled:
        cfg = config or LogConfig()
        return cls(cfg, _event_names(cfg), _patterns(cfg))


def parse_line(line: str, config: LogConfig | None = None) -> tuple[dict[str, Any] | None, str | None, str]:
    """One line -> (normalized event, None, format) or (None, skip reason, "").

    The event has at least ``ts`` (a finite float) and ``event`` (a string);
    ``format`` says how it was read: ``json``, ``kv`` or ``pattern``.
    """
    return _parse(line, _Compiled.of(config))


def _parse(line: str, c: _Compiled) -> tuple[dict[str, Any] | None, str | None, str]:
    cfg, names = c.config, c.names
    line = line.strip()
    if line.startswith("{") and cfg.format != "kv":  # a bare JSON object: the common case, no scanning
        prefix_ts, n = None, 0
    else:
        prefix_ts, n = _prefix_time(line)
    body = line[n:]
    brace = line.find("{")

    obj: dict[str, Any] | None = None
    fmt = ""
    reason: str | None = None
    # JSON: format json, or auto with an object and no event word before it (kv values may hold braces)
    if cfg.format == "json" or (
        cfg.format == "auto"
        and brace >= 0
        and (brace == n or not any(w in names for _, w in _scan(line[n:brace]).words))
    ):
        if brace < 0:
            return None, "not_json", ""
        obj, reason = _json_line(line, brace)
        if obj is None:
            return None, reason, ""
        fmt = "json"
        if brace > n:
            for k, v in _prefix_facts(line[n:brace]).items():
                obj.setdefault(k, v)
        if "ts" not in obj and prefix_ts is not None:
            obj["ts"] = prefix_ts
        out = _normalize(obj, cfg)
    else:
        scan = _scan(body)
        event: str | None = None
        at = len(body)
        ev_field = scan.fields.get("event")
        for pos, w in scan.words:
            if w in names:
                event, at = names[w], pos
                break
        if event is None and isinstance(ev_field, str):
            event = names.get(ev_field, ev_field)
        groups: dict[str, Any] = {}
        for ev, rx in c.patterns:
            if event is not None and ev != event:
                continue
            m = rx.search(body)
            if m:
                if event is None:
                    event, fmt = ev, "pattern"
                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                break
        if event is None:
            return None, "no_event", ""
        fmt = fmt or "kv"
        fields: dict[str, Any] = dict(scan.fields)
        for k, v in groups.items():
            fields.setdefault(k, v)
        facts = _prefix_facts(body[:at])
        for k, v in facts.items():
            fields.setdefault(k, v)
        fields["event"] = event
        if _ts_value(fields.get("ts")) is None and prefix_ts is not None:
            fields["ts"] = prefix_ts
        out = _normalize(fields, cfg, quoted=scan.quoted | {"event"})
        if scan.truncated:
            return None, "truncated", ""
    ts = _ts_value(out.get("ts"))
    if not isinstance(out.get("event"), str) or not out["event"]:
        return None, "missing_fields", ""
    if ts is None:
        return None, "no_time" if fmt != "json" else "missing_fields", ""
    out["ts"] = ts
    return out, None, fmt


def parse_lines(
    lines: Iterable[str], source: str, config: LogConfig | None = None, stats: LogStats | None = None
) -> tuple[list[tuple[dict[str, Any], str]], LogStats]:
    """Every line of one file -> ([(event, "file:line")], stats); never raises on content."""
    st = stats if stats is not None else LogStats()
    compiled = _Compiled.of(config)
    out: list[tuple[dict[str, Any], str]] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        st.lines += 1
        where = f"{source}:{n}"
        ev, reason, fmt = _parse(raw, compiled)
        if ev is None:
            st.skip(reason or "not_json", where)
            continue
        st.formats[fmt] += 1
        out.append((ev, where))
    return out, st


def _dedup_sorted(
    per_file: list[list[tuple[dict[str, Any], str]]], stats: LogStats
) -> list[tuple[dict[str, Any], str]]:
    """Merge files on ``ts``; a line that another file already holds (a merged file beside the
    per-process ones) counts once. Within one file identical lines are distinct events: with a
    millisecond time, two equal warnings in one millisecond are two warnings."""
    kept: Counter[str] = Counter()  # the most times any file so far held each line
    unique: list[tuple[dict[str, Any], str]] = []
    for events in per_file:
        here: Counter[str] = Counter()
        for ev, where in events:
            key = json.dumps(ev, sort_keys=True, default=str)
            here[key] += 1
            if here[key] <= kept[key]:
                stats.skip("duplicate", where)
                continue
            unique.append((ev, where))
        for key, n in here.items():
            kept[key] = max(kept[key], n)
    unique.sort(key=lambda e: float(e[0]["ts"]))  # stable: equal ts keep file order
    return unique


def fill_worker_ports(events: Iterable[dict[str, Any]]) -> None:
    """A line without ``worker_port`` gets its process's port, when its ``pid`` names exactly one.

    Servers often say the port in ``chat_start`` only; without this, one process's lines would
    look like two processes to every per-process rule (in-flight counts, incident joins).
    """
    evs = list(events)
    ports: dict[Any, set[Any]] = {}
    for ev in evs:
        if ev.get("pid") is not None and isinstance(ev.get("worker_port"), int):
            ports.setdefault(ev["pid"], set()).add(ev["worker_port"])
    for ev in evs:
        if ev.get("worker_port") is None and len(ports.get(ev.get("pid"), ())) == 1:
            ev["worker_port"] = next(iter(ports[ev["pid"]]))


def read_events(
    paths: Sequence[str | Path], config: LogConfig | None = None, *, offsets: Mapping[str, int] | None = None
) -> tuple[list[tuple[dict[str, Any], str]], LogStats]:
    """Like :func:`read_server_logs`, keeping where each event came from (``file:line``)."""
    stats = LogStats()
    found: list[list[tuple[dict[str, Any], str]]] = []
    for p in paths:
        path = Path(p)
        with path.open("rb") as fh:
            if offsets and str(p) in offsets:
                fh.seek(offsets[str(p)])
            data = fh.read().decode("utf-8", errors="replace")
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        events, _ = parse_lines(lines, path.name, config, stats)
        found.append(events)
    unique = _dedup_sorted(found, stats)
    fill_worker_ports(ev for ev, _ in unique)
    stats.used = len(unique)
    return unique, stats


def read_server_logs(
    paths: Sequence[str | Path], config: LogConfig | None = None, *, offsets: Mapping[str, int] | None = None
) -> tuple[list[dict[str, Any]], LogStats]:
    """Read and merge server log files -> (normalized events ordered by ``ts``, stats).

    The same line in two files (a merged file and a per-process one) counts
    once. ``offsets`` (path -> byte offset) reads only what was appended since:
    the log of a deployment that was running before the harness started.
    Raises ``OSError`` for a file that cannot be read (bad input, not content).
    """
    events, stats = read_events(paths, config, offsets=offsets)
    return [ev for ev, _ in events], stats


def lines_of_run(lines: Sequence[dict[str, Any]], sessions: Iterable[str]) -> list[dict[str, Any]]:
    """The lines of one run in a log that also holds other traffic (a deployment's long-lived log).

    A line naming a session belongs to the run if the run used that session id
    (ids are the server's own, random and unique); a line naming none
    (heartbeats) if it falls between the first and last line kept.
    """
    wanted = set(sessions)
    mine = [ln for ln in lines if ln.get("session_id") in wanted]
    if not mine:
        return []
    lo, hi = min(float(ln["ts"]) for ln in mine), max(float(ln["ts"]) for ln in mine)
    return [
        ln
        for ln in lines
        if ln.get("session_id") in wanted or (ln.get("session_id") is None and lo <= float(ln["ts"]) <= hi)
    ]
