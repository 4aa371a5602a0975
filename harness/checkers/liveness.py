"""liveness: every request ends, within its bound; DELETE never deadlocks.

The split lock exists so that nothing waits behind a multi-second proxy call.
A DELETE that takes the lock while a Phase 3 is blocked, a lock never released
on an error path, an in-flight counter awaited forever: each shows up as a
request that never returns. The bound is ``scenario.checks.liveness_bound_s``.

Rules (times are the history's, from invoke to completion):

- an operation with no completion at all is indeterminate; if it was invoked
  more than the bound before the end of the history it hung (violation), else
  it is only noted;
- a completed chat slower than the bound is a violation unless a backend
  fault (hang, drip, latency spike) or chaos (outage, process kill) explains it;
  a hang explains it only up to the server's own backend timeout when the
  harness knows it (X03: our reference server, ``ops.reference_target``,
  started with ``--backend-timeout S``, docs/reference_server.md; not under
  ``lock_restore``): after the chaos excuses (an outage, a kill), answered
  more than 2S + the bound after it was sent (a connect and a read timeout,
  :func:`backend_timeout_limit`) is ``backend_timeout_ignored``; the notes
  say how many hung chats were judged so, or why X03 judged none;
- a request slower than the bound by less than the harness's own worst
  event-loop stall (``harness_self.json``: a starved client could not read the
  answer for that long) is unknown, not a violation;
- a client-side timeout (``info``) of a chat is unknown outcome, not a failure:
  counted in the notes, never a violation;
- a DELETE, GET or create must complete within the bound, and a DELETE that
  timed out (``info``) is a deadlock, unless a process kill overlaps it, the
  run itself ended under it (error "run ended" / "cancelled": indeterminate) or
  it never connected (``ConnectTimeout``: a starved client, not a server stuck in
  DELETE, since the kernel accepts connections for a stuck event loop).
  A DELETE whose connection was dropped (the client got a transport error,
  not silence: "disconnected", a reset) did not hang (a stuck server holds the
  connection open): its outcome is unknown and it is counted in the notes,
  not a deadlock;
- a DELETE that timed out before the client had written the whole request
  (its completion says ``sent: false``, from httpx's trace events or the sim's
  network) never reached the server: unknown, not a deadlock;
- a DELETE that timed out is unknown, not a deadlock, when the server
  probably answered in time and the client did not read it: it is the
  session's only DELETE, its process logged ``session_deleted`` for the
  session, that line, placed on the client's clock by the offset bounds of
  harness/checkers/clock.py (from the process's chat_start lines), lies after
  the DELETE was sent, surely before the client gave up and within the bound,
  and the harness's own event loop stalled (harness_self.json) at least as
  long as the time from that line to the give-up, or the harness was
  saturated (its timing declared unreliable, runner/_selfmon.py) (#16).
  ``session_deleted`` is our server's line, not a CONTEXT.md promise, and a
  server may log it and then hang: without the client's own stall to explain
  the silence it stays ``delete_timeout`` (a server that always does so is
  flagged in every run whose harness was not saturated, and in sim);
- a DELETE the client gave up on before the bound (an agent timeout shorter
  than ``liveness_bound_s``, e.g. duplicate_inflight_retry's 0.6 s) is no
  evidence of a deadlock by itself: it is ``delete_timeout`` only when its
  process's ``session_deleted`` for the session's only DELETE lies, on the
  client's clock, surely after the bound (served late). No such line proves
  nothing (CONTEXT.md does not promise it; a server may drop a DELETE whose
  client went away): unknown, with the reason;
- a DELETE that timed out and that the server never logged as done is also
  unknown when the client's requests to that process demonstrably did not
  get through in its window: a chat of another session to the same process,
  sent while the DELETE was waiting and not recorded as having left the
  client (``sent``), timed out at the client and the process never logged a
  ``chat_start`` for it, while it logged other arrivals inside that chat's
  own window (its loop was running and serving). The DELETE's silence is then
  no evidence against the server (#16: process_kill_restart, requests
  reaching a responsive server up to 2.4 s late and some never). A chat of
  the DELETE's own session is no such evidence (it may be waiting on the
  DELETE), and a DELETE the server logged as done, but late, stays
  ``delete_timeout``;
- a request slower than the bound by less than the harness's own event-loop
  stall (harness_self.json) is unknown: the client may have been the late one;
- a slow chat is excused by a slow fault the backend's execution log shows
  applied to it; when that log is not continuous over the run (a backend
  restart or reset: harness/checkers/continuity.py) the fault of a chat the
  log no longer holds cannot be read, so with slow faults in the plan such a
  chat is unknown (counted, with the gap's reason), not a violation.

Without a bound only DELETE timeouts are judged and the verdict is at best unknown.

Checked a group of sessions at a time (harness/checkers/stream.py), check() being the
one group of them all. Slow requests and hangs are per operation; a timed-out
DELETE's excuses read other sessions' data: the client clock that places its
``session_deleted`` (every process's chats bound it) and, for "lost on the way",
other sessions' chats to the same process and that process's arrivals. A part
judges what its own sessions decide and hands such DELETEs to the reduce, with
its chats' clock bounds (joined to their ``chat_start`` through the run-wide
:class:`~harness.checkers.stream_index.LogIndex`, as ``clock_bounds`` joins
them over the whole log), its timed-out chats that may have been lost and the
request ids of its operations; the reduce settles them with the index's
arrivals. The end of the history (for hangs) is the parts' latest time.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.clock import CLOCK_SLACK_S, ClientClock
from harness.checkers.continuity import BACKEND_PROBE
from harness.checkers.ops import (
    INF,
    Op,
    by_session,
    chaos_events,
    checks_cfg,
    fault_kinds,
    faults_applied,
    is_kill,
    is_outage,
    pair_ops,
    port_of,
    reference_target,
    run_end,
    server_options,
    shared_links,
    variants,
)
from harness.checkers.stream import RUN_WIDE, Keyed, Part, RunContext, check_whole, merge_violations
from harness.checkers.stream_index import LogIndex, indexed_clock_bounds
from harness.rundata import RunData

DROPPED = ("disconnect", "reset", "remoteprotocolerror", "readerror", "connection closed", "broken pipe")
SLOW_FAULTS = ("hang", "drip", "latency", "slow", "spike", "timeout", "outage", "unparsed")
JUDGED = ("chat", "get", "delete", "create", "probe")


def served_in_time(
    run: RunData, ops: list[Op], clock: ClientClock, d: Op, bound: float | None, client_stall_s: float
) -> str | None:
    """Why timed-out DELETE ``d`` was probably answered in time by the server (None: not shown).

    Its ``session_deleted`` lies before the give-up while the client itself stalled that long or was
    saturated, or within the bound when the client gave up before the bound."""
    saturated = isinstance(run.harness, dict) and run.harness.get("saturated") is True
    sid, gave_up, port = d.session, d.seen_end, port_of(d.server)
    if sid is None or gave_up is None or port is None:
        return None
    if sum(1 for x in ops if x.f == "delete" and x.session == sid) != 1:
        return None  # a session_deleted line could be another DELETE's
    for ln in run.server_logs:
        if ln.get("event") != "session_deleted" or str(ln.get("session_id")) != sid:
            continue
        if str(ln.get("worker_port")) != str(port):
            continue  # another process's line (or one that does not say which): not this DELETE's
        span = clock.span(ln)
        if span is None:
            continue
        earliest, latest = span
        if latest < d.start:
            continue  # surely before this DELETE was sent: not its doing
        stalled = gave_up - latest <= client_stall_s or saturated
        if latest < gave_up and (bound is None or latest - d.start <= bound) and stalled:
            # a server may log the deletion and then hang before it answers: only a client that was itself
            # frozen that long, or saturated (its timing declared unreliable), may be the one that did not read it
            return (
                f"session_deleted at client time {earliest:.3f}-{latest:.3f}, before the give-up at {gave_up:.3f}, "
                f"and the harness's own loop stalled {client_stall_s:.1f} s"
                + (" (saturated)" if saturated else "")
                + " (harness_self.json)"
            )
        if bound is not None and gave_up - d.start < bound and latest - d.start <= bound:
            return (
                f"session_deleted at client time {earliest:.3f}-{latest:.3f}, within the {bound:g}s bound of the "
                f"DELETE sent at {d.start:.3f} (the client gave up first, at {gave_up:.3f})"
            )
    return None


def served_late(run: RunData, ops: list[Op], clock: ClientClock, d: Op, bound: float) -> str | None:
    """Why DELETE ``d``, which the client gave up on before the bound, was provably not served within it.

    The session's only DELETE, and its process's log, placed on the client's clock, shows its
    ``session_deleted`` surely later than the bound. Its absence proves nothing: CONTEXT.md does not
    promise the line, a server may drop a DELETE whose client went away, and a starved client can give
    up before its request left it. None: not proven."""
    sid, port = d.session, port_of(d.server)
    if sid is None or port is None or sum(1 for x in ops if x.f == "delete" and x.session == sid) != 1:
        return None
    deadline = d.start + bound
    mine = [ln for ln in run.server_logs if str(ln.get("worker_port")) == str(port)]
    deleted = [ln for ln in mine if ln.get("event") == "session_deleted" and str(ln.get("session_id")) == sid]
    spans = [clock.span(ln) for ln in deleted]
    if deleted and all(s is not None and s[0] > deadline for s in spans):
        return f"its session_deleted is surely after the bound (client time > {deadline:.3f})"
    return None


def reference_backend_timeout(run: RunData) -> tuple[float | None, str]:
    """``--backend-timeout S`` of our reference server, when the run's target is it and sets it; else
    ``(None, why not)``.

    docs/reference_server.md: the backend call's connect and read timeout, after which the call fails (502). Known
    only for our reference server (``ops.reference_target``: the one the harness starts, or a coverage proof's
    ``harness.coverage._bugs`` wrapper of it) with the option in ``target.server_args``, read as its launcher
    reads them (``ops.server_options``: the last occurrence wins, abbreviations count); not under
    ``lock_restore``, where a chat may also wait for the lock behind another chat's hung call.
    """
    if not reference_target(run):
        return None, "not our reference server"
    if "lock_restore" in variants(run):
        return None, "lock_restore: a chat may also wait for the lock behind another chat's hung call"
    given, why = server_options(run)
    if given is None:
        return None, why
    t = given.get("backend_timeout")
    if not isinstance(t, float) or not t > 0 or t == INF:
        return None, "no --backend-timeout in target.server_args"
    return t, "--backend-timeout"


def backend_timeout_limit(timeout: float, bound: float) -> float:
    """The latest a correct reference server answers a chat whose backend call hung: ``2 * timeout + bound``.

    Its backend call sets connect, read, write and pool timeouts of ``timeout`` each (reference_impl/proxy.py
    ``Backend.request``); a hung backend (it took the request and answers nothing) costs at most the connect
    wait and the wait for the answer's first byte, one timeout each: its pool has no limit (live aiohttp
    ``limit=0``; the sim's network has no pool) and the request is written at once (the sim buffers it; live,
    the backend reads it before hanging). One backend call per chat; the rest (tokenize, commit, answer) is
    within the liveness bound."""
    return 2.0 * timeout + bound


def _slow_faults(links: Any, o: Op) -> list[str]:
    """The slow faults (hang, drip, latency spike) the backend gave ``o``'s executions, lower case."""
    faults = [str(ex["fault"]).lower() for ex in links.executions_of(o) if ex.get("fault")]
    return [f for f in faults if any(w in f for w in SLOW_FAULTS)]


def _judged_here(part: Part, o: Op) -> bool:
    """The part that judges ``o``: its session's (as the pass groups it), a run-wide operation the first."""
    inv = o.invoke
    f = inv.get("f")
    if f in RUN_WIDE or (f == "probe" and inv.get("value") in (BACKEND_PROBE, "stats")):
        return part.first
    c = o.completion
    return part.mine(c["session"] if c is not None and "session" in c else inv.get("session"))


# a chat that timed out unsent and that no log line names as its caller: (its place, port, session,
# request id's code, request id, sent, gave up)
_Lost = tuple[int, int, str | None, int, str, float, float]


def _lost_on_the_way(
    index: LogIndex, clock: ClientClock, d: Op, deleted: list[dict[str, Any]], chats: list[_Lost], rids: Counter[int]
) -> str | None:
    """:func:`lost_on_the_way` from the parts' timed-out chats (``chats``, in operation order, those the log
    never names as a caller), the run's request id counts (``rids``, by code) and the index's arrivals."""
    sid, gave_up, port = d.session, d.seen_end, port_of(d.server)
    if sid is None or gave_up is None or port is None:
        return None
    if any(str(ln.get("worker_port")) == str(port) for ln in deleted):
        return None  # the server did get to it: when it did is the question, and it was not in time
    arrivals = [(off, ts) for proc, ts in index.arrivals(port) if (off := clock.offset(proc)) is not None]
    for _, c_port, c_session, code, c_rid, t0, t1 in chats:
        if c_port != port or c_session == sid or rids[code] != 1:
            continue
        if not (t0 < gave_up and d.start < t1):
            continue  # not sent while the DELETE waited
        for off, ts in arrivals:  # some arrival whose span lies inside [t0, t1]: both ends grow with ts
            hi, lo = off.hi, off.lo
            i = bisect_left(ts, t0, key=lambda x: x - hi - CLOCK_SLACK_S)
            if i < len(ts) and ts[i] - lo + CLOCK_SLACK_S <= t1:
                return (
                    f"chat {c_rid}, sent to the same process at {t0:.3f}, gave up at {t1:.3f} and never reached "
                    "it (no chat_start) while the process logged other arrivals meanwhile"
                )
    return None


class Liveness:
    name = "liveness"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    def part(self, part: Part) -> dict[str, Any]:
        run, ctx = part.run, part.context
        ops = pair_ops(run.history)
        cfg = checks_cfg(run)
        raw = cfg.get("liveness_bound_s")
        bound = float(raw) if isinstance(raw, (int, float)) else None
        kinds = fault_kinds(run)
        slow_plan = any(any(w in k for w in SLOW_FAULTS) for k in kinds)
        ref_timeout, _why = reference_backend_timeout(run)
        links = shared_links(run, ops)
        chaos = chaos_events(ops)
        kills = [c for c in chaos if is_kill(c)]
        outages = [c for c in chaos if is_outage(c)]
        out: list[Keyed] = []
        # the harness's own event-loop lag (runner/_selfmon.py): how long the client could not read an answer
        lag = run.harness.get("lag_max_ms") if isinstance(run.harness, dict) else None
        client_stall_s = float(lag) / 1000.0 if isinstance(lag, (int, float)) and not isinstance(lag, bool) else 0.0
        n: Counter[str] = Counter()
        lists: dict[str, list[tuple[int, str]]] = {"in_time": [], "lost": [], "early": []}
        hangs: list[tuple[int, str, float, list[int], str | None]] = []  # never completed: judged by the run's end
        pending: list[tuple[int, Op, list[Op], list[dict[str, Any]], float]] = []  # DELETEs the clock settles
        gap = ctx.execution_log_gap if ctx.has_backend_executions else None
        deletes = by_session(ops, "delete")
        for o in ops:
            if o.f not in JUDGED or not _judged_here(part, o):
                continue
            t1 = o.seen_end
            killed = any(c.covers(o.start, t1 if t1 is not None else INF, margin=1.0) for c in kills)
            if o.completion is None:
                n["open"] += 1
                if bound is not None and not killed:
                    hangs.append((o.invoke_index, o.f, o.start, o.indices, o.session))
                continue
            assert t1 is not None
            dur = t1 - o.start
            if o.type == "info":
                n["timeouts"] += 1
                err = str((o.completion or {}).get("error") or "")
                cut = "run ended" in err or "cancelled" in err  # the run stopped waiting, not the server
                low = err.lower()
                if o.f == "delete" and "timeout" not in low and any(w in low for w in DROPPED):
                    n["dropped"] += 1  # a transport error, not silence: the DELETE did not hang
                    continue
                # the kernel completes a TCP connect even when the server's loop is stuck: a connect that timed
                # out is a starved client (or box), and a DELETE that never reached the server cannot deadlock it
                cut = cut or "ConnectTimeout" in err
                if o.f == "delete" and not killed and not cut and (o.completion or {}).get("sent") is False:
                    lists["lost"].append(
                        (
                            o.invoke_index,
                            f"DELETE sent at {o.start:.3f}: the client gave up before the request had left it",
                        )
                    )
                    continue
                if o.f == "delete" and not killed and not cut and ctx.has_server_logs:
                    # its excuses need the client clock (every part's chats): settled in the reduce
                    sid = o.session
                    gone = [
                        ln
                        for ln in run.server_logs
                        if ln.get("event") == "session_deleted" and str(ln.get("session_id")) == sid
                    ]
                    pending.append((o.invoke_index, o, deletes.get(sid, []) if sid is not None else [], gone, dur))
                    continue
                if o.f == "delete" and not killed and not cut and bound is not None and dur < bound:
                    # the client gave up before the bound: its timeout alone says nothing of a deadlock
                    lists["early"].append((o.invoke_index, f"DELETE sent at {o.start:.3f}, given up after {dur:.3f}s"))
                    continue
                if o.f == "delete" and not killed and not cut:
                    v = Violation(
                        f"DELETE timed out after {dur:.3f}s: deadlock?", o.indices, o.session, "delete_timeout"
                    )
                    out.append(((o.invoke_index,), v))
                continue
            if bound is None or killed:
                continue
            slow = _slow_faults(links, o) if o.f == "chat" and (dur > bound or ref_timeout is not None) else []
            x03 = bool(slow) and ref_timeout is not None and all("hang" in f for f in slow)
            excused = o.f == "chat" and any(c.covers(o.start, t1) for c in outages)
            if x03 and not excused:
                n["x03_judged"] += 1  # every hung chat, in time or not: the note shows X03 judged some
            if dur <= bound:
                continue
            if o.f == "chat":
                if x03 and ref_timeout is not None and not excused:  # an outage explains a chat whatever its fault
                    limit = backend_timeout_limit(ref_timeout, bound)
                    if dur - client_stall_s > limit:
                        v = Violation(
                            f"chat took {dur:.3f}s on a backend hang: the reference server was started with "
                            f"--backend-timeout {ref_timeout:g} (docs/reference_server.md: the backend call's "
                            f"connect and read timeout), so it should have answered within {limit:g}s (a connect "
                            f"and a read timeout, 2 x {ref_timeout:g}s, + the bound {bound:g}s)",
                            o.indices,
                            o.session,
                            "backend_timeout_ignored",
                        )
                        out.append(((o.invoke_index,), v))
                    continue
                if slow:
                    continue
                if slow_plan and not ctx.has_backend_executions:
                    continue
                if slow_plan and gap is not None and not links.executions_of(o):
                    n["undecided"] += 1  # its execution (and the fault it got) may be in the part of the log lost
                    continue
                if excused:
                    continue
            if dur - client_stall_s <= bound:
                n["stalled"] += 1  # the client itself was frozen that long: the server may have answered in time
                continue
            v = Violation(
                f"{o.f} took {dur:.3f}s > liveness bound {bound}s",
                o.indices,
                o.session,
                "delete_slow" if o.f == "delete" else "slow",
            )
            out.append(((o.invoke_index,), v))
        res: dict[str, Any] = {
            "n": n,
            "counts": {k: len(v) for k, v in lists.items()},
            "lists": {k: v[:3] for k, v in lists.items()},  # the first three of each, in operation order
            "out": out,
            "hangs": hangs,
            "pending": pending,
            "end": run_end(ops),
            "stall": client_stall_s,
        }
        if ctx.has_server_logs:  # what the reduce needs to settle any part's pending DELETEs
            index = part.log_index()
            res["bounds"] = indexed_clock_bounds(index, ops, lambda o: _judged_here(part, o), part.split)
            rids = array("Q")
            lost: list[_Lost] = []
            for o in ops:
                if o.request_id is None or not _judged_here(part, o):
                    continue
                code = index.intern(o.request_id)
                rids.append(code)
                if o.f != "chat" or o.type != "info" or o.seen_end is None or (o.completion or {}).get("sent") is True:
                    continue
                port = port_of(o.server)
                err = str((o.completion or {}).get("error") or "").lower()
                if port is None or "timeout" not in err or index.logged(o.request_id):
                    continue
                lost.append((o.invoke_index, port, o.session, code, o.request_id, o.start, o.seen_end))
            res["rids"], res["maybe_lost"] = rids, lost
            if part.first:
                res["index"], res["harness"] = index, run.harness
        return res

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        run = RunData(scenario=context.scenario, history=[])
        cfg = checks_cfg(run)
        raw = cfg.get("liveness_bound_s")
        bound = float(raw) if isinstance(raw, (int, float)) else None
        end_of_run = max([0.0, *(p["end"] for p in parts)])
        n: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        lists: dict[str, list[tuple[int, str]]] = {"in_time": [], "lost": [], "early": []}
        out: list[Keyed] = []
        for p in parts:
            n.update(p["n"])
            counts.update(p["counts"])
            out.extend(p["out"])
            for k, v in p["lists"].items():
                lists[k].extend(v)
            for key, f, start, indices, session in p["hangs"]:
                if bound is not None and end_of_run - start > bound:
                    v = Violation(
                        f"{f} invoked at t={start:.3f} never completed "
                        f"(history ends at t={end_of_run:.3f}, bound {bound}s)",
                        indices,
                        session,
                        "never_completed",
                    )
                    out.append(((key,), v))
        pending = sorted((x for p in parts for x in p["pending"]), key=lambda x: x[0])
        if pending:
            head = parts[0]
            index: LogIndex = head["index"]
            harness, stall = head["harness"], head["stall"]
            clock = ClientClock.from_bounds(p["bounds"] for p in parts)
            maybe_lost = sorted(x for p in parts for x in p["maybe_lost"])
            wanted = {x[3] for x in maybe_lost}
            rids: Counter[int] = Counter(c for p in parts for c in p["rids"] if c in wanted)
            for key, d, session_deletes, gone, dur in pending:
                mini = RunData(scenario=context.scenario, history=[], server_logs=gone, harness=harness)
                why = served_in_time(mini, session_deletes, clock, d, bound, stall)
                if why is not None:
                    lists["in_time"].append((key, f"DELETE sent at {d.start:.3f}: {why}"))
                    counts["in_time"] += 1
                    continue
                why = _lost_on_the_way(index, clock, d, gone, maybe_lost, rids)
                if why is not None:
                    lists["lost"].append((key, f"DELETE sent at {d.start:.3f}: {why}"))
                    counts["lost"] += 1
                    continue
                if bound is not None and dur < bound:
                    why = served_late(mini, session_deletes, clock, d, bound)
                    if why is None:
                        lists["early"].append((key, f"DELETE sent at {d.start:.3f}, given up after {dur:.3f}s"))
                        counts["early"] += 1
                        continue
                    v = Violation(
                        f"DELETE timed out after {dur:.3f}s and was not served within the {bound:g}s bound: {why}",
                        d.indices,
                        d.session,
                        "delete_timeout",
                    )
                    out.append(((key,), v))
                    continue
                out.append(
                    (
                        (key,),
                        Violation(
                            f"DELETE timed out after {dur:.3f}s: deadlock?", d.indices, d.session, "delete_timeout"
                        ),
                    )
                )
        violations = merge_violations([out])
        in_time, lost, early = (sorted(lists[k]) for k in ("in_time", "lost", "early"))
        shown = "none" if bound is None else f"{bound:g}s"
        notes = f"bound={shown}, {n['timeouts']} client timeouts (indeterminate), {n['open']} without completion"
        if n["dropped"]:
            notes += f", {n['dropped']} DELETE(s) ended by a dropped connection (outcome unknown, not a hang)"
        ref_timeout, why = reference_backend_timeout(run)
        if ref_timeout is None:
            notes += f"; X03 (the reference server's --backend-timeout) not judged: {why}"
        else:
            notes += (
                f"; X03: {n['x03_judged']} chat(s) on a backend hang judged against --backend-timeout {ref_timeout:g}"
            )
        unknown = [] if bound is not None else ["no checks.liveness_bound_s: durations and hangs not judged"]
        if n["undecided"]:
            unknown.append(
                f"{context.execution_log_gap}: {n['undecided']} chat(s) slower than the bound absent from it, whether "
                "a slow fault explains them is unknown"
            )
        if counts["in_time"]:
            unknown.append(
                f"{counts['in_time']} DELETE timeout(s) the server logged as served in time, before the client gave "
                "up or within the bound (its session_deleted on the client's clock, harness/checkers/clock.py), "
                "while the client itself was stalled or had not waited the bound: the client may not have read the "
                "answer; " + "; ".join(m for _, m in in_time[:3])
            )
        if counts["lost"]:
            unknown.append(
                f"{counts['lost']} DELETE timeout(s) that may never have reached the server (the client gave up "
                "before the request had left it, or a chat of another session sent meanwhile to that process never "
                "reached it, though it was serving others); " + "; ".join(m for _, m in lost[:3])
            )
        if counts["early"]:
            unknown.append(
                f"{counts['early']} DELETE timeout(s) shorter than the bound that the server's logs do not show "
                "served late: the client gave up before the bound, so whether the server would have answered within "
                "it cannot be told; " + "; ".join(m for _, m in early[:3])
            )
        if n["stalled"]:
            stall_s = parts[0]["stall"]
            unknown.append(
                f"{n['stalled']} request(s) slower than the bound, but by less than the harness's own event-loop stall "
                f"({stall_s:.1f} s, harness_self.json): the client, not the server, may have been late"
            )
        kinds = fault_kinds(run)
        slow_plan = any(any(w in k for w in SLOW_FAULTS) for k in kinds)
        if slow_plan and not faults_applied(run):
            unknown.append("target.faults_applied is false: the scenario's slow / hang faults were not applied")
        return verdict(self.name, violations, unknown=unknown, notes=notes)
