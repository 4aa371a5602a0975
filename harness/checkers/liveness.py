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

Checked on the whole run, not per session (harness/checkers/stream.py): a timed-out
DELETE's excuse reads other sessions' data, unbounded. "Lost on the way" looks
for a chat of *another* session to the same process that timed out unseen while
that process logged arrivals (any session's ``chat_start``) inside its window,
placed on a client clock every session's chats bound: a part cannot know
another part's arrival times, and carrying them to a reduce is carrying the
log. (The rest, slow requests and hangs, is per operation.)
"""

from __future__ import annotations

from collections import Counter

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.clock import ClientClock
from harness.checkers.continuity import execution_log_gap
from harness.checkers.ops import (
    INF,
    Op,
    chaos_events,
    checks_cfg,
    fault_kinds,
    faults_applied,
    is_kill,
    is_outage,
    pair_ops,
    port_of,
    run_end,
    shared_links,
)
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


def lost_on_the_way(run: RunData, ops: list[Op], clock: ClientClock, d: Op) -> str | None:
    """Why the client's requests to ``d``'s process did not get through while timed-out DELETE ``d`` waited."""
    sid, gave_up, port = d.session, d.seen_end, port_of(d.server)
    if sid is None or gave_up is None or port is None:
        return None
    mine = [ln for ln in run.server_logs if str(ln.get("worker_port")) == str(port)]
    if any(ln.get("event") == "session_deleted" and str(ln.get("session_id")) == sid for ln in mine):
        return None  # the server did get to it: when it did is the question, and it was not in time
    starts = [ln for ln in mine if ln.get("event") == "chat_start" and ln.get("caller_request_id") is not None]
    arrivals = [s for s in (clock.span(ln) for ln in starts) if s is not None]  # only lines that name their caller
    logged = {str(ln.get("caller_request_id")) for ln in run.server_logs if ln.get("caller_request_id") is not None}
    rids = Counter(o.request_id for o in ops if o.request_id is not None)
    for c in ops:
        if c.f != "chat" or c.type != "info" or c.seen_end is None or port_of(c.server) != port:
            continue
        if c.session == sid or (c.completion or {}).get("sent") is True:
            continue  # its own session's chat may wait on the DELETE; a chat that left the client was not lost
        err = str((c.completion or {}).get("error") or "").lower()
        if "timeout" not in err or c.request_id is None or rids[c.request_id] != 1 or c.request_id in logged:
            continue
        if not (c.start < gave_up and d.start < c.seen_end):
            continue  # not sent while the DELETE waited
        t0, t1 = c.start, c.seen_end
        if any(t0 <= a and b <= t1 for a, b in arrivals):
            return (
                f"chat {c.request_id}, sent to the same process at {t0:.3f}, gave up at {t1:.3f} and never reached "
                "it (no chat_start) while the process logged other arrivals meanwhile"
            )
    return None


class Liveness:
    name = "liveness"

    def check(self, run: RunData) -> Verdict:
        ops = pair_ops(run.history)
        cfg = checks_cfg(run)
        raw = cfg.get("liveness_bound_s")
        bound = float(raw) if isinstance(raw, (int, float)) else None
        end_of_run = run_end(ops)
        kinds = fault_kinds(run)
        slow_plan = any(any(w in k for w in SLOW_FAULTS) for k in kinds)
        links = shared_links(run, ops)
        chaos = chaos_events(ops)
        kills = [c for c in chaos if is_kill(c)]
        outages = [c for c in chaos if is_outage(c)]
        violations: list[Violation] = []
        # the harness's own event-loop lag (runner/_selfmon.py): how long the client could not read an answer
        lag = run.harness.get("lag_max_ms") if isinstance(run.harness, dict) else None
        client_stall_s = float(lag) / 1000.0 if isinstance(lag, (int, float)) and not isinstance(lag, bool) else 0.0
        stalled = 0
        open_ops = 0
        timeouts = 0
        dropped = 0
        undecided = 0
        in_time: list[str] = []
        lost: list[str] = []
        early: list[str] = []
        clock: ClientClock | None = None
        gap = execution_log_gap(run) if run.backend_executions else None
        for o in ops:
            if o.f not in JUDGED:
                continue
            t1 = o.seen_end
            killed = any(c.covers(o.start, t1 if t1 is not None else INF, margin=1.0) for c in kills)
            if o.completion is None:
                open_ops += 1
                if bound is not None and end_of_run - o.start > bound and not killed:
                    violations.append(
                        Violation(
                            f"{o.f} invoked at t={o.start:.3f} never completed "
                            f"(history ends at t={end_of_run:.3f}, bound {bound}s)",
                            o.indices,
                            o.session,
                            "never_completed",
                        )
                    )
                continue
            assert t1 is not None
            dur = t1 - o.start
            if o.type == "info":
                timeouts += 1
                err = str((o.completion or {}).get("error") or "")
                cut = "run ended" in err or "cancelled" in err  # the run stopped waiting, not the server
                low = err.lower()
                if o.f == "delete" and "timeout" not in low and any(w in low for w in DROPPED):
                    dropped += 1  # a transport error, not silence: the DELETE did not hang
                    continue
                # the kernel completes a TCP connect even when the server's loop is stuck: a connect that timed
                # out is a starved client (or box), and a DELETE that never reached the server cannot deadlock it
                cut = cut or "ConnectTimeout" in err
                if o.f == "delete" and not killed and not cut and (o.completion or {}).get("sent") is False:
                    lost.append(f"DELETE sent at {o.start:.3f}: the client gave up before the request had left it")
                    continue
                if o.f == "delete" and not killed and not cut and run.server_logs:
                    clock = clock or ClientClock(run, ops)
                    why = served_in_time(run, ops, clock, o, bound, client_stall_s)
                    if why is not None:
                        in_time.append(f"DELETE sent at {o.start:.3f}: {why}")
                        continue
                    why = lost_on_the_way(run, ops, clock, o)
                    if why is not None:
                        lost.append(f"DELETE sent at {o.start:.3f}: {why}")
                        continue
                if o.f == "delete" and not killed and not cut and bound is not None and dur < bound:
                    # the client gave up before the bound: its timeout alone says nothing of a deadlock
                    clock = clock or ClientClock(run, ops)
                    why = served_late(run, ops, clock, o, bound) if run.server_logs else None
                    if why is None:
                        early.append(f"DELETE sent at {o.start:.3f}, given up after {dur:.3f}s")
                        continue
                    violations.append(
                        Violation(
                            f"DELETE timed out after {dur:.3f}s and was not served within the {bound:g}s bound: {why}",
                            o.indices,
                            o.session,
                            "delete_timeout",
                        )
                    )
                    continue
                if o.f == "delete" and not killed and not cut:
                    violations.append(
                        Violation(
                            f"DELETE timed out after {dur:.3f}s: deadlock?", o.indices, o.session, "delete_timeout"
                        )
                    )
                continue
            if bound is None or dur <= bound or killed:
                continue
            if o.f == "chat":
                faults = [str(ex["fault"]).lower() for ex in links.executions_of(o) if ex.get("fault")]
                if any(w in f for f in faults for w in SLOW_FAULTS):
                    continue
                if slow_plan and not run.backend_executions:
                    continue
                if slow_plan and gap is not None and not links.executions_of(o):
                    undecided += 1  # its execution (and the fault it got) may be in the part of the log lost
                    continue
                if any(c.covers(o.start, t1) for c in outages):
                    continue
            if dur - client_stall_s <= bound:
                stalled += 1  # the client itself was frozen that long: the server may have answered in time
                continue
            violations.append(
                Violation(
                    f"{o.f} took {dur:.3f}s > liveness bound {bound}s",
                    o.indices,
                    o.session,
                    "delete_slow" if o.f == "delete" else "slow",
                )
            )
        shown = "none" if bound is None else f"{bound:g}s"
        notes = f"bound={shown}, {timeouts} client timeouts (indeterminate), {open_ops} without completion"
        if dropped:
            notes += f", {dropped} DELETE(s) ended by a dropped connection (outcome unknown, not a hang)"
        unknown = [] if bound is not None else ["no checks.liveness_bound_s: durations and hangs not judged"]
        if undecided:
            unknown.append(
                f"{gap}: {undecided} chat(s) slower than the bound absent from it, whether a slow fault explains them"
                " is unknown"
            )
        if in_time:
            unknown.append(
                f"{len(in_time)} DELETE timeout(s) the server logged as served in time, before the client gave up "
                "or within the bound (its session_deleted on the client's clock, harness/checkers/clock.py), "
                "while the client itself was stalled or had not waited the bound: the client may not have read the "
                "answer; " + "; ".join(in_time[:3])
            )
        if lost:
            unknown.append(
                f"{len(lost)} DELETE timeout(s) that may never have reached the server (the client gave up before "
                "the request had left it, or a chat of another session sent meanwhile to that process never reached "
                "it, though it was serving others); " + "; ".join(lost[:3])
            )
        if early:
            unknown.append(
                f"{len(early)} DELETE timeout(s) shorter than the bound that the server's logs do not show served "
                "late: the client gave up before the bound, so whether the server would have answered within it "
                "cannot be told; " + "; ".join(early[:3])
            )
        if stalled:
            unknown.append(
                f"{stalled} request(s) slower than the bound, but by less than the harness's own event-loop stall "
                f"({client_stall_s:.1f} s, harness_self.json): the client, not the server, may have been late"
            )
        if slow_plan and not faults_applied(run):
            unknown.append("target.faults_applied is false: the scenario's slow / hang faults were not applied")
        return verdict(self.name, violations, unknown=unknown, notes=notes)
