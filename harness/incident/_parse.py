"""Reading production log lines: tolerant, counted, merged across processes.

An incident arrives as whatever the on-call engineer could copy: files from
several server processes, a logging prefix in front of each JSON object
(``2026-11-26 07:12:01 INFO reference_impl: {...}``), a last line cut in the
middle by log rotation, lines of other components interleaved. Refusing the
whole file over one bad line would make the tool useless exactly when it is
needed, and silently dropping lines would hide that the reconstruction is
partial. So every line is either an event or a counted skip with a reason
(``not_json``, ``truncated``, ``missing_fields``, ``unknown_event``,
``duplicate``), and the summary says how many of each.

Processes are told apart by ``worker_port`` (a restarted process keeps its
port and gets a new pid: it is the same slot of the deployment), else by
``pid``. Lines of several files are merged on ``ts``; the same line present
in two files (a merged file and a per-process one) counts once.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "EVENTS",
    "SKIP_REASONS",
    "LogEvent",
    "ParsedLogs",
    "Window",
    "WindowError",
    "filter_events",
    "parse_lines",
    "parse_window",
    "read_logs",
]

# event -> fields it must carry (besides ts) to be usable
EVENTS: dict[str, tuple[str, ...]] = {
    "chat_start": ("req_id", "session_id"),
    "chat_done": ("req_id", "session_id", "outcome", "status"),
    "state_changed_during_proxy": ("session_id",),
    "proxy_transport_error": ("session_id",),
    "heartbeat": (),
    "session_created": ("session_id",),
    "session_deleted": ("session_id",),
}
SKIP_REASONS = ("not_json", "truncated", "missing_fields", "unknown_event", "duplicate")


@dataclass(frozen=True)
class LogEvent:
    """One usable log line, with where it came from."""

    ts: float
    event: str
    process: str  # "port:<worker_port>" or "pid:<pid>" or "?"
    fields: dict[str, Any]
    source: str  # file:line

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def session_id(self) -> str | None:
        v = self.fields.get("session_id")
        return v if isinstance(v, str) else None


@dataclass
class ParsedLogs:
    events: list[LogEvent] = field(default_factory=list)
    lines: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending file:line

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def summary(self) -> str:
        used = len(self.events)
        parts = [f"{self.lines} line(s) read, {used} used"]
        if self.skipped:
            detail = ", ".join(f"{r} {self.skipped[r]} (first at {self.examples[r]})" for r in sorted(self.skipped))
            parts.append(f"skipped {sum(self.skipped.values())}: {detail}")
        else:
            parts.append("none skipped")
        return "; ".join(parts)


def _process_key(obj: dict[str, Any]) -> str:
    port = obj.get("worker_port")
    if isinstance(port, int) and not isinstance(port, bool):
        return f"port:{port}"
    pid = obj.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool):
        return f"pid:{pid}"
    return "?"


def _json_part(line: str) -> str | None:
    """The JSON object in a line, after any logging prefix; None if there is no ``{``."""
    i = line.find("{")
    return None if i < 0 else line[i:]


def _cut_short(part: str, exc: json.JSONDecodeError) -> bool:
    """A JSON object cut short (rotation, a crash mid-write, a size limit): valid up to where it ends."""
    if part.rstrip().endswith("}"):
        return False
    return exc.pos >= len(part.rstrip()) - 1 or exc.msg.startswith("Unterminated string")


def parse_lines(lines: Iterable[str], source: str, into: ParsedLogs | None = None) -> ParsedLogs:
    """Parse one file's lines into ``into`` (a new ParsedLogs by default); never raises on content."""
    out = into if into is not None else ParsedLogs()
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        out.lines += 1
        where = f"{source}:{n}"
        part = _json_part(line)
        if part is None:
            out.skip("not_json", where)
            continue
        try:
            obj = json.loads(part)
        except json.JSONDecodeError as exc:
            out.skip("truncated" if _cut_short(part, exc) else "not_json", where)
            continue
        if not isinstance(obj, dict):
            out.skip("not_json", where)
            continue
        name = obj.get("event")
        ts = obj.get("ts")
        if not isinstance(name, str) or isinstance(ts, bool) or not isinstance(ts, int | float):
            out.skip("missing_fields", where)
            continue
        if not math.isfinite(float(ts)):
            out.skip("missing_fields", where)
            continue
        required = EVENTS.get(name)
        if required is None:
            out.skip("unknown_event", where)
            continue
        if any(obj.get(k) is None for k in required):
            out.skip("missing_fields", where)
            continue
        out.events.append(LogEvent(float(ts), name, _process_key(obj), obj, where))
    return out


def read_logs(paths: Sequence[str | Path]) -> ParsedLogs:
    """Read and merge log files (ordered by ``ts``, then file order); identical lines count once."""
    out = ParsedLogs()
    for p in paths:
        path = Path(p)
        with path.open(encoding="utf-8", errors="replace") as fh:
            parse_lines(fh, path.name, out)
    seen: set[str] = set()
    unique: list[LogEvent] = []
    for ev in out.events:
        key = json.dumps(ev.fields, sort_keys=True, default=str)
        if key in seen:
            out.skip("duplicate", ev.source)
            continue
        seen.add(key)
        unique.append(ev)
    unique.sort(key=lambda e: e.ts)  # stable: equal ts keep file order
    out.events = unique
    return out


# ---------------------------------------------------------------- filters


class WindowError(ValueError):
    """A ``--window`` that cannot be read: says which form is expected."""


@dataclass(frozen=True)
class Window:
    """A time range; bounds are epoch seconds, or offsets from the first line (``relative``)."""

    start: float | None = None
    end: float | None = None
    relative: bool = False

    def resolve(self, first_ts: float) -> tuple[float, float]:
        base = first_ts if self.relative else 0.0
        lo = -math.inf if self.start is None else base + self.start
        hi = math.inf if self.end is None else base + self.end
        return lo, hi


def _bound(text: str) -> tuple[float | None, bool]:
    t = text.strip()
    if not t:
        return None, False
    if t.startswith("+"):
        return float(t[1:]), True
    try:
        return float(t), False
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp(), False
    except ValueError:
        raise WindowError(
            f"window bound {t!r}: expected epoch seconds (1795679470.2), an ISO time (2026-11-26T07:12:01Z) "
            "or +SECONDS from the first line"
        ) from None


def parse_window(text: str) -> Window:
    """``FROM..TO`` (either side may be empty): epoch seconds, ISO 8601, or ``+S`` offsets."""
    if ".." not in text:
        raise WindowError(f"--window {text!r}: expected FROM..TO, e.g. +0.1..+0.6 or 1795679470.2..1795679471")
    a, _, b = text.partition("..")
    (lo, rel_a), (hi, rel_b) = _bound(a), _bound(b)
    if lo is not None and hi is not None and rel_a != rel_b:
        raise WindowError(f"--window {text!r}: both bounds absolute or both +offsets")
    if lo is not None and hi is not None and hi < lo:
        raise WindowError(f"--window {text!r}: TO is before FROM")
    return Window(lo, hi, rel_a or rel_b)


def filter_events(
    events: Sequence[LogEvent], sessions: Sequence[str] = (), window: Window | None = None
) -> list[LogEvent]:
    """Events of the chosen sessions (an id or a unique prefix of one) inside the window.

    Heartbeats carry no session: kept inside the window unless sessions are chosen.
    A chat's lines stay together: if its ``chat_start`` is in the window, so is its ``chat_done``.
    """
    if not events:
        return []
    lo, hi = (window or Window()).resolve(events[0].ts)
    wanted = [s.lower() for s in sessions]
    starts_in: set[tuple[str, str]] = set()
    out: list[LogEvent] = []
    for ev in events:
        sid = ev.session_id
        if wanted and (sid is None or not any(sid.lower().startswith(w) for w in wanted)):
            continue
        req = ev.get("req_id")
        key = (ev.process, str(req))
        inside = lo <= ev.ts <= hi
        if ev.event == "chat_start" and inside:
            starts_in.add(key)
        if inside or (req is not None and key in starts_in):
            out.append(ev)
    return out
