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
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class LatencyData:
    variant: str
    server: list[ServerRequest] = field(default_factory=list)
    requests: list[ClientRequest] = field(default_factory=list)
    turns: list[ClientTurn] = field(default_factory=list)
    events: list[MarkedEvent] = field(default_factory=list)
    inflight: list[tuple[float, int]] = field(default_factory=list)  # (time, in-flight chats after it)
    unmatched_invokes: int = 0

    def series(self, name: str) -> list[Sample]:
        """Samples of one named series (a server bucket or a client series)."""
        if name in SERVER_BUCKETS:
            return [Sample(r.buckets.get(name), r.outcome, r.variant, r.process) for r in self.server]
        if name == "client_request_ms":
            return [Sample(r.latency_ms, r.outcome, r.variant, r.server) for r in self.requests]
        if name == "client_turn_ms":
            return [Sample(t.latency_ms, t.outcome, t.variant, t.server) for t in self.turns]
        raise KeyError(f"unknown series {name!r}; known: {', '.join(SERIES)}")

    def values(self, name: str, *, outcome: str | None = None) -> list[float | None]:
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


def client_outcome(completion: dict[str, Any]) -> str:
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
    history: Iterable[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], int]:
    """Match invoke and completion events by ``op``; -> (pairs in completion order, unmatched invokes)."""
    open_: dict[Any, dict[str, Any]] = {}
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for ev in history:
        if not keep(ev):
            continue
        if ev.get("type") == "invoke":
            open_[ev.get("op")] = ev
        else:
            inv = open_.pop(ev.get("op"), None)
            if inv is not None:
                pairs.append((inv, ev))
    return pairs, len(open_)


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

    pairs, data.unmatched_invokes = _pairs(run.history, lambda ev: ev.get("f") == "chat")
    for inv, done in pairs:
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

    by_turn: dict[tuple[str, str, int], list[ClientRequest]] = defaultdict(list)
    for r in data.requests:
        if r.session is not None and r.turn is not None:
            by_turn[(r.agent, r.session, r.turn)].append(r)
    for (agent, session, turn), attempts in by_turn.items():
        last = max(attempts, key=lambda a: (a.end, a.attempt or 0))
        data.turns.append(
            ClientTurn(
                agent=agent,
                session=session,
                turn=turn,
                attempts=len(attempts),
                start=min(a.intended for a in attempts),
                end=last.end,
                outcome=last.outcome,
                server=last.server,
                variant=last.variant,
            )
        )
    data.turns.sort(key=lambda t: t.end)

    steps: list[tuple[float, int]] = []
    for r in data.requests:
        steps.append((r.sent, +1))
        steps.append((r.end, -1))
    steps.sort()
    level = 0
    for t, d in steps:
        level += d
        data.inflight.append((t, level))

    _mark_events(run, data)
    data.events.sort(key=lambda e: e.time)
    return data


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
    ends = {r.request_id: r.end for r in data.requests if r.request_id}
    for executions in run.backend_executions.values():
        for ex in executions if isinstance(executions, list) else []:
            fault = ex.get("fault") if isinstance(ex, dict) else None
            if fault and ex.get("request_id") in ends:
                data.events.append(MarkedEvent(time=ends[ex["request_id"]], kind="fault", label=str(fault)[:40]))
