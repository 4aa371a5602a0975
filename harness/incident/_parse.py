"""Reading production log lines: tolerant, counted, merged across processes.

An incident arrives as whatever the on-call engineer could copy: files from
several server processes, JSON objects or Python ``logging`` text
(``2026-11-26 07:12:01,123 INFO app pid=7 chat_done req_id=.. status=200 ...``),
a last line cut in the middle by log rotation, lines of other components
interleaved. Refusing the whole file over one bad line would make the tool
useless exactly when it is needed, and silently dropping lines would hide that
the reconstruction is partial. So every line is either an event or a counted
skip with a reason (``not_json``, ``no_event``, ``no_time``, ``truncated``,
``missing_fields``, ``unknown_event``, ``duplicate``), and the summary says how
many of each. The lines themselves are read by :mod:`harness.serverlog`, the
parser the log checks and the report use too (a ``LogConfig`` maps another
server's field and event names to ours).

Processes are told apart by ``worker_port`` (a restarted process keeps its
port and gets a new pid: it is the same slot of the deployment), else by
``pid``. Lines of several files are merged on ``ts``; the same line present
in two files (a merged file and a per-process one) counts once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.serverlog import SKIP_REASONS as _LINE_SKIPS
from harness.serverlog import LogConfig, LogStats, fill_worker_ports, read_events
from harness.serverlog import parse_lines as _parse_text_lines

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
SKIP_REASONS = _LINE_SKIPS


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


def _use(out: ParsedLogs, obj: dict[str, Any], where: str) -> None:
    """An event the incident needs, or a counted skip (an event we do not replay, a missing field)."""
    name = obj["event"]
    if not math.isfinite(float(obj["ts"])):
        out.skip("missing_fields", where)
        return
    required = EVENTS.get(name)
    if required is None:
        out.skip("unknown_event", where)
        return
    if any(obj.get(k) is None for k in required):
        out.skip("missing_fields", where)
        return
    out.events.append(LogEvent(float(obj["ts"]), name, _process_key(obj), obj, where))


def _merge_stats(out: ParsedLogs, st: LogStats) -> None:
    out.lines += st.lines
    for reason, n in st.skipped.items():
        out.skipped[reason] += n
        out.examples.setdefault(reason, st.examples[reason])


def parse_lines(
    lines: Iterable[str], source: str, into: ParsedLogs | None = None, config: LogConfig | None = None
) -> ParsedLogs:
    """Parse one file's lines into ``into`` (a new ParsedLogs by default); never raises on content."""
    out = into if into is not None else ParsedLogs()
    events, st = _parse_text_lines(lines, source, config)
    fill_worker_ports(ev for ev, _ in events)
    _merge_stats(out, st)
    for obj, where in events:
        _use(out, obj, where)
    return out


def read_logs(paths: Sequence[str | Path], config: LogConfig | None = None) -> ParsedLogs:
    """Read and merge log files (ordered by ``ts``, then file order); identical lines count once."""
    out = ParsedLogs()
    events, st = read_events(paths, config)
    _merge_stats(out, st)
    for obj, where in events:
        _use(out, obj, where)
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
