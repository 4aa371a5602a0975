"""From log events to an incident: sessions, their requests, timing, overlap, backend outcomes, deletes.

What the log lines tell, and how each becomes part of a replayable script:

- a chat is ``chat_start`` + ``chat_done`` joined by (process, ``req_id``):
  its start offset, ``proxy_elapsed_ms`` (the backend's latency as the
  server saw it), ``total_ms`` and its ``outcome``. A ``chat_done`` without
  its start (the start fell before the log excerpt) is dated back by
  ``total_ms``; a start without a done is a request still in flight when the
  log ends (``unfinished``: replayed, never compared);
- the backend outcome follows from the server outcome: ``committed`` and the
  two skips got a good answer after ``proxy_elapsed_ms`` (replayed as a
  ``spike`` of that many ms); ``aborted`` an abort with ``completion_tokens``
  partial tokens; ``upstream_error`` an HTTP status; ``transport_error`` a
  reset (or a hang that ends in one after ``elapsed_ms``); ``bad_gateway`` a
  malformed body;
- the turn of a request is not logged. It is the number of checkpoints the
  session had committed when the request started (``expected_num_assistant``
  of a ``state_changed_during_proxy`` line says so exactly); requests with
  the same ``prompt_tokens`` in one session carry the same prompt, so they
  are copies of one turn (retries, duplicates). The attempt is the order
  among the copies;
- deletes are ``session_deleted`` lines (a DELETE answered 404 logs
  nothing, so it cannot be replayed); creations are ``session_created``; a
  session seen without its creation is created just before its first
  request, unless every request of it was ``not_found`` (then it never
  existed, and the replay sends to an id no server knows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.incident._parse import LogEvent

__all__ = ["Incident", "IncidentRequest", "IncidentSession", "abort_after_ms", "backend_fault", "reconstruct"]

_GOOD_ANSWER = frozenset({"committed", "state_changed_skip", "closing_skip", "conflict", "tokenization_error"})
_NO_BACKEND = frozenset({"not_found", "bad_request", "internal_error", "unfinished"})
TIMED_ABORT_MIN_MS = 5.0  # shorter aborts are answered at once (an abort_request could beat the request)
CREATE_LEAD_S = 0.001  # a session seen without its creation is created this long before its first request


@dataclass
class IncidentRequest:
    session: str
    process: str
    req_id: str
    caller_request_id: str | None
    start_ts: float
    done_ts: float | None
    outcome: str  # chat_done outcome, or "unfinished"
    status: int | None
    proxy_ms: float
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    state_changed: dict[str, object] | None = None
    transport_error: dict[str, object] | None = None
    turn: int = 0
    attempt: int = 0
    overlaps: list[str] = field(default_factory=list)  # req_ids of the same session in flight at once


@dataclass
class IncidentSession:
    session: str
    process: str
    created_ts: float | None = None
    deleted_ts: list[float] = field(default_factory=list)
    requests: list[IncidentRequest] = field(default_factory=list)

    @property
    def needs_create(self) -> bool:
        if self.created_ts is not None:
            return True
        return any(r.outcome != "not_found" for r in self.requests) or bool(self.deleted_ts)


@dataclass
class Incident:
    t0: float  # epoch seconds of the first included event: at_s = ts - t0
    sessions: list[IncidentSession]
    processes: list[str]  # process keys; the index is the replay's server index
    heartbeats: int = 0
    notes: list[str] = field(default_factory=list)
    # process -> {"count", "rss_mb", "inflight", "sessions"} (maxima): memory and load around the incident
    heartbeat_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def process_index(self, key: str) -> int:
        return self.processes.index(key) if key in self.processes else 0

    def requests(self) -> list[IncidentRequest]:
        return sorted((r for s in self.sessions for r in s.requests), key=lambda r: r.start_ts)

    def outcome_sequence(self) -> list[tuple[str, str, str | None]]:
        """(session, outcome, caller_request_id) of every finished chat in ``chat_done`` order, with each
        ``session_deleted`` in its place as (session, "deleted", None): a DELETE landing before a chat's
        ``closing_skip`` is half of that story."""
        items: list[tuple[float, str, str, str | None]] = [
            (r.done_ts, r.session, r.outcome, r.caller_request_id)
            for s in self.sessions
            for r in s.requests
            if r.done_ts is not None
        ]
        items += [(d, s.session, "deleted", None) for s in self.sessions for d in s.deleted_ts]
        items.sort(key=lambda x: x[0])
        return [(sid, outcome, caller) for _, sid, outcome, caller in items]


def backend_fault(r: IncidentRequest) -> str | None:
    """The ``x-fake-fault`` that makes the fake answer this request as the real backend did."""
    if r.outcome in _GOOD_ANSWER or r.outcome == "cancelled":
        return f"spike;ms={r.proxy_ms:g}" if r.proxy_ms > 0 else "none"
    if r.outcome == "aborted":
        if abort_after_ms(r) is not None:
            return f"spike;ms={r.total_ms + 1000.0:g}"  # a long generation, cut by the timed abort
        return f"abort;tokens={max(0, r.completion_tokens)}"
    if r.outcome == "upstream_error" and r.status is not None and 400 <= r.status <= 599:
        return f"http_{r.status}"
    if r.outcome == "transport_error":
        elapsed = r.proxy_ms
        if r.transport_error is not None:
            v = r.transport_error.get("elapsed_ms")
            if isinstance(v, int | float):
                elapsed = float(v)
        return f"hang;seconds={elapsed / 1000.0:g}" if elapsed >= 5.0 else "reset"
    if r.outcome == "bad_gateway":
        return "no_meta_info"
    return None


def abort_after_ms(r: IncidentRequest) -> float | None:
    """When (ms after sending) an aborted request's generation is aborted in the replay, as it ended in production.

    SGLang aborts a generation from outside (a weight update, preemption), at a
    moment that matters for races: the replay sends ``/abort_request`` then,
    rather than answering the abort at once.
    """
    if r.outcome == "aborted" and r.proxy_ms >= TIMED_ABORT_MIN_MS:
        return r.total_ms
    return None


def _num(ev: LogEvent | None, key: str) -> float:
    v = ev.get(key) if ev is not None else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def reconstruct(events: Sequence[LogEvent]) -> Incident:
    """Sessions and requests of ``events`` (already merged, ordered and filtered)."""
    starts: dict[tuple[str, str], LogEvent] = {}
    dones: dict[tuple[str, str], LogEvent] = {}
    changed: dict[tuple[str, str], LogEvent] = {}
    transport: dict[tuple[str, str], LogEvent] = {}
    sessions: dict[str, IncidentSession] = {}
    heartbeats = 0
    hb_stats: dict[str, dict[str, float]] = {}
    notes: list[str] = []

    def session(sid: str, process: str) -> IncidentSession:
        s = sessions.get(sid)
        if s is None:
            s = sessions[sid] = IncidentSession(sid, process)
        return s

    for ev in events:
        sid = ev.session_id
        key = (ev.process, str(ev.get("req_id")))
        if ev.event == "heartbeat":
            heartbeats += 1
            hb = hb_stats.setdefault(ev.process, {"count": 0.0})
            hb["count"] += 1
            for k in ("rss_mb", "inflight", "sessions"):
                v = ev.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    hb[k] = max(hb.get(k, float(v)), float(v))
        elif ev.event == "chat_start":
            starts.setdefault(key, ev)
        elif ev.event == "chat_done":
            dones.setdefault(key, ev)
        elif ev.event == "state_changed_during_proxy":
            changed.setdefault(key, ev)
        elif ev.event == "proxy_transport_error":
            transport.setdefault(key, ev)
        elif ev.event == "session_created" and sid is not None:
            s = session(sid, ev.process)
            if s.created_ts is None:
                s.created_ts = ev.ts
                s.process = ev.process
        elif ev.event == "session_deleted" and sid is not None:
            session(sid, ev.process).deleted_ts.append(ev.ts)

    for key in sorted(set(starts) | set(dones), key=lambda k: (starts.get(k) or dones[k]).ts):
        st, dn = starts.get(key), dones.get(key)
        first = st or dn
        assert first is not None
        sid = first.session_id or ""
        total = _num(dn, "total_ms")
        start_ts = st.ts if st is not None else (dn.ts - total / 1000.0 if dn is not None else first.ts)
        if st is None:
            notes.append(f"req {key[1]}: chat_start missing, start dated back by total_ms")
        status = dn.get("status") if dn is not None else None
        caller = first.get("caller_request_id")
        req = IncidentRequest(
            session=sid,
            process=first.process,
            req_id=key[1],
            caller_request_id=caller if isinstance(caller, str) else None,
            start_ts=start_ts,
            done_ts=dn.ts if dn is not None else None,
            outcome=str(dn.get("outcome")) if dn is not None else "unfinished",
            status=status if isinstance(status, int) else None,
            proxy_ms=_num(dn, "proxy_elapsed_ms"),
            total_ms=total,
            prompt_tokens=int(_num(dn, "prompt_tokens")),
            completion_tokens=int(_num(dn, "completion_tokens")),
            state_changed=dict(changed[key].fields) if key in changed else None,
            transport_error=dict(transport[key].fields) if key in transport else None,
        )
        s = session(sid, first.process)
        s.requests.append(req)
    for s in sessions.values():
        _turns_and_overlaps(s)
    # Offsets count from the first line about a session: a heartbeat ahead of it would only add idle time.
    t0 = min((e.ts for e in events if e.event != "heartbeat"), default=min((e.ts for e in events), default=0.0))
    processes = sorted({s.process for s in sessions.values()}, key=_process_order)
    ordered = sorted(sessions.values(), key=lambda s: _first_ts(s))
    return Incident(
        t0=t0,
        sessions=ordered,
        processes=processes or ["?"],
        heartbeats=heartbeats,
        notes=notes,
        heartbeat_stats=hb_stats,
    )


def _process_order(key: str) -> tuple[int, int]:
    kind, _, num = key.partition(":")
    return (0 if kind == "port" else 1, int(num) if num.isdigit() else 0)


def _first_ts(s: IncidentSession) -> float:
    ts = [r.start_ts for r in s.requests] + s.deleted_ts
    if s.created_ts is not None:
        ts.append(s.created_ts)
    return min(ts) if ts else 0.0


def _turns_and_overlaps(s: IncidentSession) -> None:
    s.requests.sort(key=lambda r: r.start_ts)
    commits: list[float] = []  # done ts of committed requests
    by_prompt: dict[int, int] = {}
    copies: dict[int, int] = {}
    for r in s.requests:
        expected = r.state_changed.get("expected_num_assistant") if r.state_changed else None
        if isinstance(expected, int) and s.created_ts is not None:
            turn = expected
        elif r.prompt_tokens > 0 and r.prompt_tokens in by_prompt:
            turn = by_prompt[r.prompt_tokens]
        else:
            turn = sum(1 for c in commits if c <= r.start_ts)
        r.turn = turn
        r.attempt = copies.get(turn, 0)
        copies[turn] = r.attempt + 1
        if r.prompt_tokens > 0:
            by_prompt.setdefault(r.prompt_tokens, turn)
        if r.outcome == "committed" and r.done_ts is not None:
            commits.append(r.done_ts)
    for r in s.requests:
        end = r.done_ts if r.done_ts is not None else float("inf")
        for o in s.requests:
            o_end = o.done_ts if o.done_ts is not None else float("inf")
            if o is not r and o.start_ts < end and r.start_ts < o_end:
                r.overlaps.append(o.req_id)
