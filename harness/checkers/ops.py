"""A read-only view of a run shared by the checkers: operations, snapshots, logs.

The history is a flat list of events (docs/contracts.md): an ``invoke`` and
later exactly one completion (``ok`` / ``fail`` / ``info``) per operation. The
checkers reason about operations, so this module pairs the two halves into an
:class:`Op` and keeps both history indices, which is what a violation points at.

An operation whose completion never arrived is treated as Jepsen treats an
indeterminate one: it may have happened at any time after its invoke, so its
interval extends to infinity. That is what makes overlap tests honest for
client timeouts: the server goes on processing a request whose client gave up.

Session state comes from two places: ``final_states`` (GET by the runner after
the workload) and, for sessions the agents deleted at the end of their episode,
the body of the agents' collect ``GET`` recorded in the completion event's
``body`` field. :func:`snapshots` returns whichever exists, with the time it was
taken, so rules apply only to what happened before it.
"""

from __future__ import annotations

import argparse
import math
import operator
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from harness.rundata import History, RunData, StoredBody, body_of

INF = math.inf
COMPLETION_TYPES = ("ok", "fail", "info")


@dataclass
class Op:
    """One operation: its invoke event and (if any) its completion event."""

    op: Any
    f: str
    invoke_index: int
    invoke: dict[str, Any]
    completion_index: int | None = None
    completion: dict[str, Any] | None = None

    # identity -----------------------------------------------------------
    def _get(self, key: str) -> Any:
        if self.completion is not None and self.completion.get(key) is not None:
            return self.completion[key]
        return self.invoke.get(key)

    @property
    def session(self) -> str | None:
        s = self.invoke.get("session")
        if s is None and self.completion is not None:
            s = self.completion.get("session")
        return None if s is None else str(s)

    @property
    def process(self) -> Any:
        return self.invoke.get("process")

    @property
    def server(self) -> str | None:
        s = self._get("server")
        return None if s is None else str(s)

    @property
    def turn(self) -> int | None:
        t = self._get("turn")
        return None if t is None else int(t)

    @property
    def attempt(self) -> int | None:
        a = self._get("attempt")
        return None if a is None else int(a)

    @property
    def request_id(self) -> str | None:
        r = self._get("request_id")
        return None if r is None else str(r)

    @property
    def value(self) -> Any:
        return self._get("value")

    # time ---------------------------------------------------------------
    @property
    def start(self) -> float:
        return float(self.invoke.get("time", 0.0))

    @property
    def end(self) -> float:
        """Completion time; +inf when the outcome is indeterminate (info or missing)."""
        if self.completion is None or self.type == "info":
            return INF
        return float(self.completion.get("time", self.start))

    @property
    def seen_end(self) -> float | None:
        """When the client stopped waiting (also for info), None if never."""
        if self.completion is None:
            return None
        return float(self.completion.get("time", self.start))

    @property
    def arrived(self) -> float:
        """When the whole request had been sent: the start, or for a body sent slowly (``agent.upload_chunks``)
        the time its last piece went (``upload_done``). Before that no server can have parsed the body."""
        done = None if self.completion is None else self.completion.get("upload_done")
        if isinstance(done, int | float) and not isinstance(done, bool):
            return max(self.start, float(done))
        return self.start

    @property
    def intended(self) -> float:
        return float(self.invoke.get("intended", self.start))

    def overlaps(self, other: Op) -> bool:
        return self.start < other.end and other.start < self.end

    # outcome ------------------------------------------------------------
    @property
    def type(self) -> str | None:
        return None if self.completion is None else str(self.completion.get("type"))

    @property
    def status(self) -> int | None:
        if self.completion is None:
            return None
        s = self.completion.get("status")
        return None if s is None else int(s)

    @property
    def headers(self) -> dict[str, Any]:
        if self.completion is None:
            return {}
        h = self.completion.get("headers") or {}
        return {str(k).lower(): v for k, v in h.items()} if isinstance(h, dict) else {}

    @property
    def req_id(self) -> str | None:
        """The server's own request id (``x-req-id`` response header)."""
        r = self.headers.get("x-req-id")
        return None if r is None else str(r)

    @property
    def aborted(self) -> bool:
        """The server said the backend aborted this generation (or the agent concluded so)."""
        if self.completion is None:
            return False
        if str(self.headers.get("x-sglang-aborted", "")).strip() == "1":
            return True
        return bool(self.completion.get("aborted"))

    @property
    def acknowledged(self) -> bool:
        """200 and not aborted: the server promised this turn is part of the session."""
        return self.type == "ok" and self.status == 200 and not self.aborted

    @property
    def body(self) -> Any:
        """The completion's ``body`` (a :class:`StoredBody` is decoded from the history file)."""
        return body_of(self.completion)

    @property
    def has_dict_body(self) -> bool:
        """``isinstance(self.body, dict)`` without decoding a stored body."""
        b = None if self.completion is None else self.completion.get("body")
        return isinstance(b, dict | StoredBody)

    @property
    def indices(self) -> list[int]:
        return [self.invoke_index] + ([self.completion_index] if self.completion_index is not None else [])

    def __repr__(self) -> str:  # short, for messages
        return f"Op({self.f} {self.session} t={self.turn} a={self.attempt} rid={self.request_id} -> {self.status})"


def _index(ev: dict[str, Any], pos: int) -> int:
    i = ev.get("index")
    return int(i) if isinstance(i, int) else pos


class _Memo:
    """A loaded history's memo (kept on its :class:`~harness.rundata.History`, so it goes with the run):
    the events as they were paired (a shallow copy, to tell an edited list from the same one), its
    operations, and the :class:`Links` and snapshots built over them. Runs are named by weak reference
    (no cycle through the run, which a large load moves out of the collector's sight)."""

    __slots__ = ("events", "links", "ops", "snaps")

    def __init__(self, events: list[dict[str, Any]], ops: list[Op]) -> None:
        self.events, self.ops = events, ops
        self.links: list[tuple[weakref.ref[RunData], Any, Any, Links]] = []
        self.snaps: list[
            tuple[weakref.ref[RunData], Any, Any, Any, Links, list[Op], dict[str, Snapshot], list[str]]
        ] = []


def _memo(history: list[dict[str, Any]]) -> _Memo | None:
    """The memo of ``history`` if it is a loaded run's :class:`History` still holding the same events."""
    if not isinstance(history, History):
        return None
    m = history.memo
    return m if isinstance(m, _Memo) and history and _same(history, m.events) else None


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def pair_ops(history: list[dict[str, Any]]) -> list[Op]:
    """Pair invokes with completions by ``op`` id (or by process when ``op`` is absent).

    Returns operations in invoke order. A completion without an invoke is kept as
    an operation whose invoke is the completion itself (so it is not lost).

    The checkers of one run all pair the same history: a loaded run's pairing is
    remembered on its :class:`History` (while the list holds the same event objects)
    and each caller gets a new list of the same (read-only) :class:`Op` objects.
    """
    m = _memo(history)
    if m is not None:
        return list(m.ops)
    ops = _pair(history)
    if isinstance(history, History):
        history.memo = _Memo(list(history), ops)
    return list(ops)


SHARE_LINKS_EVENTS = 50_000  # below this a run's Links are cheap; a small run's data may be edited between checks


def shared_links(run: RunData, ops: list[Op]) -> Links:
    """``Links(run, ops)``, built once per large run when ``ops``' chats are those of the remembered pairing."""
    m = _memo(run.history)
    if len(run.history) < SHARE_LINKS_EVENTS or not ops or m is None or not m.ops:
        return Links(run, ops)
    memo = m.ops
    if not _same(ops, memo) and not _same([o for o in ops if o.f == "chat"], [o for o in memo if o.f == "chat"]):
        return Links(run, ops)
    for r, be, sc, links in m.links:
        if r() is run and be is run.backend_executions and sc is run.scenario:
            return links
    links = Links(run, memo)
    m.links.append((weakref.ref(run), run.backend_executions, run.scenario, links))
    return links


def _pair(history: list[dict[str, Any]]) -> list[Op]:
    ops: list[Op] = []
    open_by_op: dict[Any, Op] = {}
    open_by_process: dict[Any, Op] = {}
    for pos, ev in enumerate(history):
        idx = _index(ev, pos)
        typ = ev.get("type")
        if typ == "invoke":
            o = Op(op=ev.get("op"), f=str(ev.get("f")), invoke_index=idx, invoke=ev)
            ops.append(o)
            if ev.get("op") is not None:
                open_by_op[ev["op"]] = o
            else:
                open_by_process[ev.get("process")] = o
        elif typ in COMPLETION_TYPES:
            key = ev.get("op")
            found = open_by_op.pop(key, None) if key is not None else open_by_process.pop(ev.get("process"), None)
            if found is None:
                found = Op(op=key, f=str(ev.get("f")), invoke_index=idx, invoke=ev)
                ops.append(found)
            found.completion_index = idx
            found.completion = ev
    return ops


def is_stats(o: Op) -> bool:
    """A final ``GET /stats`` snapshot of one server: ``f: "stats"`` or ``f: "probe"`` with value "stats"."""
    return (o.f == "stats" or (o.f == "probe" and o.value == "stats")) and o.type == "ok" and isinstance(o.body, dict)


def run_end(ops: Iterable[Op]) -> float:
    """The last time any event of the history carries."""
    t = 0.0
    for o in ops:
        t = max(t, o.start)
        if o.seen_end is not None:
            t = max(t, o.seen_end)
    return t


def by_session(ops: Iterable[Op], f: str | tuple[str, ...] | None = None) -> dict[str, list[Op]]:
    fs = (f,) if isinstance(f, str) else f
    out: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if o.session is None or (fs is not None and o.f not in fs):
            continue
        out[o.session].append(o)
    return out


# --- session state snapshots --------------------------------------------------------------


@dataclass
class Snapshot:
    """A session's ``GET /sessions/{id}`` body and when it was taken.

    ``stored`` is the body itself or, for a large loaded history, where it is in the file
    (:class:`~harness.rundata.StoredBody`): decoded when a checker reads ``body`` or ``records``, and
    only the last ``KEEP_RECORDS`` such snapshots keep their records, so a checker's walk over every
    session holds a few sessions' states at a time, not the run's.
    """

    session: str
    stored: dict[str, Any] | StoredBody
    time: float  # +inf for the final state (taken after every operation)
    source: str  # "final" or "collect"
    op: Op | None = None

    @property
    def indices(self) -> list[int]:
        return self.op.indices if self.op is not None else []

    links: Links | None = None
    token_key: str | None = None  # the metadata key holding the token ids (None: not found, see token_reason)
    token_reason: str = ""
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)

    KEEP_RECORDS: ClassVar[int] = 32  # stored snapshots holding their records, per history file

    @property
    def body(self) -> dict[str, Any]:
        b = self.stored
        return b.load() if isinstance(b, StoredBody) else b

    @property
    def records(self) -> list[dict[str, Any]]:
        """The records in the canonical shape the checkers read (see :func:`normalize_record`)."""
        b = self.stored
        if self._records is None:
            r = self.body.get("records")
            raw = [x for x in r if isinstance(x, dict)] if isinstance(r, list) else []
            records = [normalize_record(x, self.links) for x in raw]
            self._records = records
            if isinstance(b, StoredBody):  # held by weak reference on the file's source: gone with the run
                held = b.source.holding
                held[id(self)] = weakref.ref(self)
                while len(held) > self.KEEP_RECORDS:
                    _, ref = held.popitem(last=False)
                    old = ref()
                    if old is not None:
                        old._records = None
            return records
        if isinstance(b, StoredBody) and id(self) in b.source.holding:
            b.source.holding.move_to_end(id(self))
        return self._records

    @property
    def metadata(self) -> dict[str, Any]:
        m = self.body.get("metadata")
        return m if isinstance(m, dict) else {}

    @property
    def token_ids(self) -> Any:
        """The stored token ids under the detected key (None if absent or no key was found)."""
        return self.metadata.get(self.token_key) if self.token_key is not None else None


def deletes_204(ops: Iterable[Op]) -> dict[str, Op]:
    """The first DELETE per session that the server acknowledged with 204."""
    out: dict[str, Op] = {}
    for o in ops:
        if o.f == "delete" and o.status == 204 and o.session is not None:
            prev = out.get(o.session)
            if prev is None or (o.seen_end or INF) < (prev.seen_end or INF):
                out[o.session] = o
    return out


def snapshots(
    run: RunData, ops: list[Op], token_key: tuple[str | None, str] | None = None
) -> tuple[dict[str, Snapshot], list[str]]:
    """Best state per session: the final state if the session was never deleted,
    else the last collect ``GET`` body recorded before its (first 204) DELETE. A
    body in the final state of a deleted session is a resurrection
    (no_resurrection's business), not the episode.

    Returns (snapshots, sessions_without_state) where the second list names
    sessions that have chat operations but neither source of state. Each
    snapshot's records are linked to the requests that produced them
    (:class:`Links`) and its token ids are found under the run's token key
    (:func:`find_token_key`, or ``token_key`` when the caller decided it over the whole run: a part of a
    per-session pass, harness/checkers/stream.py).
    """
    links = shared_links(run, ops)
    m = _memo(run.history)
    shared = m is not None and any(links is entry[3] for entry in m.links)
    if shared:  # a large run: every checker asks for the same snapshots; the token key is found once
        assert m is not None
        for r, be, sc, fs, lk, of, got, miss in m.snaps:
            if (
                r() is run
                and be is run.backend_executions
                and sc is run.scenario
                and fs is run.final_states
                and lk is links
                and _same(of, ops)  # the same operations (a checker may pass a selection)
            ):
                if token_key is not None:
                    for snap in got.values():
                        snap.token_key, snap.token_reason = token_key
                return dict(got), list(miss)
    out: dict[str, Snapshot] = {}
    deleted = deletes_204(ops)
    for sid, body in run.final_states.items():
        if isinstance(body, dict) and sid not in deleted:
            out[sid] = Snapshot(sid, body, INF, "final")
    gets = by_session(ops, "get")
    for sid, glist in gets.items():
        if sid in out:
            continue
        d = deleted.get(sid)
        best: Op | None = None
        for g in glist:
            if (
                g.type == "ok"
                and g.status == 200
                and g.has_dict_body
                and (d is None or g.start < d.start)
                and (best is None or g.start > best.start)
            ):
                best = g
        if best is not None:
            assert best.completion is not None
            body = best.completion["body"]
            assert isinstance(body, dict | StoredBody)
            out[sid] = Snapshot(sid, body, best.start, "collect", best)
    missing = sorted(sid for sid in by_session(ops, "chat") if sid not in out)
    for snap in out.values():
        snap.links = links
    key, reason = find_token_key(run, list(out.values())) if token_key is None else token_key
    for snap in out.values():
        snap.token_key, snap.token_reason = key, reason
    if shared:
        assert m is not None
        m.snaps.append(
            (weakref.ref(run), run.backend_executions, run.scenario, run.final_states, links, list(ops), out, missing)
        )
    return dict(out) if shared else out, missing


# --- records --------------------------------------------------------------------------------


def record_kind(rec: dict[str, Any]) -> str:
    """``committed`` or ``provisional``: the record's own ``kind`` field, else inferred (an aborted
    backend answer can only be a provisional record: the protocol never commits one)."""
    k = rec.get("kind")
    if k is not None:
        return str(k)
    return "provisional" if record_finish_reason(rec) == "abort" else "committed"


def record_rid(rec: dict[str, Any]) -> str | None:
    """The caller's ``x-request-id`` of the request that produced this record.

    A normalized record (:func:`normalize_record`) carries the request id its
    :class:`Links` found (through the backend's execution log first); a raw
    record falls back to the ids the server may echo.
    """
    if "_request_id" in rec:
        linked = rec["_request_id"]
        return None if linked is None else str(linked)
    return echoed_rid(rec)


def echoed_rid(rec: dict[str, Any], key: str | None = None) -> str | None:
    """The caller's request id as the server echoed it into a record (not promised by the protocol)."""
    r = rec.get(key) if key else None
    if r is None:
        r = rec.get("caller_request_id")
    if r is None:
        hdrs = (rec.get("request") or {}).get("headers") if isinstance(rec.get("request"), dict) else None
        if isinstance(hdrs, dict):
            r = {str(k).lower(): v for k, v in hdrs.items()}.get("x-request-id")
    return None if r is None else str(r)


def record_input_ids(rec: dict[str, Any]) -> list[int] | None:
    req = rec.get("request")
    if isinstance(req, dict) and isinstance(req.get("input_ids"), list):
        return [int(x) for x in req["input_ids"]]
    return None


def _choice0(rec: dict[str, Any]) -> dict[str, Any]:
    resp = rec.get("response")
    if not isinstance(resp, dict):
        return {}
    ch = resp.get("choices")
    if isinstance(ch, list) and ch and isinstance(ch[0], dict):
        return ch[0]
    return {}


def record_output_ids(rec: dict[str, Any]) -> list[int] | None:
    """Completion token ids from ``meta_info.output_token_logprobs`` ([logprob, id] pairs)."""
    c0 = _choice0(rec)
    mi = c0.get("meta_info")
    if not isinstance(mi, dict):
        resp = rec.get("response")
        mi = resp.get("meta_info") if isinstance(resp, dict) else None
    if not isinstance(mi, dict) or not isinstance(mi.get("output_token_logprobs"), list):
        return None
    out: list[int] = []
    for pair in mi["output_token_logprobs"]:
        if isinstance(pair, (list, tuple)) and len(pair) >= 2:
            out.append(int(pair[1]))
        else:
            return None
    return out


def record_reported_prompt(rec: dict[str, Any]) -> list[int] | None:
    """The prompt ids the backend reported it saw (``meta_info.prompt_token_ids``), when it reported them."""
    mi = _choice0(rec).get("meta_info")
    if not isinstance(mi, dict):
        resp = rec.get("response")
        mi = resp.get("meta_info") if isinstance(resp, dict) else None
    ids = mi.get("prompt_token_ids") if isinstance(mi, dict) else None
    if not isinstance(ids, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
        return None
    return [int(x) for x in ids]


def record_finish_reason(rec: dict[str, Any]) -> str | None:
    fr = _choice0(rec).get("finish_reason")
    if isinstance(fr, dict):
        fr = fr.get("type")
    return None if fr is None else str(fr)


def record_checkpoint(rec: dict[str, Any]) -> list[int] | None:
    i, o = record_input_ids(rec), record_output_ids(rec)
    return None if i is None or o is None else i + o


# --- what the protocol promises, what the scenario says about the rest ----------------------

# Common spellings of the metadata key that holds a session's accumulated token ids.
TOKEN_KEYS = (
    "token_ids",
    "accumulated_token_ids",
    "all_token_ids",
    "input_ids",
    "tokens",
    "token_ids_accumulated",
    "session_token_ids",
    "prompt_token_ids",
)
PROTOCOL_KEYS = ("token_ids_key", "input_ids_key", "request_id_key", "kind_key")


def protocol(run: RunData) -> dict[str, str]:
    """``target.protocol``: the names a server uses where the protocol fixes none (docs/checkers.md)."""
    t = run.scenario.get("target")
    p = t.get("protocol") if isinstance(t, dict) else None
    return {str(k): str(v) for k, v in p.items() if isinstance(v, str) and v} if isinstance(p, dict) else {}


def faults_applied(run: RunData) -> bool:
    """False when the run says the scenario's fault plan never reached the backend (``target.faults_applied``)."""
    t = run.scenario.get("target")
    return not (isinstance(t, dict) and t.get("faults_applied") is False)


def _int_list(x: Any) -> list[int] | None:
    if isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in x):
        return list(x)
    return None


def normalize_record(rec: dict[str, Any], links: Links | None, names: dict[str, str] | None = None) -> dict[str, Any]:
    """A record in the shape the checkers read, whatever the server named its fields.

    ``kind`` (``target.protocol.kind_key``, else ``kind``, else inferred from the
    backend answer's finish reason), ``request.input_ids``
    (``target.protocol.input_ids_key`` inside ``request``), and ``_request_id`` /
    ``_turn`` / ``_link``: the request that produced it, found by :class:`Links`.
    """
    out = dict(rec)
    if names is None:
        names = links.names if links is not None else {}
    kind_key = names.get("kind_key")
    if kind_key and kind_key in rec:
        out["kind"] = str(rec[kind_key])
    if "kind" not in out:
        out["kind"] = record_kind(rec)
        out["_kind_inferred"] = True
    ids_key = names.get("input_ids_key")
    req = rec.get("request")
    if ids_key and isinstance(req, dict) and ids_key in req:
        out["request"] = {**req, "input_ids": req[ids_key]}
    if links is not None:
        op, via = links.record_op(rec)
        out["_link"] = via
        out["_request_id"] = op.request_id if op is not None else (echoed_rid(rec, names.get("request_id_key")))
        out["_turn"] = op.turn if op is not None else rec.get("turn")
    return out


def record_turn(rec: dict[str, Any]) -> int | None:
    """The turn of the request behind a record (from its linked request, else the record's own ``turn``)."""
    t = rec.get("_turn", rec.get("turn"))
    return int(t) if isinstance(t, int) and not isinstance(t, bool) else None


def response_rids(rec: dict[str, Any]) -> list[str]:
    """The backend's request ids a record's stored answer carries (``meta_info.id``, the answer's ``id``)."""
    out: list[str] = []
    c0 = _choice0(rec)
    resp = rec.get("response")
    for holder in (c0.get("meta_info"), resp.get("meta_info") if isinstance(resp, dict) else None):
        if isinstance(holder, dict) and isinstance(holder.get("id"), str):
            out.append(holder["id"])
    if isinstance(resp, dict) and isinstance(resp.get("id"), str):
        out.append(resp["id"])
    return out


class Links:
    """Which request produced which record, and which backend execution served which request.

    The join goes through the backend's own execution log (the fake SGLang's
    ``executions``: per routing key, the ``rid`` it answered with, the caller's
    ``x-request-id`` the server forwarded, ``turn`` and ``attempt``), because
    the protocol promises that a record holds the backend's answer (whose
    ``meta_info.id`` is that rid) and that client headers reach the backend,
    not that the server echoes the caller's request id into its records. An id
    the server does echo (``caller_request_id``, or ``target.protocol.request_id_key``)
    is the fallback when the execution log has nothing.
    """

    def __init__(self, run: RunData, ops: Iterable[Op]) -> None:
        self.names = protocol(run)
        self.by_request_id: dict[str, Op] = {}
        self.by_identity: dict[tuple[str, int, int], list[Op]] = defaultdict(list)
        for o in ops:
            if o.f != "chat":
                continue
            if o.request_id is not None:
                self.by_request_id[o.request_id] = o
            if o.session is not None and o.turn is not None and o.attempt is not None:
                self.by_identity[(o.session, o.turn, o.attempt)].append(o)
        self.exec_by_rid: dict[str, tuple[str, dict[str, Any]]] = {}
        self.exec_by_op: dict[int, list[dict[str, Any]]] = defaultdict(list)
        # a log that lost executions (a backend restart, a reset) cannot say a request never reached the backend
        from harness.checkers.continuity import execution_log_gap

        self.has_executions = bool(run.backend_executions) and execution_log_gap(run) is None
        for key, execs in run.backend_executions.items():
            if not isinstance(execs, list):
                continue
            for ex in execs:
                if not isinstance(ex, dict):
                    continue
                if isinstance(ex.get("rid"), str):
                    self.exec_by_rid[ex["rid"]] = (str(key), ex)
                served = self.op_of_execution(str(key), ex)
                if served is not None:
                    self.exec_by_op[served.invoke_index].append(ex)

    def op_of_execution(self, key: str, ex: dict[str, Any]) -> Op | None:
        """The chat request a backend execution served: by forwarded ``x-request-id``, else by
        (routing key, turn, attempt) when exactly one request has that identity."""
        rid = ex.get("request_id")
        if rid is not None:
            o = self.by_request_id.get(str(rid))
            if o is not None:
                return o
        turn, attempt = ex.get("turn"), ex.get("attempt")
        if isinstance(turn, int) and isinstance(attempt, int):
            cands = self.by_identity.get((key, turn, attempt), [])
            if len(cands) == 1:
                return cands[0]
        return None

    def executions_of(self, o: Op) -> list[dict[str, Any]]:
        """The backend executions that served this chat request (usually one; none if it never reached it)."""
        return self.exec_by_op.get(o.invoke_index, [])

    def record_op(self, rec: dict[str, Any]) -> tuple[Op | None, str]:
        """(the request behind a record, how it was found: ``execution`` / ``echo`` / ``""``)."""
        for rid in response_rids(rec):
            hit = self.exec_by_rid.get(rid)
            if hit is not None:
                o = self.op_of_execution(*hit)
                if o is not None:
                    return o, "execution"
        echo = echoed_rid(rec, self.names.get("request_id_key"))
        if echo is not None and echo in self.by_request_id:
            return self.by_request_id[echo], "echo"
        return None, ""


def _extends(prefix: list[int], ids: list[int], trim: int) -> bool:
    for k in range(0, min(trim, len(prefix)) + 1):
        p = prefix[: len(prefix) - k]
        if ids[: len(p)] == p:
            return True
    return False


class TokenKeyEvidence:
    """What :func:`find_token_key` decides from, per snapshot and combinable: for every metadata key, whether
    some snapshot holds a value that is not an int list there, and whether some snapshot's value there is
    (or is not) consistent with its records (a committed prompt is a prefix of it); and how many snapshots.
    Small (a few flags per metadata key name), so a per-session pass can gather it over the whole run
    (harness/checkers/stream.py) and both paths decide the run's token key the same way."""

    def __init__(self) -> None:
        self.keys: dict[str, list[bool]] = {}  # key -> [not an int list somewhere, consistent somewhere, not somewhere]
        self.snaps = 0

    def add(self, metadata: dict[str, Any], records: list[dict[str, Any]], trim: int) -> None:
        """One snapshot: its ``metadata`` and its normalized records."""
        self.snaps += 1
        prompts = [p for r in records if record_kind(r) == "committed" and (p := record_input_ids(r)) is not None and p]
        for k, v in metadata.items():
            flags = self.keys.setdefault(str(k), [False, False, False])
            ints = _int_list(v)
            if ints is None:
                flags[0] = True
            if prompts:  # _consistent: None (no committed prompt) sets neither flag
                if any(_extends(p, ints or [], trim) for p in prompts):
                    flags[1] = True
                else:
                    flags[2] = True

    def add_body(self, body: dict[str, Any], names: dict[str, str], trim: int) -> None:
        """One snapshot given as its ``GET /sessions/{id}`` body (records normalized with the run's names)."""
        raw = body.get("records")
        recs = [normalize_record(x, None, names) for x in raw if isinstance(x, dict)] if isinstance(raw, list) else []
        meta = body.get("metadata")
        self.add(meta if isinstance(meta, dict) else {}, recs, trim)

    def decide(self, run: RunData) -> tuple[str | None, str]:
        """:func:`find_token_key`'s answer from this evidence."""
        named = protocol(run).get("token_ids_key")
        if named:
            return named, f"target.protocol.token_ids_key = {named!r}"
        present = self.keys

        def looks_right(k: str) -> bool | None:
            not_int, true, false = present[k]
            if not_int:
                return False
            if false and not true:
                return False
            return True if true else None

        known = [k for k in TOKEN_KEYS if k in present]
        if len(known) == 1 and looks_right(known[0]) is not False:
            return known[0], f"metadata key {known[0]!r}"
        if len(known) == 1:
            return known[0], f"metadata key {known[0]!r} (its values do not look like the records' tokens)"
        if len(known) > 1:
            good = [k for k in known if looks_right(k) is True]
            if len(good) == 1:
                return good[0], f"metadata key {good[0]!r} (the one of {known} consistent with the records)"
            return None, (
                f"metadata keys {known} could each hold the token ids; name one with [target.protocol] token_ids_key"
            )
        other = [k for k in sorted(present) if looks_right(k) is True]
        if len(other) == 1:
            return other[0], f"metadata key {other[0]!r} (the only int list consistent with the records)"
        if not self.snaps:
            return None, "no session state"
        why = f"candidates {other}" if other else f"tried {list(TOKEN_KEYS)}"
        return None, (
            f"no metadata key is recognizably the token ids ({why}); name it with [target.protocol] token_ids_key"
        )


def find_token_key(run: RunData, snaps: list[Snapshot]) -> tuple[str | None, str]:
    """The metadata key that holds the sessions' accumulated token ids, for the whole run.

    ``target.protocol.token_ids_key`` when the scenario names it. Otherwise one
    of :data:`TOKEN_KEYS` if it is the only one present; among several, the one
    whose lists are consistent with the records (a committed prompt is a prefix
    of them); with none of them, any other metadata key holding int lists that
    are consistent with the records, if exactly one does. Else None and the
    reason, which checkers turn into ``unknown``. Decided from
    :class:`TokenKeyEvidence` (one snapshot at a time: a run's every token list held at once is what a
    large run cannot afford).
    """
    ev = TokenKeyEvidence()
    if not protocol(run).get("token_ids_key"):
        trim = max_trim_tokens(run)
        for snap in snaps:
            ev.add(snap.metadata, snap.records, trim)
    return ev.decide(run)


# --- server logs --------------------------------------------------------------------------


def log_events(run: RunData, event: str | tuple[str, ...]) -> list[dict[str, Any]]:
    names = (event,) if isinstance(event, str) else event
    return [ln for ln in run.server_logs if ln.get("event") in names]


def chat_done_by_req(run: RunData) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in log_events(run, "chat_done"):
        if ln.get("req_id") is not None:
            out[str(ln["req_id"])].append(ln)
    return out


def sessions_named(lines: Iterable[dict[str, Any]]) -> set[str]:
    """The ``session_id`` values some of these log lines name."""
    return {str(ln["session_id"]) for ln in lines if ln.get("session_id") is not None}


def of_session(lines: list[dict[str, Any]], session: Any) -> list[dict[str, Any]]:
    """The log lines of one server request id that are ``session``'s.

    CONTEXT.md's request id is 8 hex characters: in a run of 10^5 sessions (4x10^5 chats) about 18 pairs of
    chats share one, so a join by request id alone gives one chat the other's lines. Every ``chat_start`` and
    ``chat_done`` names its ``session_id``: when the lines of one id name two or more sessions, only the
    operation's own session's are its (maybe none). Lines that name one session, or none, are all the
    id's, as before: a server whose logged session id is spelled unlike the client's still joins."""
    if len(sessions_named(lines)) < 2:
        return lines
    return [ln for ln in lines if ln.get("session_id") is not None and str(ln["session_id"]) == str(session)]


def _caller_of(starts: list[dict[str, Any]], session: Any, *, first: bool = False) -> str | None:
    """The caller's ``x-request-id`` that the ``chat_start`` lines of one request id (of ``session``) logged:
    the last that logged one, or (``first``) what the first logged."""
    mine = of_session(starts, session)
    if first:
        caller = mine[0].get("caller_request_id") if mine else None
        return None if caller is None else str(caller)
    logged = [ln for ln in mine if ln.get("caller_request_id") is not None]
    return None if not logged else str(logged[-1]["caller_request_id"])


def chat_done_by_caller(run: RunData) -> dict[str, list[dict[str, Any]]]:
    """``chat_done`` lines by the caller's ``x-request-id``: their own ``caller_request_id``, else the one
    their ``chat_start`` (same ``req_id``, same session: :func:`of_session`) logged; the protocol's log lines
    promise it only on ``chat_start``."""
    starts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in log_events(run, "chat_start"):
        if ln.get("req_id") is not None:
            starts[str(ln["req_id"])].append(ln)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in log_events(run, "chat_done"):
        caller = ln.get("caller_request_id")
        if caller is None and ln.get("req_id") is not None and str(ln["req_id"]) in starts:
            caller = _caller_of(starts[str(ln["req_id"])], ln.get("session_id"))
        if caller is not None:
            out[str(caller)].append(ln)
    return out


def done_for(
    op: Op, by_req: dict[str, list[dict[str, Any]]], by_caller: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The ``chat_done`` lines of one chat operation (by x-req-id within its session, else by x-request-id)."""
    if op.req_id is not None and op.req_id in by_req:
        mine = of_session(by_req[op.req_id], op.session)
        if mine:
            return mine
    if op.request_id is not None:
        return by_caller.get(op.request_id, [])
    return []


def is_passthrough(o: Op) -> bool:
    """A request through a session's plain pass-through (``/sessions/{id}/{path}``, not the chat): it
    reaches the backend, so the backend's fault on it explains its gateway error like a chat's."""
    path = o.invoke.get("path")
    if not isinstance(path, str) or not isinstance(o.invoke.get("method"), str):
        return False
    parts = path.split("?", 1)[0].split("/")
    return len(parts) > 3 and parts[1] == "sessions" and "/".join(parts[3:]) != "v1/chat/completions"


def process_key(line: dict[str, Any]) -> str:
    """Which server process wrote a log line: pid (a restarted process gets a new one)."""
    return f"{line.get('worker_port', '?')}/{line.get('pid', '?')}"


def port_of(url: str | None) -> int | None:
    if not url:
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


# --- scenario plain data --------------------------------------------------------------------


def variants(run: RunData) -> set[str]:
    t = run.scenario.get("target")
    v = t.get("variants") if isinstance(t, dict) else None
    if isinstance(v, str):
        return {v}
    return {str(x) for x in v} if isinstance(v, list) else set()


def checks_cfg(run: RunData) -> dict[str, Any]:
    c = run.scenario.get("checks")
    return c if isinstance(c, dict) else {}


def option(run: RunData, name: str, default: Any = None) -> Any:
    """A checker option: ``checks.options.<name>``, else ``checks.<name>``, else ``default``."""
    cfg = checks_cfg(run)
    opts = cfg.get("options")
    if isinstance(opts, dict) and name in opts:
        return opts[name]
    return cfg.get(name, default)


def max_trim_tokens(run: RunData, default: int = 2) -> int:
    """The server's prefix tolerance: ``checks.options.max_trim_tokens``, ``target.max_trim_tokens``,
    ``--max-trim-tokens N`` in ``target.server_args`` (as the reference launcher reads them,
    :func:`server_options`), else the reference default (2)."""
    opts = checks_cfg(run).get("options")
    target = run.scenario.get("target")
    for src in (opts, target, checks_cfg(run)):
        if isinstance(src, dict) and isinstance(src.get("max_trim_tokens"), int):
            return int(src["max_trim_tokens"])
    given, _why = server_options(run, strict=False)
    n = given.get("max_trim_tokens") if given else None
    return n if isinstance(n, int) and n >= 0 else default


class _Refused(Exception):
    """The reference launcher's parser would exit with this message."""


def parse_server_args(args: Iterable[object], *, strict: bool = True) -> tuple[dict[str, Any] | None, str]:
    """``args`` as our reference server's launcher reads them (reference_impl/launcher.py ``build_parser``):
    ``{dest: value}`` of the options given, by argparse's own rules (the last occurrence wins, an unambiguous
    abbreviation such as ``--backend-time`` counts, ``--opt=value`` works, repeatable options collect), the
    defaults left out; ``(None, why)`` when the launcher would refuse them (a bad value, a missing one, an
    ambiguous abbreviation, or, with ``strict``, an option it does not know: the server would not start).
    """
    from reference_impl.launcher import build_parser  # lazily: most checkers never need it

    argv = [str(a) for a in args]
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS  # only what the arguments give
        action.required = False  # --backend-url is the harness's to add

    def refuse(message: str) -> Any:
        raise _Refused(message)

    p.error = refuse  # type: ignore[method-assign]
    try:
        ns, rest = p.parse_known_args(argv)
    except _Refused as exc:
        return None, f"the reference launcher refuses target.server_args {argv!r}: {exc}"
    except SystemExit:  # --help / -h
        return None, f"target.server_args {argv!r} ask the reference launcher for its help, not a server"
    if strict and rest:
        return None, f"the reference launcher refuses target.server_args {argv!r}: unrecognized {rest!r}"
    return vars(ns), "target.server_args"


def server_options(run: RunData, *, strict: bool = True) -> tuple[dict[str, Any] | None, str]:
    """:func:`parse_server_args` of the run's ``target.server_args`` (none: ``{}``); one reading for every
    rule that needs a reference option (``--backend-timeout``, ``--passthrough-path``, ``--max-trim-tokens``,
    ``--max-body-bytes``)."""
    target = run.scenario.get("target")
    args = target.get("server_args") if isinstance(target, dict) else None
    if args is None:
        return {}, "no target.server_args"
    if not isinstance(args, (list, tuple)):
        return None, f"target.server_args is not a list ({type(args).__name__})"
    return parse_server_args(args, strict=strict)


def fault_status(name: object) -> int | None:
    """The HTTP status a fault name stands for: ``http_503`` / ``status_503`` -> 503; else None.

    One parser for the shape the fault plan uses (``http_<code>``) and the one
    ``fault_kinds`` derives from a rule's ``status`` key (``status_<code>``).
    """
    if not isinstance(name, str):
        return None
    for prefix in ("http_", "status_"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return int(name[len(prefix) :])
    return None


REFERENCE_MAX_TRIM = 2  # the reference server's default (``--max-trim-tokens``, docs/reference_server.md)


def server_max_trim(run: RunData) -> tuple[int | None, str]:
    """The server's ``max_trim_tokens`` as far as the run knows it, and where from; (None, why) when not.

    Configured (``checks.options.max_trim_tokens``, ``target.max_trim_tokens``, ``--max-trim-tokens`` in
    ``target.server_args``); else, for the reference server the harness starts itself (``target.kind``
    ``"reference"``, not a sim ``--target`` other than a coverage bug wrapper of it), its default. Unlike
    :func:`max_trim_tokens` (a tolerance the checkers may assume), a rule that needs the exact value gets None
    for any other server.
    """
    configured = max_trim_tokens(run, default=-1)
    if configured >= 0:
        return configured, "configured"
    if reference_target(run, kind_default="reference"):
        return REFERENCE_MAX_TRIM, "the reference server's default"
    return None, "not configured for this server"


BUG_TARGETS = "asgi:harness.coverage._bugs:"  # the coverage proofs' known-bad servers: the reference app, one bug


def reference_target(run: RunData, *, kind_default: str | None = None, bug_wrappers: bool = True) -> bool:
    """The run's server is our reference server: ``target.kind = "reference"`` and not a sim ``--target`` of
    another server. A sim ``--target`` of harness/coverage/_bugs.py counts (unless ``bug_wrappers`` is False):
    each is the reference app with one behaviour broken, standing for a reference server that breaks its
    documented extras (the coverage proofs). ``kind_default``: the kind of a target that names none (an old
    run folder); None = not ours."""
    target = run.scenario.get("target")
    target = target if isinstance(target, dict) else {}
    if target.get("kind", kind_default) != "reference":
        return False
    sim = run.scenario.get("sim")
    other = sim.get("target") if isinstance(sim, dict) else None
    return not other or (bug_wrappers and str(other).startswith(BUG_TARGETS))


REFERENCE_MAX_BODY = 4 * 1024 * 1024  # the reference server's default (``--max-body-bytes``, docs/reference_server.md)


def server_max_body(run: RunData) -> int | None:
    """The request body limit of the reference server the harness starts itself (``target.kind``
    ``"reference"``, not a sim ``--target``): ``--max-body-bytes N`` in ``target.server_args``, else its
    default; None for any other server (CONTEXT.md fixes no limit: not every server has our extras)."""
    if not reference_target(run, kind_default="reference", bug_wrappers=False):
        return None
    given, _why = server_options(run)
    if given is None:
        return None
    n = given.get("max_body_bytes", REFERENCE_MAX_BODY)
    return n if isinstance(n, int) and n >= 1 else None


def fault_kinds(run: RunData) -> set[str]:
    """Names of the backend fault classes the scenario injects (lower case).

    Accepts a list of names, a list of rule tables (``kind`` / ``type`` /
    ``fault`` / ``name`` keys, plus ``status`` giving ``status_<n>``) or a table
    of name -> settings. Unknown shapes yield ``{"unparsed"}`` so that callers
    can be lenient and say why.
    """
    b = run.scenario.get("backend")
    faults = b.get("faults") if isinstance(b, dict) else None
    if faults is None and isinstance(b, dict) and isinstance(b.get("plan"), dict):
        faults = b["plan"].get("rules") or b["plan"].get("faults")
    kinds: set[str] = set()

    def one(x: Any) -> None:
        if isinstance(x, str):
            kinds.add(x.lower())
        elif isinstance(x, dict):
            for k in ("kind", "type", "fault", "name", "action"):
                if isinstance(x.get(k), str):
                    kinds.add(str(x[k]).lower())
            if isinstance(x.get("status"), int):
                kinds.add(f"status_{x['status']}")
        elif x is not None:
            kinds.add("unparsed")

    if isinstance(faults, list):
        for x in faults:
            one(x)
    elif isinstance(faults, dict):
        for k, v in faults.items():
            if v in (None, False, 0, 0.0):
                continue
            kinds.add(str(k).lower())
            if isinstance(v, dict):
                one(v)
    elif faults:
        kinds.add("unparsed")
    return kinds


@dataclass
class Chaos:
    kind: str
    start: float
    end: float
    server: str | None
    session: str | None
    indices: list[int] = field(default_factory=list)

    def covers(self, t0: float, t1: float, margin: float = 0.0) -> bool:
        return t0 <= self.end + margin and self.start - margin <= t1


def chaos_events(ops: Iterable[Op]) -> list[Chaos]:
    """Client chaos and backend-fault events (``f: chaos`` / ``fault``) as windows.

    ``value`` is a string naming the action or a table with ``action`` (or
    ``kind``), optionally ``duration_s`` (an outage window) and ``server``. A
    ``kill`` lasts until the next ``restart`` of the same server (or forever).
    """
    out: list[Chaos] = []
    for o in ops:
        if o.f not in ("chaos", "fault"):
            continue
        v = o.value
        kind = ""
        server = o.server
        dur = 0.0
        if isinstance(v, str):
            kind = v
        elif isinstance(v, dict):
            for k in ("action", "kind", "type", "name", "fault"):
                if isinstance(v.get(k), str):
                    kind = str(v[k])
                    break
            if isinstance(v.get("server"), str):
                server = v["server"]
            for k in ("duration_s", "duration", "window_s"):
                if isinstance(v.get(k), (int, float)):
                    dur = float(v[k])
        end = o.seen_end if o.seen_end is not None else INF
        end = max(end, o.start + dur)
        out.append(Chaos(kind.lower(), o.start, end, server, o.session, o.indices))
    for i, c in enumerate(out):
        if "kill" in c.kind or "crash" in c.kind:
            restart = next(
                (r for r in out[i + 1 :] if "restart" in r.kind and r.server == c.server and r.start >= c.start), None
            )
            c.end = restart.end if restart is not None else INF
    return out


KILL_WORDS = ("kill", "restart", "sigkill", "crash")
OUTAGE_WORDS = ("outage", "backend_down", "backend-down", "stop_backend", "blackhole")


def is_kill(c: Chaos) -> bool:
    return any(w in c.kind for w in KILL_WORDS)


def is_outage(c: Chaos) -> bool:
    return any(w in c.kind for w in OUTAGE_WORDS)


# --- the order the server saw ---------------------------------------------------------------


class ServerOrder:
    """What the server's own evidence says about the order it handled two chats of one session.

    Client invoke/complete times bound when a request *may* have been handled;
    on a starved client box a request reaches the server long after its invoke,
    after a twin that the client saw overlap it. So where a verdict depends on
    the server's order it is taken from the server: per process, the position
    of a request's ``chat_start`` (logged on arrival, before it read any state)
    and its ``chat_done`` (after its state update) in that process's log, and
    the fake backend's execution log (per routing key, in arrival order: a
    request reaches the backend only after it built its prompt from the state).
    Where that evidence is missing, every order consistent with the client's
    view is allowed and the answer is None (undecided).
    """

    def __init__(self, run: RunData, ops: Iterable[Op]) -> None:
        self._pos: dict[int, tuple[str, int | None, int | None, str | None]] = {}
        starts: dict[str, tuple[str, int]] = {}  # caller request id -> (process, position)
        dones: dict[str, tuple[str, int, str | None]] = {}  # caller request id -> (process, position, outcome)
        # server request id -> its lines with their positions: 8 hex characters may name chats of several
        # sessions (of_session picks an operation's own)
        starts_by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
        dones_by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
        at: dict[int, int] = {}  # id(line) -> its position in the log
        for i, ln in enumerate(run.server_logs):
            ev = ln.get("event")
            if ev not in ("chat_start", "chat_done"):
                continue
            at[id(ln)] = i
            proc = process_key(ln)
            caller = ln.get("caller_request_id")
            req = ln.get("req_id")
            outcome = None if ln.get("outcome") is None else str(ln.get("outcome"))
            if ev == "chat_start":
                if caller is not None:
                    starts.setdefault(str(caller), (proc, i))
                if req is not None:
                    starts_by_req[str(req)].append(ln)
            else:
                if caller is None and req is not None and str(req) in starts_by_req:
                    caller = _caller_of(starts_by_req[str(req)], ln.get("session_id"), first=True)
                if caller is not None:
                    dones.setdefault(str(caller), (proc, i, outcome))
                if req is not None:
                    dones_by_req[str(req)].append(ln)
        self.exec_pos: dict[int, tuple[str, int]] = {}
        chats = [o for o in ops if o.f == "chat"]
        links = shared_links(run, chats)
        for key, execs in run.backend_executions.items():
            if not isinstance(execs, list):
                continue
            for j, ex in enumerate(execs):
                if isinstance(ex, dict):
                    o = links.op_of_execution(str(key), ex)
                    if o is not None:
                        self.exec_pos.setdefault(o.invoke_index, (str(key), j))
        for o in chats:
            s = starts.get(o.request_id or "")
            d = dones.get(o.request_id or "")
            if o.req_id is not None:
                if s is None and o.req_id in starts_by_req:
                    sr = of_session(starts_by_req[o.req_id], o.session)
                    if sr:
                        s = (process_key(sr[0]), at[id(sr[0])])
                dr = of_session(dones_by_req[o.req_id], o.session) if o.req_id in dones_by_req else []
                if dr:
                    outcome = None if dr[0].get("outcome") is None else str(dr[0].get("outcome"))
                    d = (process_key(dr[0]), at[id(dr[0])], outcome)
            where = s[0] if s is not None else d[0] if d is not None else None
            if where is None:
                continue
            self._pos[o.invoke_index] = (
                where,
                s[1] if s is not None and s[0] == where else None,
                d[1] if d is not None and d[0] == where else None,
                d[2] if d is not None else None,
            )

    @property
    def has_logs(self) -> bool:
        return bool(self._pos)

    def outcome(self, o: Op) -> str | None:
        """The request's ``chat_done`` outcome (None without the line)."""
        p = self._pos.get(o.invoke_index)
        return p[3] if p is not None else None

    def logged(self, o: Op) -> bool:
        p = self._pos.get(o.invoke_index)
        return p is not None and p[1] is not None and p[2] is not None

    def skipped_for(self, o: Op, chats: Iterable[Op]) -> Op | None:
        """The chat whose commit made the server skip ``o``'s update (CONTEXT.md Phase 3: another request
        committed meanwhile, skip the update, return the answer): ``o``'s chat_done says
        ``state_changed...`` and another chat of ``chats`` committed, on the same process, between ``o``'s
        chat_start and its chat_done in that process's log. None: no such evidence."""
        p = self._pos.get(o.invoke_index)
        if p is None or p[1] is None or p[2] is None or not str(p[3] or "").startswith("state_changed"):
            return None
        for c in chats:
            q = self._pos.get(c.invoke_index)
            if c is o or q is None or q[0] != p[0] or q[2] is None or q[3] != "committed":
                continue
            if p[1] < q[2] < p[2]:
                return c
        return None

    def read_after(self, b: Op, a: Op) -> bool | None:
        """Did ``b`` read the session state after ``a`` finished its state update? None: cannot tell."""
        if b.start >= a.end:
            return True  # the client had a's answer before it sent b
        pa, pb = self._pos.get(a.invoke_index), self._pos.get(b.invoke_index)
        same = pa is not None and pb is not None and pa[0] == pb[0]
        if same and pa is not None and pb is not None:
            if pb[1] is not None and pa[2] is not None and pb[1] > pa[2]:
                return True  # b arrived after a's chat_done
            if pb[2] is not None and pa[1] is not None and pb[2] < pa[1]:
                return False  # b was done before a arrived
        if b.end <= a.start:
            return False
        ea, eb = self.exec_pos.get(a.invoke_index), self.exec_pos.get(b.invoke_index)
        if ea is not None and eb is not None and ea[0] == eb[0] and eb[1] < ea[1]:
            return False  # b reached the backend (its prompt built) before a did
        if (
            same
            and pa is not None
            and pb is not None
            and pa[3] == "committed"
            and pb[3] in ("committed", "aborted")
            and pa[2] is not None
            and pb[2] is not None
            and pb[2] > pa[2]
        ):
            return True  # both updated the state, b after a: b read a's state (else it is a stale writer's bug)
        return None
