"""The history: an append-only record of every operation, Jepsen style.

Checkers and reports read only the history (plus the servers' own final
state and logs), so everything an agent, the nemesis or the runner does over
HTTP is written here first as an ``invoke`` and then as exactly one
completion: ``ok``, ``fail`` (it definitely did not happen: connection
refused, a 4xx) or ``info`` (unknown outcome: a timeout, a dropped
connection, the run's duration bound). Recording a timeout as a failure would
let a checker conclude a turn was never committed when the server may well
have committed it; ``info`` keeps the checker honest.

Times are seconds since the run's start on the injected :class:`Clock`, so the
same recorder serves live mode (loop time) and simulation (virtual time).
The recorder is deliberately not thread-safe: every producer runs on the one
event loop, and a lock would hide a design mistake rather than fix it.

The event format is the contract in ``docs/contracts.md`` ("History").
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from harness.seams import Clock

__all__ = [
    "COMPLETION_TYPES",
    "History",
    "HistoryError",
    "OpType",
    "completions",
    "operations",
    "read_history",
    "write_history",
]

OpType = Literal["ok", "fail", "info"]
COMPLETION_TYPES: frozenset[str] = frozenset({"ok", "fail", "info"})
_FUNCTIONS = frozenset({"create", "chat", "get", "delete", "probe", "chaos", "fault", "fuzz"})


# One encoder for every sink line, the same bytes as ``json.dumps(ev, sort_keys=True, default=str)``: ``json.dumps``
# with arguments builds a new ``JSONEncoder`` per call, and ``JSONEncoder.encode`` builds a new C encoder (and its
# circular-reference table) per call; an event is never circular, so the C encoder is built once, without the table
# (#15: the sink's JSON was the largest single cost of a recorded turn). Where ``_json`` is missing, the stdlib's.
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_ITER = (
    _C_ENCODER(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", True, False, True)
    if _C_ENCODER is not None
    else None
)
_ENCODE_SLOW = json.JSONEncoder(sort_keys=True, default=str).encode


def _encode_line(ev: dict[str, Any]) -> str:
    if _ENCODE_ITER is None:  # pragma: no cover - CPython always has _json
        return _ENCODE_SLOW(ev)
    return "".join(_ENCODE_ITER(ev, 0))


class HistoryError(RuntimeError):
    """Misuse of the recorder: completing an unknown or already completed op."""


class History:
    """Append-only operation log.

    ``invoke(...)`` returns an op id; ``complete(op, type, ...)`` (or the
    ``ok`` / ``fail`` / ``info`` shortcuts) closes it. ``start`` is the run's
    origin on ``clock.monotonic()``; by default the first read of the clock.
    ``sink`` (an open text file) receives every event as a JSON line as it
    happens, flushed every ``FLUSH_EVERY`` events, so a crashed or killed run
    still leaves its history behind (up to the last batch) for ``harness check``.

    ``keep=False`` (a sink required): the sink is the history; ``events`` stays empty and only the open
    operations are held, so a live run's memory does not grow with its length (issue 13). ``observe`` is
    called with every event as it is appended (what the run needs of the history later, e.g. the sessions'
    owners, is gathered there instead of by walking ``events``). ``count``: the events appended so far.
    """

    FLUSH_EVERY = 256

    def __init__(
        self,
        clock: Clock,
        *,
        start: float | None = None,
        sink: IO[str] | None = None,
        keep: bool = True,
        observe: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not keep and sink is None:
            raise ValueError("History(keep=False) needs a sink: the events would be lost")
        self._clock = clock
        self._start = start
        self._sink = sink
        self._keep = keep
        self._observe = observe
        self._next_op = 0
        self._open: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._count = 0

    # -- time ---------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the run's start."""
        t = self._clock.monotonic()
        if self._start is None:
            self._start = t
        return t - self._start

    # -- recording -----------------------------------------------------------

    def invoke(
        self,
        *,
        process: str,
        f: str,
        session: str | None = None,
        server: str = "",
        turn: int | None = None,
        attempt: int | None = None,
        request_id: str | None = None,
        intended: float | None = None,
        **extra: Any,
    ) -> int:
        if f not in _FUNCTIONS:
            raise HistoryError(f"unknown f {f!r}; allowed: {sorted(_FUNCTIONS)}")
        now = self.now()
        op = self._next_op
        self._next_op += 1
        ev: dict[str, Any] = {
            "type": "invoke",
            "op": op,
            "process": process,
            "f": f,
            "session": session,
            "server": server,
            "turn": turn,
            "attempt": attempt,
            "request_id": request_id,
            "intended": round(now if intended is None else intended, 6),
            "time": round(now, 6),
        }
        ev.update(extra)
        self._open[op] = ev
        self._append(ev)
        return op

    def complete(self, op: int, type: OpType, **fields: Any) -> dict[str, Any]:
        if type not in COMPLETION_TYPES:
            raise HistoryError(f"completion type {type!r}; allowed: {sorted(COMPLETION_TYPES)}")
        inv = self._open.pop(op, None)
        if inv is None:
            raise HistoryError(f"op {op} is not open (never invoked, or already completed)")
        ev: dict[str, Any] = {
            "op": inv["op"],
            "process": inv["process"],
            "f": inv["f"],
            "session": inv["session"],
            "server": inv["server"],
            "turn": inv["turn"],
            "attempt": inv["attempt"],
            "request_id": inv["request_id"],
            "intended": inv["intended"],
            "type": type,
            "time": round(self.now(), 6),
        }
        ev.update(fields)
        self._append(ev)
        return ev

    def ok(self, op: int, **fields: Any) -> dict[str, Any]:
        return self.complete(op, "ok", **fields)

    def fail(self, op: int, **fields: Any) -> dict[str, Any]:
        return self.complete(op, "fail", **fields)

    def info(self, op: int, **fields: Any) -> dict[str, Any]:
        return self.complete(op, "info", **fields)

    def event(self, *, process: str, f: str, value: Any, session: str | None = None, server: str = "") -> int:
        """An instantaneous action (chaos, a fault switched on): invoke + ok at once."""
        op = self.invoke(process=process, f=f, session=session, server=server, value=value)
        self.ok(op, value=value)
        return op

    def close_open(self, reason: str) -> int:
        """Complete every still-open op as ``info`` (unknown): the run ended under it."""
        n = 0
        for op in sorted(self._open):
            self.info(op, error=reason)
            n += 1
        return n

    @property
    def open_ops(self) -> list[int]:
        return sorted(self._open)

    @property
    def count(self) -> int:
        return len(self.events) if self._keep else self._count

    def _append(self, ev: dict[str, Any]) -> None:
        if self._keep:
            ev["index"] = n = len(self.events)
            self.events.append(ev)
        else:
            ev["index"] = n = self._count
        self._count = n + 1
        if self._observe is not None:
            self._observe(ev)
        if self._sink is not None:
            self._sink.write(_encode_line(ev) + "\n")
            if (n + 1) % self.FLUSH_EVERY == 0:
                self._sink.flush()


# -- reading ------------------------------------------------------------------


def write_history(events: Iterable[dict[str, Any]], path: Path) -> None:
    with path.open("w") as fh:
        for ev in events:
            fh.write(json.dumps(ev, sort_keys=True, default=str) + "\n")


def read_history(path: Path) -> list[dict[str, Any]]:
    """Events of a ``history.jsonl``; a torn last line (a crashed run) is skipped."""
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def operations(events: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(invoke, completion or None) per op, in invoke order."""
    invokes: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    for ev in events:
        if ev["type"] == "invoke":
            invokes[ev["op"]] = ev
            order.append(ev["op"])
        else:
            done[ev["op"]] = ev
    for op in order:
        yield invokes[op], done.get(op)


def completions(events: Iterable[dict[str, Any]], f: str | None = None) -> list[dict[str, Any]]:
    """Completion events, optionally of one function (``"chat"``, ``"delete"``...)."""
    return [e for e in events if e["type"] != "invoke" and (f is None or e["f"] == f)]
