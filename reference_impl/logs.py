"""Structured log lines, per-process counters and the memory heartbeat.

Why this format: production incidents arrive as log lines, and the harness
turns them into scenarios (CONTEXT.md, "Observability"). So every chat request
leaves exactly one ``chat_start`` and exactly one ``chat_done`` line, whatever
happens to it (404, 400, 502, cancellation, a bug), with the timing buckets
that say where its latency went, and the warnings that name the races
(``state_changed_during_proxy``) and the backend failures
(``proxy_transport_error``). One JSON object per line, fields as in
docs/contracts.md, so a checker can parse them without regexes.

``--log-format text`` prints the same events the way production servers do
through Python ``logging`` (CONTEXT.md, "Logs arrive as text"): a prefix (time
as ``asctime`` prints it, level, logger name, ``pid=<n>``), the event name,
then ``key=value`` pairs; the two warnings as a sentence with the pairs in
parentheses. The harness reads both (harness.serverlog); the text form exists
so that its text path is exercised by a real server, not only by fixtures.

The heartbeat (rss_mb, vms_mb, counters) is what catches leaks: a server that
keeps deleted sessions in memory, or whose in-flight counter only goes up.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from harness.seams import Clock

__all__ = ["Counters", "EventLog", "JsonLineSink", "ListSink", "LogSink", "TextLineSink", "heartbeat_loop", "make_sink"]

LogSink = Callable[[dict[str, Any]], None]


class JsonLineSink:
    """Writes each event as one JSON line with a single ``write`` (safe with O_APPEND across processes)."""

    def __init__(self, stream: IO[str] | None = None, path: str | None = None) -> None:
        self._stream = stream
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def format(self, event: dict[str, Any]) -> str:
        return json.dumps(event, separators=(",", ":"), default=str)

    def __call__(self, event: dict[str, Any]) -> None:
        line = self.format(event) + "\n"
        if self._fd is not None:
            os.write(self._fd, line.encode())
        elif self._stream is not None:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_BARE = re.compile(r"[^\s\"'=(){}\[\],;]+")
_SENTENCES = {
    "state_changed_during_proxy": "state_changed_during_proxy: session {session_id} moved on while request "
    "{req_id} was at the backend; not updating it",
    "proxy_transport_error": "proxy_transport_error: backend call of session {session_id} (request {req_id}) failed",
}


def _text_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    if text and _BARE.fullmatch(text) and text not in ("-", "None", "null", "true", "false"):
        return text
    return json.dumps(text)  # quoted, with JSON escapes


class TextLineSink(JsonLineSink):
    """``2026-12-01 09:30:00,123 INFO reference_impl pid=7 chat_done req_id=ab12cd34 status=200 ...``.

    The time is the event's ``ts`` printed as ``logging``'s ``asctime`` (local time, milliseconds).
    """

    logger = "reference_impl"

    def format(self, event: dict[str, Any]) -> str:
        fields = dict(event)
        ts = float(fields.pop("ts", 0.0))
        level = fields.pop("level", "INFO")
        name = str(fields.pop("event", "?"))
        pid = fields.pop("pid", None)
        when = datetime.fromtimestamp(ts)
        prefix = f"{when:%Y-%m-%d %H:%M:%S},{when.microsecond // 1000:03d} {level} {self.logger} pid={pid}"
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        sentence = _SENTENCES.get(name)
        if sentence is not None:
            said = {k: _text_value(fields.get(k)) for k in ("session_id", "req_id")}
            rest = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if k not in said)
            return f"{prefix} {sentence.format(**said)} ({rest})"
        return f"{prefix} {name} {pairs}".rstrip()


def make_sink(log_format: str = "json", *, stream: IO[str] | None = None, path: str | None = None) -> JsonLineSink:
    """The sink for ``--log-format json|text``."""
    if log_format not in ("json", "text"):
        raise ValueError(f"--log-format must be json or text, got {log_format!r}")
    cls = TextLineSink if log_format == "text" else JsonLineSink
    return cls(stream=stream, path=path)


class ListSink(list[dict[str, Any]]):
    """Keeps events in memory (tests, simulation)."""

    def __call__(self, event: dict[str, Any]) -> None:
        self.append(event)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self if e["event"] == name]


@dataclass
class Counters:
    reqs_total: int = 0
    turns_completed: int = 0
    inflight: int = 0


class EventLog:
    """Adds ``ts``, ``level``, ``pid`` and ``worker_port`` to every event and hands it to the sink."""

    def __init__(self, sink: LogSink | None, clock: Clock, *, pid: int, worker_port: int) -> None:
        self._sink = sink
        self._clock = clock
        self.pid = pid
        self.worker_port = worker_port

    def emit(self, level: str, event: str, **fields: Any) -> None:
        if self._sink is None:
            return
        line: dict[str, Any] = {
            "ts": round(self._clock.wall(), 6),
            "level": level,
            "event": event,
            "pid": self.pid,
            "worker_port": self.worker_port,
        }
        line.update(fields)
        self._sink(line)

    def info(self, event: str, **fields: Any) -> None:
        self.emit("INFO", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.emit("WARNING", event, **fields)


def memory_mb() -> tuple[float, float]:
    import psutil

    info = psutil.Process().memory_info()
    return round(info.rss / 2**20, 2), round(info.vms / 2**20, 2)


async def heartbeat_loop(log: EventLog, counters: Counters, sessions: Callable[[], int], interval: float) -> None:
    """One ``heartbeat`` line every ``interval`` seconds (loop timers: virtual under simulation)."""
    while True:
        rss, vms = memory_mb()
        log.info(
            "heartbeat",
            rss_mb=rss,
            vms_mb=vms,
            reqs_total=counters.reqs_total,
            turns_completed=counters.turns_completed,
            inflight=counters.inflight,
            sessions=sessions(),
        )
        await asyncio.sleep(interval)
