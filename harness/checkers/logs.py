"""log_consistency and leaks: the server's own account of itself adds up.

Production incidents arrive as log lines, and latency reports are built from the
``chat_done`` timing buckets, so the lines must be trustworthy:

log_consistency

- one ``chat_start`` and one ``chat_done`` per server request id (``req_id``),
  whatever the outcome (errors and short-circuits included);
- one ``chat_done`` per chat the history saw answered (joined by the
  ``x-req-id`` response header, else by ``caller_request_id`` = ``x-request-id``),
  with the same status;
- every bucket (and ``total_ms``, ``read_body_ms``) is a duration, never below 0
  (a sign error in one bucket makes the sum *smaller*, so the sum rule alone misses it);
- no single bucket is longer than ``total_ms`` (+ 0.5 ms, half the coarsest
  resolution a server logs at, + 1 %) [bucket_exceeds_total; not said again
  when the sum below is already too long];
- the buckets add up: ``lock_wait + tokenize_in + proxy_elapsed + tokenize_out
  (+ read_body) <= total_ms`` (+ 1 ms + 1 %); what they leave unexplained of
  the server's *own* handling above ``checks.options.log_overhead_ms`` (default
  250 ms, or half of it) is reported. A server's ``total_ms`` usually starts when
  its handler starts, before the request body has arrived: a client that is
  slow to send its body (a starved box, a big body on a slow link) makes
  ``total_ms`` long with no bucket to show for it, and that time is the
  client's. So ``read_body_ms`` (the reference server logs it; a field mapping
  names another server's) is taken out first: the rest is the server's
  handling. Time missing from *that* is reported in the notes, never a
  violation: a CPU-starved correct server waits between its phases (#16). A
  ``total_ms`` longer than the client waited for the answer is a violation;
- the proxy bucket holds the backend call: a chat answered 200 from a generation
  the fake held for ``latency_ms`` (its execution log: no fault, ``stop``,
  ``completed``) logs ``proxy_elapsed_ms >= latency_ms`` (- 1 ms - 1 %)
  [proxy_bucket_short];
- in-flight returns to 0: per process, ``inflight_now`` tracks the number of
  chats started and not yet done, with one constant offset (whether a line
  counts itself is the server's convention); a counter that is only decremented
  on the happy path (``inflight_leak``) drifts upward after the first error. The
  last heartbeat and the final ``stats`` snapshot of each process say 0.
- on our reference server (``/stats`` is our extra), the final ``stats``
  snapshot's ``reqs_total`` is at least the chats answered before it whose one
  ``chat_start`` is on that process [reqs_total_short]; not in a run with a kill.

leaks

- a deleted session is gone from memory: each ``heartbeat``'s ``sessions``
  equals ``session_created`` minus ``session_deleted`` so far on that process,
  and the final ``stats`` snapshot per server (history op ``f: "stats"``, or
  ``f: "probe"`` with ``value: "stats"``; completion ``body`` = ``GET /stats``)
  counts exactly the sessions the run left alive there (``leak_deleted`` keeps deleted sessions and fails both).

Processes killed by chaos lose their tail of log lines; requests on them are not
judged. Without server logs (an external target) log_consistency is unknown.

Both are checked a group of sessions at a time (harness/checkers/stream.py), check()
being the one group of them all. log_consistency's cross-session facts come from
the run-wide :class:`~harness.checkers.stream_index.LogIndex`, one pass over the
log: ``inflight_now`` is one process's running count over every session's
``chat_start`` / ``chat_done`` in timestamp order, clamped at 0, so that walk is
the index's; so are the request ids two sessions share and the ``chat_done``
lines a chat joins (a server may log a session id spelled unlike the client's).
leaks: its heartbeats and stats snapshots are in every part, and creates,
deletes and live sessions add.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from collections.abc import Container, Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import (
    INF,
    Op,
    chaos_events,
    is_kill,
    is_stats,
    option,
    pair_ops,
    port_of,
    process_key,
    reference_target,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.checkers.stream_index import LogIndex
from harness.rundata import RunData

BUCKETS = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms")
# a bucket is a duration: below 0 only by a rounding of a 0 (a server that logs -0.0 or -1e-9 is not wrong)
NEGATIVE_TOLERANCE_MS = 0.001
# one bucket against total_ms: a server that logs either at whole milliseconds rounds it by at most 0.5 ms
BUCKET_ROUNDING_MS = 0.5


def acc_over(buckets: Sequence[float | None], body_ms: float | None, total: float) -> bool:
    """The buckets (and the body read) sum to more than ``total_ms`` (+ 1 ms + 1 %)."""
    acc = sum(p for p in buckets if p is not None) + (body_ms or 0.0)
    return acc > total + 1.0 + 0.01 * total


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _by_process(run: RunData) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in run.server_logs:
        out[process_key(ln)].append(ln)
    for lines in out.values():
        lines.sort(key=lambda ln: float(ln.get("ts", 0.0)))  # stable: file order within one timestamp
    return out


def _split_by_session(
    starts: dict[str, list[dict[str, Any]]], dones: dict[str, list[dict[str, Any]]], split: Container[str]
) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[tuple[str, str], list[dict[str, Any]]]]:
    """``chat_start`` and ``chat_done`` lines of each server request id as one request, keyed ``(id, "")``;
    or, when that id's lines name two or more sessions (``split``: the whole log's), one request per
    session, keyed ``(id, session)`` (8 hex characters: two sessions' chats may share one;
    :func:`harness.checkers.ops.of_session`); its lines that name no session are ``(id, "")``."""
    out: list[dict[tuple[str, str], list[dict[str, Any]]]] = []
    for src in (starts, dones):  # each in its own order (the log's), as before: violations keep their order
        dst: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rid, lines in src.items():
            for ln in lines:
                sid = ln.get("session_id")
                dst.setdefault((rid, str(sid) if rid in split and sid is not None else ""), []).append(ln)
        out.append(dst)
    return out[0], out[1]


def _proxy_short(run: RunData, chats: Sequence[Op], dones: dict[tuple[str, str], list[dict[str, Any]]]) -> list[Keyed]:
    """A chat answered 200 from a backend generation that held it ``latency_ms`` logs ``proxy_elapsed_ms``
    of at least that (less 1 ms + 1 % for rounding and clocks): the server's proxy phase is the backend call,
    and the fake answers only after its planned wait (no fault, finish ``stop``, outcome ``completed``)."""
    held: dict[str, float] = {}  # request id -> the shortest planned generation that carried it
    for execs in run.backend_executions.values():
        for ex in execs if isinstance(execs, list) else []:
            lat, rid = _num(ex.get("latency_ms")), ex.get("request_id")
            if lat is None or lat <= 0 or rid is None or ex.get("fault") is not None:
                continue
            if ex.get("outcome") != "completed" or ex.get("finish_reason") != "stop" or ex.get("abort_requested"):
                continue
            held[str(rid)] = min(lat, held.get(str(rid), lat))
    if not held:
        return []
    by_caller: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for lst in dones.values():
        for ln in lst:
            if ln.get("caller_request_id"):
                by_caller[str(ln["caller_request_id"])].append(ln)
    out: list[Keyed] = []
    for o in chats:
        lat = held.get(o.request_id or "")
        if lat is None or o.status != 200:
            continue
        lines = (dones.get((o.req_id, ""), []) or dones.get((o.req_id, str(o.session)), [])) if o.req_id else []
        lines = lines or by_caller.get(o.request_id or "", [])
        proxy = _num(lines[-1].get("proxy_elapsed_ms")) if len(lines) == 1 else None
        if proxy is None or proxy >= lat - 1.0 - 0.01 * lat:
            continue
        v = Violation(
            f"chat_done {lines[-1].get('req_id')}: proxy_elapsed_ms {proxy:g} but the backend took {lat:g} ms to "
            "generate the answer the client got (the proxy bucket must hold the backend call)",
            o.indices,
            o.session,
            "proxy_bucket_short",
        )
        out.append(((4, o.invoke_index, 1), v))
    return out


class _Split:
    """The whole log's split request ids, asked of the index (a ``Container`` for :func:`_split_by_session`)."""

    def __init__(self, index: LogIndex) -> None:
        self.index = index

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and self.index.split(rid)


class LogConsistency:
    name = "log_consistency"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # The rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # A request's lines are its session's (grouped with it; lines naming no session are in every part, judged
    # where their request's other lines are, else in the first part); which request ids two sessions share, and
    # each process's in-flight walk over every session's lines, come from the run-wide LogIndex; the operation
    # a line names is the run's (Part.chat_ops). Violations keep check()'s order by their keys.

    def part(self, part: Part) -> dict[str, Any]:
        run, ctx = part.run, part.context
        if not ctx.has_server_logs:
            return {}
        index = part.log_index()
        split = _Split(index)
        ops = pair_ops(run.history)
        killed = any(is_kill(c) for c in chaos_events(ops))
        by_req_session: dict[tuple[str, str], list[int]] = {}  # a server request id shared by sessions' chats
        for o in ops:
            if o.f == "chat" and o.req_id and o.session is not None:
                by_req_session[(o.req_id, str(o.session))] = o.indices
        raw = option(run, "log_overhead_ms", 250.0)
        overhead_ms = float(raw) if isinstance(raw, (int, float)) else 250.0
        out: list[Keyed] = []

        def op_idx(ln: dict[str, Any]) -> list[int]:
            got = (
                by_req_session.get((str(ln.get("req_id")), str(ln.get("session_id"))))
                or part.chat_ops(str(ln.get("req_id")))
                or part.chat_ops(f"caller:{ln.get('caller_request_id')}")
            )
            return got or []

        pos_of = {id(ln): part.log_pos[i] for i, ln in enumerate(run.server_logs)}
        starts_by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
        dones_by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ln in run.server_logs:
            rid = ln.get("req_id")
            if rid is None:
                continue
            if ln.get("event") == "chat_start":
                starts_by_req[str(rid)].append(ln)
            elif ln.get("event") == "chat_done":
                dones_by_req[str(rid)].append(ln)
        # (request id, session or "") -> lines: one request's lines, even where two sessions share its id
        starts, dones = _split_by_session(starts_by_req, dones_by_req, split)

        def judged(key: tuple[str, str]) -> bool:
            """This part judges the request: its lines name a session of this part; lines that name none are
            in every part, judged with a session's lines of their id, else in the first part."""
            lines = [*starts.get(key, []), *dones.get(key, [])]
            named = [ln for ln in lines if ln.get("session_id") is not None]
            if named:
                return part.mine(named[0]["session_id"])
            return part.first and (key[1] != "" or key[0] in split or not index.mixed(key[0]))

        keys = {k for k in set(starts) | set(dones) if judged(k)}
        for key, lst in dones.items():  # a server may name the caller's x-request-id only at chat_start
            caller = next((x.get("caller_request_id") for x in starts.get(key, []) if x.get("caller_request_id")), None)
            if caller is not None:
                new = [ln if ln.get("caller_request_id") else {**ln, "caller_request_id": caller} for ln in lst]
                for old, ln in zip(lst, new, strict=True):
                    pos_of[id(ln)] = pos_of[id(old)]
                lst[:] = new
        for key in keys:
            rid = key[0]
            s, d = starts.get(key, []), dones.get(key, [])
            sample = (d or s)[0]
            sid = sample.get("session_id")
            head: tuple[Any, ...] = (1, rid, key[1])
            if len(d) > 1:
                v = Violation(f"{len(d)} chat_done lines for req_id {rid}", op_idx(sample), sid, "many_chat_done")
                out.append(((*head, 0), v))
            if len(s) > 1:
                v = Violation(f"{len(s)} chat_start lines for req_id {rid}", op_idx(sample), sid, "many_chat_start")
                out.append(((*head, 1), v))
            if s and not d and not killed:
                v = Violation(f"chat_start without chat_done (req_id {rid})", op_idx(sample), sid, "missing_chat_done")
                out.append(((*head, 2), v))
            if d and not s:
                v = Violation(f"chat_done without chat_start (req_id {rid})", op_idx(sample), sid, "missing_chat_start")
                out.append(((*head, 3), v))
        # history join: a request id two sessions share is the session's own lines (here), any other the log's

        def joined_to(o: Op) -> tuple[float | None, float | None, str] | None:
            """The chat's chat_done lines (None: none): the last's status, total_ms and request id."""
            if o.req_id and o.req_id in split:
                lines = dones.get((o.req_id, ""), []) or dones.get((o.req_id, str(o.session)), [])
                last = lines[-1] if lines else None
                return (
                    None
                    if last is None
                    else (_num(last.get("status")), _num(last.get("total_ms")), str(last.get("req_id")))
                )
            got = index.done_by_req(o.req_id) if o.req_id else index.done_by_caller(o.request_id or "")
            return None if got is None else (got[1], got[2], index.name(got[3]))

        joined = 0
        chats = [o for o in ops if o.f == "chat" and o.session is not None and part.mine(o.session)]
        chats += [o for o in ops if o.f == "chat" and o.session is None and part.first]
        chats.sort(key=lambda o: o.invoke_index)
        for o in chats:
            if o.status is None or o.type not in ("ok", "fail"):
                continue
            found = joined_to(o)
            if found is None and o.req_id is None and o.request_id is None:
                continue
            if found is None:
                if killed:
                    continue
                v = Violation(
                    f"chat answered {o.status} has no chat_done line (req {o.req_id or o.request_id})",
                    o.indices,
                    o.session,
                    "unlogged_request",
                )
                out.append(((2, o.invoke_index), v))
                continue
            joined += 1
            st = found[0]
            if st is not None and int(st) != o.status:
                v = Violation(
                    f"chat_done says status {int(st)} but the client got {o.status}",
                    o.indices,
                    o.session,
                    "status_mismatch",
                )
                out.append(((2, o.invoke_index), v))
        # buckets: only the server's own handling (total_ms less the client-paced body read) is judged
        slow_bodies: list[float] = []
        unattributed: list[float] = []
        unexplained: list[float] = []
        n_done = 0
        for key, lst in dones.items():
            if key not in keys:
                continue
            n_done += len(lst)
            rid = key[0]
            # check()'s order: request ids by their first chat_done, then the id's sessions, then the lines
            first = index.first_done(rid) if rid in split else pos_of[id(lst[0])]
            for ln in lst:
                at = (3, first, pos_of[id(lst[0])], pos_of[id(ln)])
                total = _num(ln.get("total_ms"))
                buckets = [_num(ln.get(b)) for b in BUCKETS]
                if total is None or any(p is None for p in buckets):
                    v = Violation(
                        f"chat_done {ln.get('req_id')} lacks a timing bucket",
                        op_idx(ln),
                        ln.get("session_id"),
                        "missing_bucket",
                    )
                    out.append(((*at, 0), v))
                    continue
                body_ms = _num(ln.get("read_body_ms"))
                negative = [
                    f"{k}={v:g}"
                    for k, v in (*zip(BUCKETS, buckets, strict=True), ("read_body_ms", body_ms), ("total_ms", total))
                    if v is not None and v < -NEGATIVE_TOLERANCE_MS
                ]
                if negative:
                    v = Violation(
                        f"chat_done {ln.get('req_id')}: negative timing bucket(s) {', '.join(negative)} "
                        "(a duration cannot be below 0)",
                        op_idx(ln),
                        ln.get("session_id"),
                        "negative_bucket",
                    )
                    out.append(((*at, 1), v))
                over = [
                    f"{k}={v:g}"
                    for k, v in (*zip(BUCKETS, buckets, strict=True), ("read_body_ms", body_ms))
                    if v is not None and v > total + BUCKET_ROUNDING_MS + 0.01 * total
                ]
                if over and not acc_over(buckets, body_ms, total):  # a sum already too long says it
                    v = Violation(
                        f"chat_done {ln.get('req_id')}: timing bucket(s) {', '.join(over)} longer than "
                        f"total_ms {total:g} (each is a part of the request's time)",
                        op_idx(ln),
                        ln.get("session_id"),
                        "bucket_exceeds_total",
                    )
                    out.append(((*at, 3), v))
                acc = sum(p for p in buckets if p is not None) + (body_ms or 0.0)
                handling = total - (body_ms or 0.0)
                if body_ms is not None and body_ms > overhead_ms:
                    slow_bodies.append(body_ms)
                if acc_over(buckets, body_ms, total):
                    v = Violation(
                        f"chat_done {ln.get('req_id')}: buckets sum to {acc:.1f} ms > total_ms {total:.1f}",
                        op_idx(ln),
                        ln.get("session_id"),
                        "buckets_exceed_total",
                    )
                    out.append(((*at, 2), v))
                elif total - acc > max(overhead_ms, 0.5 * handling):
                    # Time in no bucket is not a protocol violation: a server whose event loop is starved of CPU
                    # (a busy CI runner) takes longer between phases than inside them. Reported, never invalid.
                    (unattributed if body_ms is None else unexplained).append(total - acc)
        # the server cannot have handled a request for longer than its client waited for the answer
        for o in chats:
            if o.completion is None or o.type not in ("ok", "fail"):
                continue
            found = joined_to(o)
            total = found[1] if found is not None else None
            t0, t1 = _num(o.invoke.get("time")), _num(o.completion.get("time"))
            if total is None or t0 is None or t1 is None:
                continue
            client_ms = (t1 - t0) * 1000.0
            if total > client_ms + 5.0 + 0.01 * client_ms:
                v = Violation(
                    f"chat_done {found[2] if found else ''}: total_ms {total:.1f} but the client had its answer "
                    f"after {client_ms:.1f} ms (the server's timing is wrong)",
                    o.indices,
                    o.session,
                    "total_exceeds_client",
                )
                out.append(((4, o.invoke_index), v))
        # the proxy bucket holds the backend's generation: an answer cannot reach the server before it is made
        out.extend(_proxy_short(run, chats, dones))
        # inflight: every process's walk is the index's; its drifting line is judged where the line is
        walks = index.inflight()
        here = {part.log_pos[i]: ln for i, ln in enumerate(run.server_logs)}
        for proc, (beats, drift) in walks.items():
            if part.first and not killed:
                for k, (inflight, open_) in enumerate(beats):
                    message = f"process {proc}: heartbeat inflight={int(inflight)} while {open_} chats were in flight"
                    out.append(((5, proc, 0, k), Violation(message, [], None, "inflight_heartbeat")))
            if drift is not None and drift[0] in here:
                ln = here[drift[0]]
                sid = ln.get("session_id")
                if part.first if sid is None else part.mine(sid):
                    out.append(
                        (
                            (5, proc, 1, 0),
                            Violation(
                                f"process {proc}: inflight_now drifts {int(drift[1])} above the chats actually in "
                                f"flight from req_id {ln.get('req_id')} on (counter not decremented on some path)",
                                op_idx(ln),
                                sid,
                                "inflight_drift",
                            ),
                        )
                    )
        # A chat whose client gave up (timeout, disconnect) may still be running on the
        # server when the final snapshot is taken; more than those is a leak.
        maybe_running: Counter[str] = Counter()
        for o in chats:
            if o.server and (o.completion is None or o.type == "info"):
                maybe_running[o.server.rstrip("/")] += 1
        res: dict[str, Any] = {
            "out": out,
            "n_done": n_done,
            "joined": joined,
            "gaps": [(len(x), max(x, default=0.0)) for x in (unattributed, unexplained, slow_bodies)],
            "running": maybe_running,
            "overhead_ms": overhead_ms,
        }
        if part.first:
            res["stats"] = [
                (o.invoke_index, o.server, _num(o.body.get("inflight")), o.indices) for o in ops if is_stats(o)
            ]
        res["reqs"] = _reqs_lower_bounds(part, ops, chats, killed)
        if part.first and not killed and reference_target(run):
            res["reqs_at"] = {
                o.invoke_index: (o.server, int(o.body["reqs_total"]), o.indices)
                for o in ops
                if is_stats(o) and isinstance(o.body.get("reqs_total"), int)
            }
        return res

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        if not context.has_server_logs:
            return verdict(self.name, [], unknown=["no server logs (external target?)"])
        head = parts[0]
        out: list[Keyed] = []
        running: Counter[str] = Counter()
        for p in parts:
            out.extend(p["out"])
            running.update(p["running"])
        for at, server, v, indices in head["stats"]:
            allowed = running[(server or "").rstrip("/")]
            if v is not None and v > allowed:
                out.append(
                    (
                        (6, at),
                        Violation(
                            f"final stats of {server}: inflight={int(v)} with at most {allowed} chats possibly "
                            "still running (client timeouts)",
                            indices,
                            None,
                            "inflight_not_zero",
                        ),
                    )
                )
        for at, (server, reqs_total, indices) in sorted(head.get("reqs_at", {}).items()):
            lower = sum(p.get("reqs", {}).get(at, 0) for p in parts)
            if reqs_total < lower:
                out.append(
                    (
                        (6, at, 1),
                        Violation(
                            f"final stats of {server}: reqs_total={reqs_total} but that process logged chat_start "
                            f"for {lower} chats answered before the snapshot (a request the counter missed)",
                            indices,
                            None,
                            "reqs_total_short",
                        ),
                    )
                )
        violations = merge_violations([out])
        (n_un, max_un), (n_ex, max_ex), (n_slow, max_slow) = (
            (
                sum(p["gaps"][k][0] for p in parts),
                max(p["gaps"][k][1] for p in parts if p["gaps"][k][0]) if any(p["gaps"][k][0] for p in parts) else 0.0,
            )
            for k in range(3)
        )
        gap_notes: list[str] = []
        if n_un:
            gap_notes.append(
                f"{n_un} chat_done line(s) leave up to {max_un:.0f} ms of total_ms in no "
                "bucket and do not say how long the request body took to arrive (read_body_ms)"
            )
        if n_ex:
            gap_notes.append(
                f"{n_ex} chat_done line(s) leave up to {max_ex:.0f} ms of the server's own "
                "handling in no bucket (a CPU-starved server loop waits between phases; not a protocol violation)"
            )
        n_done, joined = sum(p["n_done"] for p in parts), sum(p["joined"] for p in parts)
        notes = f"{n_done} chat_done lines, {joined} joined to the history"
        if gap_notes:
            notes += "; " + "; ".join(gap_notes)
        if n_slow:
            overhead_ms = head["overhead_ms"]
            notes += (
                f"; slow client: {n_slow} request body(ies) took over {overhead_ms:.0f} ms to arrive "
                f"(max {max_slow:.0f} ms), the client's time, not counted against the server"
            )
        return verdict(self.name, violations, unknown=[], notes=notes)


def _reqs_lower_bounds(part: Part, ops: Sequence[Op], chats: Sequence[Op], killed: bool) -> dict[int, int]:
    """Per final ``GET /stats`` snapshot (by its invoke index): how many of this part's chats were answered
    before it was taken and have their one ``chat_start`` on the very process it describes (its
    ``worker_port`` / ``pid``). Each is a request that process received, so its ``reqs_total`` is at least
    their sum over the parts. Our reference server only (``/stats`` is our extra, docs/reference_server.md;
    CONTEXT.md names the counter, not where it is read), and not in a run with a kill (a restarted process
    may reuse a pid in simulation). The snapshots themselves go to the first part's ``reqs_at``."""
    if killed or not reference_target(part.run):
        return {}
    snaps: list[tuple[int, float, str]] = []
    for o in ops:
        if not is_stats(o) or not isinstance(o.body.get("reqs_total"), int):
            continue
        snaps.append((o.invoke_index, o.start, process_key(o.body)))
    if not snaps:
        return {}
    index = part.log_index()
    out: dict[int, int] = {}
    for o in chats:
        if o.status is None or o.seen_end is None or not o.request_id:
            continue
        n, _ts, proc = index.start_by_caller(o.request_id)
        if n != 1:
            continue
        for at, t, key in snaps:
            if proc == key and o.seen_end < t:
                out[at] = out.get(at, 0) + 1
    return out


class Leaks:
    name = "leaks"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # The rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # Cross-session: a heartbeat counts every session of its process, a stats snapshot every session of its
    # server. Heartbeats and stats probes are in every part; each part counts its own sessions' creates and
    # deletes before each heartbeat (one array per part) and its own sessions alive per server; reduce adds.

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        beats: list[tuple[str, float]] = []  # (process, sessions=) of every heartbeat, in check()'s order
        live_before, deleted_before = array("q"), array("q")
        for proc, lines in sorted(_by_process(run).items()):
            live = deleted = 0
            for ln in lines:
                ev = ln.get("event")
                if ev == "session_created" and part.mine(ln.get("session_id")):
                    live += 1
                elif ev == "session_deleted" and part.mine(ln.get("session_id")):
                    live -= 1
                    deleted += 1
                elif ev == "heartbeat":
                    v = _num(ln.get("sessions"))
                    if v is None:
                        continue
                    if part.first:
                        beats.append((proc, v))
                    live_before.append(live)
                    deleted_before.append(deleted)
        last_stats: dict[str, Op] = {}
        for o in ops:
            if is_stats(o) and o.server:
                last_stats[o.server.rstrip("/")] = o
        owners = {sid: url.rstrip("/") for sid, url in run.owners.items() if part.mine(sid)}
        for o in ops:
            if o.f == "create" and o.type == "ok" and o.session and o.server and part.mine(o.session):
                owners.setdefault(o.session, o.server.rstrip("/"))
        servers: dict[str, tuple[bool, int]] = {}  # server -> (a final state missing, sessions left alive)
        for server in last_stats:
            mine = [sid for sid, url in owners.items() if url == server or port_of(url) == port_of(server)]
            missing = any(sid not in run.final_states for sid in mine)
            servers[server] = (missing, sum(1 for sid in mine if run.final_states.get(sid) is not None))
        out: dict[str, Any] = {"live": live_before, "deleted": deleted_before, "servers": servers}
        if part.first:  # the run-wide facts, the same in every part
            out["beats"] = beats
            out["killed"] = any(is_kill(c) for c in chaos_events(ops))
            out["stats"] = {
                server: (_num(o.body.get("sessions")), o.indices)
                for server, o in last_stats.items()
                if isinstance(o.body, dict)
            }
            out["unseen"] = {
                server: sum(
                    1
                    for c in ops
                    if c.f == "create"
                    and c.end == INF
                    and c.session is None
                    and c.server
                    and (c.server.rstrip("/") == server or port_of(c.server) == port_of(server))
                )
                for server in last_stats
            }
        return out

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        head = parts[0]
        violations: list[Violation] = []
        unknown: list[str] = []
        evidence = 0
        for k, (proc, v) in enumerate(head["beats"]):
            live = sum(p["live"][k] for p in parts)
            if any(p["deleted"][k] for p in parts):
                evidence += 1
            if int(v) != live:
                violations.append(
                    Violation(
                        f"process {proc}: heartbeat sessions={int(v)} but {live} created and not deleted",
                        [],
                        None,
                        "sessions_leak_heartbeat",
                    )
                )
        for server, (v, indices) in sorted(head["stats"].items()):
            if v is None:
                continue
            if any(p["servers"][server][0] for p in parts):
                unknown.append(f"final states missing for sessions of {server}")
                continue
            alive = sum(p["servers"][server][1] for p in parts)
            unseen = head["unseen"][server]
            evidence += 1
            if alive < int(v) <= alive + unseen:
                unknown.append(
                    f"final stats of {server}: sessions={int(v)}, the run left {alive} alive there and {unseen} "
                    "create(s) of unknown outcome (client timeout) may have made the rest"
                )
                continue
            if int(v) != alive and not (head["killed"] and int(v) < alive):
                violations.append(
                    Violation(
                        f"final stats of {server}: sessions={int(v)} but the run left {alive} alive there",
                        indices,
                        None,
                        "sessions_leak",
                    )
                )
        if not evidence and not violations:
            unknown.append(
                "no heartbeat after a DELETE and no final stats snapshot (history probe value='stats'): "
                "a leak of deleted sessions could not be seen"
            )
        return verdict(self.name, violations, unknown=unknown, notes=f"{evidence} session counts compared")
