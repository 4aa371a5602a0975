"""Latency series out of a run folder: the server's buckets and the client's view.

Two witnesses, deliberately kept apart:

- the **server** says, in one ``chat_done`` log line per chat request, where
  its time went: ``lock_wait_ms`` (waiting for the session lock),
  ``tokenize_in_ms`` (Phase 1 rendering), ``proxy_elapsed_ms`` (the backend
  call), ``tokenize_out_ms`` (Phase 3 state update) and ``total_ms``;
- the **client** (the history) says what an agent lived through. A request's
  latency is measured from its *intended* start (open loop), not from when
  the agent finally managed to send it: if the server, the event loop or the
  agent stalled, that stall is latency, and measuring from the actual send
  would hide it (coordinated omission). A *turn* runs from the intended start
  of its first attempt to the end of its last, so abort retries and timeout
  retries count against it.

Every sample keeps its outcome, variant and process so the report can split
by each. Timeouts (``info`` completions) stay in, as the time the agent waited
before it gave up: a lower bound, but dropping them would flatter the tail.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from harness.rundata import RunData

__all__ = [
    "CLIENT_SERIES",
    "SERIES",
    "SERVER_BUCKETS",
    "ClientRequest",
    "ClientTurn",
    "LatencyData",
    "MarkedEvent",
    "ServerRequest",
    "extract",
    "run_variant",
]

SERVER_BUCKETS: tuple[str, ...] = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
# The parts that make up total_ms, in the order the request lives through them.
SERVER_PARTS: tuple[str, ...] = SERVER_BUCKETS[:-1]
CLIENT_SERIES: tuple[str, ...] = ("client_request_ms", "client_turn_ms")
SERIES: tuple[str, ...] = SERVER_BUCKETS + CLIENT_SERIES


def run_variant(scenario: dict[str, Any]) -> str:
    """The run's variant label: the target's variants joined, or ``default``."""
    target = scenario.get("target") or {}
    variants = target.get("variants") if isinstance(target, dict) else None
    if isinstance(variants, str):
        variants = [variants]
    if not variants:
        return "default"
    return "+".join(str(v) for v in variants)


@dataclass(slots=True)  # one per request: a slot each instead of a dict each
class ServerRequest:
    """One ``chat_done`` line."""

    req_id: str
    session: str | None
    outcome: str
    status: int | None
    process: str
    variant: str
    ts: float
    buckets: dict[str, float | None]
    inflight_now: int | None


@dataclass(slots=True)  # one per request: a slot each instead of a dict each
class ClientRequest:
    """One chat HTTP attempt from the history (invoke + completion)."""

    op: Any
    agent: str
    session: str | None
    server: str
    turn: int | None
    attempt: int | None
    intended: float
    sent: float
    end: float
    outcome: str
    status: int | None
    variant: str
    req_id: str | None
    request_id: str | None = None

    @property
    def latency_ms(self) -> float:
        """From the intended start: stalls before sending count."""
        return (self.end - self.intended) * 1000.0

    @property
    def service_ms(self) -> float:
        """From the actual send: what a closed-loop tool would have reported."""
        return (self.end - self.sent) * 1000.0


@dataclass(slots=True)  # one per request: a slot each instead of a dict each
class ClientTurn:
    agent: str
    session: str
    turn: int
    attempts: int
    start: float
    end: float
    outcome: str
    server: str
    variant: str

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000.0


@dataclass(slots=True)  # one per request: a slot each instead of a dict each
class MarkedEvent:
    """A chaos or backend-fault event, to mark on timelines."""

    time: float
    kind: str  # "chaos" | "fault"
    label: str


_HEX = frozenset("0123456789abcdef")


class Column(Sequence[Any]):
    """One field of many rows, compact: floats in an ``array('d')``, ints in an ``array('q')``, strings as
    codes into a table of the distinct ones (kind ``s``) or, for ids (kind ``x``), a string of 1-16
    lowercase hex digits as its 64-bit value and its length (no object, no table entry), any other string
    in the table; ``None`` as a mask byte. A value of any other type (or an int past 64 bits) turns the
    column into a plain list from there on. Reads give back the very values put in (same type, a float bit
    for bit, a hex id with its leading zeros), so a reader cannot tell it from a list."""

    __slots__ = ("_index", "_kind", "_mask", "_objs", "_table", "_vals")

    _TABLE = 17  # kind x: the mask byte of a string kept in the table (1-16: a hex id of that many digits)

    def __init__(self, kind: str) -> None:
        assert kind in ("f", "i", "s", "x")
        self._kind = kind
        self._vals: array[Any] | None = array({"f": "d", "i": "q", "s": "i", "x": "Q"}[kind])
        self._mask = bytearray()  # 0: None; else 1 (kinds f, i, s) or the hex length / _TABLE (kind x)
        self._objs: list[Any] | None = None
        self._table: list[str] = []
        self._index: dict[str, int] | None = {}

    @property
    def typed(self) -> bool:
        """Every value is of the column's type or None (the arrays hold them)."""
        return self._objs is None

    def _code(self, v: str) -> int:
        if self._index is None:  # sealed: the lookup table is made again
            self._index = {t: k for k, t in enumerate(self._table)}
        code = self._index.get(v)
        if code is None:
            code = self._index[v] = len(self._table)
            self._table.append(v)
        return code

    def seal(self) -> None:
        """Drop the strings' lookup table (the strings stay): no more appends expected."""
        self._index = None

    def append(self, v: Any) -> None:
        vals = self._vals
        if vals is None:
            assert self._objs is not None
            self._objs.append(v)
            return
        if v is None:
            vals.append(0)
            self._mask.append(0)
            return
        t, kind = type(v), self._kind
        if (kind == "f" and t is float) or (kind == "i" and t is int and -(2**63) <= v < 2**63):
            vals.append(v)
            self._mask.append(1)
        elif kind == "x" and t is str:
            if 0 < len(v) <= 16 and _HEX.issuperset(v):
                vals.append(int(v, 16))
                self._mask.append(len(v))
            else:
                vals.append(self._code(v))
                self._mask.append(self._TABLE)
        elif kind == "s" and t is str:
            vals.append(self._code(v))
            self._mask.append(1)
        else:
            self._objs = list(self)
            self._vals = None
            self._mask = bytearray()
            self._objs.append(v)

    def __len__(self) -> int:
        return len(self._objs) if self._objs is not None else len(self._mask)

    def _read(self, v: Any, m: int) -> Any:
        if not m:
            return None
        kind = self._kind
        if kind == "s" or (kind == "x" and m == self._TABLE):
            return self._table[v]
        if kind == "x":
            return format(v, f"0{m}x")
        return v

    def __getitem__(self, k: Any) -> Any:
        if self._objs is not None:
            return self._objs[k]
        assert self._vals is not None
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        return self._read(self._vals[k], self._mask[k])

    def __iter__(self) -> Iterator[Any]:
        if self._objs is not None:
            return iter(self._objs)
        assert self._vals is not None
        if self._kind in ("f", "i"):
            return (v if m else None for v, m in zip(self._vals, self._mask, strict=True))
        if self._kind == "s":
            table = self._table
            return (table[c] if m else None for c, m in zip(self._vals, self._mask, strict=True))
        read = self._read
        return (read(v, m) for v, m in zip(self._vals, self._mask, strict=True))

    def floats(self) -> np.ndarray:
        """The values as a float array, NaN where None (a column of floats: no Python object made)."""
        if self._kind == "f" and self._vals is not None:
            out = np.frombuffer(self._vals, dtype=float).copy() if len(self._vals) else np.zeros(0)
            if 0 in self._mask:
                out[np.frombuffer(bytes(self._mask), dtype=np.uint8) == 0] = np.nan
            return out
        return np.array([math.nan if v is None else v for v in self], dtype=float)

    def nbytes(self) -> int:
        """Memory of the arrays (not the strings' table, not a fallen-back list's objects)."""
        if self._vals is None:
            return 8 * len(self)
        return self._vals.itemsize * len(self._vals) + len(self._mask)


R = TypeVar("R")


class Rows(Generic[R]):
    """Rows of one record type kept column by column (:class:`Column`): a list's reads (``len``, iteration,
    ``[k]``, ``==``) with a fresh record built for each row read, and ``append`` of a record. What a row
    needs beyond its columns' types (a ``buckets`` table that is not the five buckets) keeps every row as
    the record itself."""

    fields: tuple[tuple[str, str], ...] = ()

    def __init__(self, rows: Iterable[R] = ()) -> None:
        self.cols: dict[str, Column] = {name: Column(kind) for name, kind in self.fields}
        self._objs: list[R] | None = None
        self._n = 0
        for r in rows:
            self.append(r)

    def _split(self, row: R) -> tuple[Any, ...] | None:
        return tuple(getattr(row, name) for name, _ in self.fields)

    def _make(self, values: tuple[Any, ...]) -> R:
        raise NotImplementedError

    def append(self, row: R) -> None:
        if self._objs is None:
            values = self._split(row)
            if values is None:
                self._objs = list(self)
                self.cols = {name: Column(kind) for name, kind in self.fields}
            else:
                for col, v in zip(self.cols.values(), values, strict=True):
                    col.append(v)
                self._n += 1
                return
        self._objs.append(row)

    def seal(self) -> None:
        for c in self.cols.values():
            c.seal()

    def clear(self) -> None:
        self.cols = {name: Column(kind) for name, kind in self.fields}
        self._objs = None
        self._n = 0

    def col(self, name: str) -> Sequence[Any]:
        """One field of every row, in order."""
        if self._objs is not None:
            return [getattr(r, name) for r in self._objs]
        return self.cols[name]

    def __len__(self) -> int:
        return len(self._objs) if self._objs is not None else self._n

    def __iter__(self) -> Iterator[R]:
        if self._objs is not None:
            return iter(self._objs)
        return (self._make(values) for values in zip(*self.cols.values(), strict=True))

    def __getitem__(self, k: int) -> R:
        if self._objs is not None:
            return self._objs[k]
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError("row index out of range")
        return self._make(tuple(c[k] for c in self.cols.values()))

    def __bool__(self) -> bool:
        return len(self) > 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rows | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.cols.values())


class ServerRows(Rows[ServerRequest]):
    fields = (
        ("req_id", "x"),
        ("session", "s"),
        ("outcome", "s"),
        ("status", "i"),
        ("process", "s"),
        ("variant", "s"),
        ("ts", "f"),
        *((b, "f") for b in SERVER_BUCKETS),
        ("inflight_now", "i"),
    )

    def _split(self, row: ServerRequest) -> tuple[Any, ...] | None:
        if tuple(row.buckets) != SERVER_BUCKETS:
            return None
        return (
            row.req_id,
            row.session,
            row.outcome,
            row.status,
            row.process,
            row.variant,
            row.ts,
            *row.buckets.values(),
            row.inflight_now,
        )

    def _make(self, v: tuple[Any, ...]) -> ServerRequest:
        k = len(SERVER_BUCKETS)
        return ServerRequest(
            req_id=v[0],
            session=v[1],
            outcome=v[2],
            status=v[3],
            process=v[4],
            variant=v[5],
            ts=v[6],
            buckets=dict(zip(SERVER_BUCKETS, v[7 : 7 + k], strict=True)),
            inflight_now=v[7 + k],
        )

    def col(self, name: str) -> Sequence[Any]:
        if self._objs is not None and name in SERVER_BUCKETS:
            return [r.buckets.get(name) for r in self._objs]
        return super().col(name)


class RequestRows(Rows[ClientRequest]):
    fields = (
        ("op", "i"),
        ("agent", "s"),
        ("session", "s"),
        ("server", "s"),
        ("turn", "i"),
        ("attempt", "i"),
        ("intended", "f"),
        ("sent", "f"),
        ("end", "f"),
        ("outcome", "s"),
        ("status", "i"),
        ("variant", "s"),
        ("req_id", "x"),
        ("request_id", "x"),
    )

    def _make(self, v: tuple[Any, ...]) -> ClientRequest:
        return ClientRequest(*v)


class TurnRows(Rows[ClientTurn]):
    fields = (
        ("agent", "s"),
        ("session", "s"),
        ("turn", "i"),
        ("attempts", "i"),
        ("start", "f"),
        ("end", "f"),
        ("outcome", "s"),
        ("server", "s"),
        ("variant", "s"),
    )

    def _make(self, v: tuple[Any, ...]) -> ClientTurn:
        return ClientTurn(*v)


class Inflight:
    """The client's in-flight step curve, ``(time, chats in flight after it)`` per request start and end, as
    two arrays; reads as the list of pairs it stands for."""

    def __init__(self, times: Sequence[float] | np.ndarray = (), levels: Sequence[int] | np.ndarray = ()) -> None:
        self.times = np.asarray(times, dtype=float)
        self.levels = np.asarray(levels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.times.size)

    def __bool__(self) -> bool:
        return self.times.size > 0

    def __iter__(self) -> Iterator[tuple[float, int]]:
        return zip(self.times.tolist(), self.levels.tolist(), strict=True)

    def __getitem__(self, k: int) -> tuple[float, int]:
        return float(self.times[k]), int(self.levels[k])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Inflight | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Inflight({len(self)} steps)"


@dataclass
class LatencyData:
    """The run's series. Per-request data is held in columns (:class:`Rows`: a few bytes a field a request,
    no object per request), so a 10^5-session run's ~4 x 10^5 requests cost tens of MB, not a GB; the
    figures come from every request (percentiles, histograms), the plots draw a bounded sample of them."""

    variant: str
    server: ServerRows = field(default_factory=ServerRows)
    requests: RequestRows = field(default_factory=RequestRows)
    turns: TurnRows = field(default_factory=TurnRows)
    events: list[MarkedEvent] = field(default_factory=list)
    inflight: Inflight = field(default_factory=Inflight)  # (time, in-flight chats after it)
    unmatched_invokes: int = 0

    def series(self, name: str) -> list[Sample]:
        """Samples of one named series (a server bucket or a client series)."""
        if name in SERVER_BUCKETS:
            s = self.server
            return [
                Sample(v, o, var, p)
                for v, o, var, p in zip(s.col(name), s.col("outcome"), s.col("variant"), s.col("process"), strict=True)
            ]
        if name == "client_request_ms":
            r = self.requests
            return [
                Sample((e - i) * 1000.0, o, var, srv)
                for e, i, o, var, srv in zip(
                    r.col("end"), r.col("intended"), r.col("outcome"), r.col("variant"), r.col("server"), strict=True
                )
            ]
        if name == "client_turn_ms":
            t = self.turns
            return [
                Sample((e - st) * 1000.0, o, var, srv)
                for e, st, o, var, srv in zip(
                    t.col("end"), t.col("start"), t.col("outcome"), t.col("variant"), t.col("server"), strict=True
                )
            ]
        raise KeyError(f"unknown series {name!r}; known: {', '.join(SERIES)}")

    def array(self, name: str) -> np.ndarray:
        """:meth:`values` of every request as a float array, NaN where a value is missing."""

        def col(rows: Rows[Any], field: str) -> np.ndarray:
            c = rows.col(field)
            return c.floats() if isinstance(c, Column) else np.array([math.nan if v is None else v for v in c], float)

        if name in SERVER_BUCKETS:
            return col(self.server, name)
        out: np.ndarray
        if name == "client_request_ms":
            out = (col(self.requests, "end") - col(self.requests, "intended")) * 1000.0
            return out
        if name == "client_turn_ms":
            out = (col(self.turns, "end") - col(self.turns, "start")) * 1000.0
            return out
        raise KeyError(f"unknown series {name!r}; known: {', '.join(SERIES)}")

    def values(self, name: str, *, outcome: str | None = None) -> list[float | None]:
        if outcome in (None, "all"):
            if name in SERVER_BUCKETS:
                return list(self.server.col(name))
            if name == "client_request_ms":
                r = self.requests
                return [(e - i) * 1000.0 for e, i in zip(r.col("end"), r.col("intended"), strict=True)]
            if name == "client_turn_ms":
                t = self.turns
                return [(e - st) * 1000.0 for e, st in zip(t.col("end"), t.col("start"), strict=True)]
        return [s.value for s in self.series(name) if outcome in (None, "all", s.outcome)]


@dataclass(frozen=True, slots=True)
class Sample:
    value: float | None
    outcome: str
    variant: str
    process: str


def _float(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _int(x: Any) -> int | None:
    f = _float(x)
    return None if f is None else int(f)


def server_process(line: dict[str, Any]) -> str:
    """``pid@port``: the port names the slot, the pid tells a restarted process apart."""
    pid = line.get("pid")
    port = line.get("worker_port")
    if port is None:
        return f"pid {pid}"
    return f"{pid}@{port}"


def client_outcome(completion: Mapping[str, Any]) -> str:
    kind = completion.get("type")
    if kind == "info":
        return "unknown"
    if kind == "fail":
        return "fail"
    if completion.get("aborted"):
        return "aborted"
    status = _int(completion.get("status"))
    if status is None or status < 400:
        return "ok"
    return f"http_{status // 100}xx"


def _pairs(
    history: Iterable[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool], open_: dict[Any, Any]
) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Match invoke and completion events by ``op``, a pair at a time in completion order (never all at once);
    the invokes left in ``open_`` after it are the unmatched ones."""
    for ev in history:
        if not keep(ev):
            continue
        if ev.get("type") == "invoke":
            open_[ev.get("op")] = ev
        else:
            inv = open_.pop(ev.get("op"), None)
            if inv is not None:
                yield inv, ev


def extract(run: RunData) -> LatencyData:
    variant = run_variant(run.scenario)
    data = LatencyData(variant=variant)

    for line in run.server_logs:
        if line.get("event") != "chat_done":
            continue
        data.server.append(
            ServerRequest(
                req_id=str(line.get("req_id", "")),
                session=line.get("session_id"),
                outcome=str(line.get("outcome", "unknown")),
                status=_int(line.get("status")),
                process=server_process(line),
                variant=str(line.get("variant") or variant),
                ts=_float(line.get("ts")) or 0.0,
                buckets={b: _float(line.get(b)) for b in SERVER_BUCKETS},
                inflight_now=_int(line.get("inflight_now")),
            )
        )

    open_: dict[Any, Any] = {}
    for inv, done in _pairs(run.history, lambda ev: ev.get("f") == "chat", open_):
        # a history merged from Ray agent actors widens each op by its clock uncertainty (docs/distributed.md):
        # a latency is measured on one clock, so the widening comes off again
        # (``clock_shift``: how far each event moved; older merged histories moved every event by ``u``)
        u = _float(inv.get("clock_uncertainty")) or 0.0
        u_inv = -(_float(inv.get("clock_shift")) or 0.0) if "clock_shift" in inv else u
        u_done = (_float(done.get("clock_shift")) or 0.0) if "clock_shift" in done else u
        sent = (_float(inv.get("time")) or 0.0) + u_inv
        intended = _float(inv.get("intended"))
        intended = None if intended is None else intended + u_inv
        headers = done.get("headers") or {}
        data.requests.append(
            ClientRequest(
                op=inv.get("op"),
                agent=str(inv.get("process")),
                session=inv.get("session"),
                server=str(inv.get("server") or "?"),
                turn=_int(inv.get("turn")),
                attempt=_int(inv.get("attempt")),
                intended=sent if intended is None else min(intended, sent),
                sent=sent,
                end=(_float(done.get("time")) or sent) - u_done,
                outcome=client_outcome(done),
                status=_int(done.get("status")),
                variant=str(inv.get("variant") or variant),
                req_id=headers.get("x-req-id") if isinstance(headers, dict) else None,
                request_id=inv.get("request_id"),
            )
        )

    data.unmatched_invokes = len(open_)
    del open_
    _turns(data)
    _inflight(data)
    for rows in (data.server, data.requests, data.turns):
        rows.seal()
    _mark_events(run, data)
    data.events.sort(key=lambda e: e.time)
    return data


def _turns(data: LatencyData) -> None:
    """A turn per (agent, session, turn) of the requests: from the intended start of its first attempt to the
    end of its last (the latest end, then the highest attempt; the first such on a tie), by end."""
    r = data.requests
    slot: dict[tuple[Any, Any, Any], int] = {}
    first: list[int] = []  # per turn: its first request (agent, session, turn, and where it was first seen)
    last: list[int] = []  # per turn: its last attempt so far
    count: list[int] = []
    start: list[float] = []
    end_at, att_at = r.col("end").__getitem__, r.col("attempt").__getitem__
    for k, (agent, session, turn, t_int) in enumerate(
        zip(r.col("agent"), r.col("session"), r.col("turn"), r.col("intended"), strict=True)
    ):
        if session is None or turn is None:
            continue
        key = (agent, session, turn)
        j = slot.get(key)
        if j is None:
            slot[key] = len(first)
            first.append(k)
            last.append(k)
            count.append(1)
            start.append(t_int)
            continue
        count[j] += 1
        if t_int < start[j]:  # min(): the first of equal minima
            start[j] = t_int
        cur = last[j]
        if (end_at(k), att_at(k) or 0) > (end_at(cur), att_at(cur) or 0):  # max(): the first of equal maxima
            last[j] = k
    del slot
    order = sorted(range(len(first)), key=lambda j: end_at(last[j]))  # stable: ties keep first-seen order
    for j in order:
        f, lr = r[first[j]], r[last[j]]
        assert f.session is not None and f.turn is not None
        data.turns.append(
            ClientTurn(
                agent=f.agent,
                session=f.session,
                turn=f.turn,
                attempts=count[j],
                start=start[j],
                end=lr.end,
                outcome=lr.outcome,
                server=lr.server,
                variant=lr.variant,
            )
        )


def _inflight(data: LatencyData) -> None:
    """Every request's send (+1) and end (-1) in time order (at one instant, ends first), and the count after."""
    r = data.requests
    sent = np.fromiter(r.col("sent"), dtype=float, count=len(r))
    end = np.fromiter(r.col("end"), dtype=float, count=len(r))
    times = np.concatenate([sent, end])
    deltas = np.concatenate([np.ones(sent.size, dtype=np.int64), -np.ones(end.size, dtype=np.int64)])
    if np.isnan(times).any():  # NaN does not sort as tuples of it do: the pairs' own sort
        steps = sorted(zip(times.tolist(), deltas.tolist(), strict=True))
        times = np.array([t for t, _ in steps], dtype=float)
        deltas = np.array([d for _, d in steps], dtype=np.int64)
    else:
        order = np.lexsort((deltas, times))  # as sorting (time, delta) pairs: by time, then -1 before +1
        times, deltas = times[order], deltas[order]
    data.inflight = Inflight(times, np.cumsum(deltas))


def _mark_events(run: RunData, data: LatencyData) -> None:
    """Chaos and fault events from the history, plus backend faults from the fake's execution log.

    The backend's log has no run-clock times, but each execution carries the
    client's ``x-request-id``: the fault is marked when that request completed.
    """
    seen: set[Any] = set()
    for ev in run.history:
        kind = ev.get("f")
        op = ev.get("op")
        if kind not in ("chaos", "fault") or (op is not None and op in seen):
            continue
        seen.add(op)
        value = ev.get("value")
        if isinstance(value, dict):
            label = next(
                (value[k] for k in ("action", "kind", "fault", "name", "type") if value.get(k)),
                json.dumps(value, sort_keys=True),
            )
        else:
            label = value
        data.events.append(MarkedEvent(time=_float(ev.get("time")) or 0.0, kind=str(kind), label=str(label)[:40]))
    wanted = {
        ex.get("request_id")
        for executions in run.backend_executions.values()
        for ex in (executions if isinstance(executions, list) else [])
        if isinstance(ex, dict) and ex.get("fault")
    }
    ends: dict[Any, float] = {}  # the faulted requests' ends (the last request of an id, as a dict of all)
    for rid, end in zip(data.requests.col("request_id"), data.requests.col("end"), strict=True):
        if rid and rid in wanted:
            ends[rid] = end
    for executions in run.backend_executions.values():
        for ex in executions if isinstance(executions, list) else []:
            fault = ex.get("fault") if isinstance(ex, dict) else None
            if fault and ex.get("request_id") in ends:
                data.events.append(MarkedEvent(time=ends[ex["request_id"]], kind="fault", label=str(fault)[:40]))
