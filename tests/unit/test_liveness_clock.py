"""A timed-out DELETE against the server's clock mapped onto the client's (issue 16).

On a starved box the correct server logged ``session_deleted`` for a DELETE
seconds after the client sent it and before the client gave up (the client was
too starved to read the 204); a server that serves DELETE only after 30 s
(coverage bug ``slow_delete``) logs the same line, later. The difference is
*when* on the client's clock: harness/checkers/clock.py bounds the offset of
each server process's log clock from the run's own chat requests. Synthetic
runs from test_checkers_builders; the server's clock is put 1234.5 s off the
client's (as a real wall clock is off a monotonic one).
"""

from __future__ import annotations

from test_checkers_builders import EPOCH, S0, S1, RunBuilder

from harness.checkers import CHECKERS, Verdict
from harness.checkers.clock import ClientClock
from harness.checkers.ops import pair_ops
from harness.rundata import RunData

SKEW = 1234.5  # the server's log clock is this far ahead of the history's


def liveness(run: RunData) -> Verdict:
    return CHECKERS["liveness"].check(run)


def kinds(v: Verdict) -> set[str]:
    return {x.kind for x in v.violations}


def skewed(b: RunBuilder, *, stall_s: float | None = None) -> RunData:
    """The run, its server log clock ``SKEW`` off the client's; ``stall_s``: the harness's own worst
    event-loop stall (harness_self.json ``lag_max_ms``)."""
    run = b.build()
    for ln in run.server_logs:
        ln["ts"] += SKEW
    if stall_s is not None:
        run.harness = {**(run.harness if isinstance(run.harness, dict) else {}), "lag_max_ms": stall_s * 1000.0}
    return run


def timed_out_delete(
    deleted_after: float | None, *, late_reads: float = 0.0, server: str = S0, bound: float = 10.0
) -> RunBuilder:
    """A session's two chats answered (each read ``late_reads`` s after the server finished it), then its
    only DELETE sent at t0 timed out at the client at t0 + 10.3; the server logged ``session_deleted`` at
    t0 + ``deleted_after`` on the client's true clock (None: never). The liveness bound is ``bound`` (by
    default below the client's wait: the client waited the whole bound)."""
    b = RunBuilder()
    b.scenario["checks"]["liveness_bound_s"] = bound
    sid = b.create()
    for turn in (0, 1):
        t0 = b.tick(0.5)
        b.chat(sid, turn, t0=t0, t1=t0 + 0.2)
        if late_reads:  # the answer reached the starved client late: its completion moves, the lines do not
            b.events[-1]["time"] += late_reads
            b.t = b.events[-1]["time"]
    t0 = b.tick(0.5)
    d = b.invoke("delete", at=t0, session=sid, request_id=b.uid("r"))
    if deleted_after is not None:
        b.log("session_deleted", server, t0 + deleted_after, session_id=sid)
    b.complete(d, "info", at=t0 + 10.3, error="timeout after 10 s")
    b.t = t0 + 10.4
    return b


def test_the_offset_bounds_hold_the_true_skew_and_widen_with_late_reads() -> None:
    b = timed_out_delete(None, late_reads=2.0)
    run = skewed(b)
    off = ClientClock(run, pair_ops(run.history)).offset(f"{9001}/{101}")
    assert off is not None and off.pairs == 2  # the two chat_start lines (chat_done gives no bound)
    true = EPOCH + SKEW
    assert off.lo <= true <= off.hi, off
    assert off.width >= 2.0  # an answer read 2 s late: the server may have finished it any time in those 2 s


def test_contradicting_or_missing_bounds_give_no_mapping() -> None:
    b = timed_out_delete(None)
    run = skewed(b)
    key = "9001/101"
    starts = [ln for ln in run.server_logs if ln["event"] == "chat_start"]
    starts[0]["ts"] -= 5.0  # "arrived" 5 s before the client sent it: this log clock is not comparable
    clock = ClientClock(run, pair_ops(run.history))
    assert clock.offset(key) is None and "contradicting" in clock.why_not(key)
    assert clock.offset("9002/102") is None  # a process without a joined chat
    assert clock.span({"ts": EPOCH, "worker_port": 9002, "pid": 102}) is None


def test_a_delete_the_server_served_before_the_client_gave_up_is_unknown() -> None:
    """Seen on a starved box (rapid_lifecycle): session_deleted 9.7 s after the DELETE was sent, 0.5 s
    before the client gave up; the 204 was never read."""
    v = liveness(skewed(timed_out_delete(9.7), stall_s=1.0))
    assert v.status == "unknown" and not v.violations, v.violations
    assert "served in time" in v.notes and "stalled 1.0 s" in v.notes, v.notes
    # the same line but a client that never stalled: a server that logs the deletion, then hangs before it
    # answers (session_deleted is no CONTEXT.md promise of an answer)
    assert kinds(liveness(skewed(timed_out_delete(9.7), stall_s=0.1))) == {"delete_timeout"}
    assert kinds(liveness(skewed(timed_out_delete(9.7)))) == {"delete_timeout"}


def test_a_delete_the_server_served_late_is_still_a_deadlock() -> None:
    """The slow_delete bug: the server logs session_deleted 30 s after the DELETE, long after the give-up."""
    assert kinds(liveness(skewed(timed_out_delete(30.0)))) == {"delete_timeout"}
    # just after the give-up: served, but not in the client's time
    assert kinds(liveness(skewed(timed_out_delete(10.5)))) == {"delete_timeout"}
    # before the give-up, but the client read every answer 2 s late, so the line may be up to 2 s later
    # on the client's clock than it looks: not provably in time
    assert kinds(liveness(skewed(timed_out_delete(9.7, late_reads=2.0)))) == {"delete_timeout"}
    assert kinds(liveness(skewed(timed_out_delete(7.0, late_reads=2.0), stall_s=5.0))) == set()  # this one is
    # no line at all (the run ended before the slow server got to it)
    assert kinds(liveness(skewed(timed_out_delete(None)))) == {"delete_timeout"}


def test_a_client_that_gave_up_before_the_bound_proves_no_deadlock_by_itself() -> None:
    """The agent's own timeout (0.6 s in duplicate_inflight_retry) is shorter than the scenario's liveness
    bound: the give-up alone is no evidence. Served within the bound: unknown; the logs show it served
    surely after the bound, or not at all while the process kept logging past the bound: a deadlock;
    no evidence either way: unknown (#16: a starved run's 0.76 s DELETE timeout)."""
    within = liveness(skewed(timed_out_delete(20.0, bound=30.0)))
    assert within.status == "unknown" and not within.violations, within.violations
    assert "within the 30s bound" in within.notes, within.notes
    silent = liveness(skewed(timed_out_delete(None, bound=30.0)))
    assert silent.status == "unknown" and not silent.violations, silent.violations
    assert "shorter than the bound" in silent.notes, silent.notes
    assert kinds(liveness(skewed(timed_out_delete(40.0, bound=30.0)))) == {"delete_timeout"}
    b = timed_out_delete(None, bound=30.0)
    b.log("chat_start", S0, b.t + 25.0, req_id="cafe0001", session_id=b.create(), caller_request_id="x1")
    # the process was serving and never logged the deletion; but the client may never have sent it (#16: a
    # starved run's DELETE whose session was still there at the end), and even one that left the client may
    # have been dropped when the client went away: no line proves nothing
    assert liveness(skewed(b)).status == "unknown"
    next(e for e in b.events if e["f"] == "delete" and e["type"] == "info")["sent"] = True
    assert liveness(skewed(b)).status == "unknown"
    b = timed_out_delete(None, bound=30.0)
    b.log("chat_start", S0, b.t + 5.0, req_id="cafe0002", session_id=b.create(), caller_request_id="x2")
    assert liveness(skewed(b)).status == "unknown"  # its last line is within the bound: it may yet have


def test_a_delete_that_never_left_the_client_is_no_deadlock() -> None:
    b = timed_out_delete(None)
    assert kinds(liveness(skewed(b))) == {"delete_timeout"}  # the client waited the whole bound, and sent it
    info = next(e for e in b.events if e["f"] == "delete" and e["type"] == "info")
    info["sent"] = True
    assert kinds(liveness(skewed(b))) == {"delete_timeout"}
    info["sent"] = False
    v = liveness(skewed(b))
    assert v.status == "unknown" and "before the request had left it" in v.notes, v.notes


def test_a_line_that_cannot_be_this_deletes_does_not_excuse_it() -> None:
    # logged by another process (which has no chats of its own to map its clock either)
    assert kinds(liveness(skewed(timed_out_delete(9.7, server=S1)))) == {"delete_timeout"}
    # surely before the DELETE was sent
    assert kinds(liveness(skewed(timed_out_delete(-1.0)))) == {"delete_timeout"}
    # two DELETEs of the session: the line may be the other one's
    b = timed_out_delete(9.7)
    sid = next(iter(b.models))
    b.delete(sid, at=b.tick())
    assert "delete_timeout" in kinds(liveness(skewed(b)))
    # the server's log clock contradicts the client's: nothing can be placed
    run = skewed(timed_out_delete(9.7))
    next(ln for ln in run.server_logs if ln["event"] == "chat_start")["ts"] -= 5.0
    assert kinds(liveness(run)) == {"delete_timeout"}


def lost_chat_beside(
    b: RunBuilder,
    *,
    logged: bool = False,
    others: bool = True,
    server: str = S0,
    own: bool = False,
    sent: bool | None = None,
) -> None:
    """While the DELETE (sent at t0, given up at t0 + 10.3) waits, a chat of another session to ``server``
    times out at the client after 3 s; ``logged``: the server logged its arrival anyway; ``others``: the
    process logged another chat's arrival inside that chat's window (it was serving)."""
    d = next(e for e in b.events if e["f"] == "delete" and e["type"] == "invoke")
    t0 = d["time"] + 2.0
    other = b.create(server)
    rid = b.uid("r")
    lost = d["session"] if own else other
    c = b.invoke("chat", at=t0, server=server, session=lost, turn=0, attempt=0, request_id=rid, process="agent-1")
    if logged:
        b.log("chat_start", server, t0 + 0.5, req_id="feedbeef", session_id=lost, caller_request_id=rid)
    b.complete(c, "info", at=t0 + 3.0, error="timeout after 3 s", **({} if sent is None else {"sent": sent}))
    if others:
        b.chat(other, 0, t0=t0 + 1.0, t1=t0 + 1.5, server=server, process="agent-2")
    b.t = max(b.t, d["time"] + 10.4)


def test_a_delete_timeout_while_requests_to_the_process_were_lost_on_the_way_is_unknown() -> None:
    """Seen on a starved box (process_kill_restart): no session_deleted, the DELETE never reached the
    responsive server, and neither did a chat sent meanwhile to the same process."""
    b = timed_out_delete(None)
    lost_chat_beside(b)
    v = liveness(skewed(b))
    assert v.status == "unknown" and not v.violations, v.violations
    assert "may never have reached the server" in v.notes, v.notes


def test_a_delete_timeout_with_no_lost_request_or_a_late_session_deleted_is_still_a_deadlock() -> None:
    # it arrived / the process was silent / elsewhere / the DELETE's own session's chat (a server that logs
    # chat_start after taking the session lock, held by a hung DELETE) / a chat that had left the client
    for kw in ({"logged": True}, {"others": False}, {"server": S1}, {"own": True}, {"sent": True}):
        b = timed_out_delete(None)
        lost_chat_beside(b, **kw)
        assert "delete_timeout" in kinds(liveness(skewed(b))), kw
    b = timed_out_delete(30.0)  # the server got to the DELETE, 30 s late: slow_delete, whatever else was lost
    lost_chat_beside(b)
    assert kinds(liveness(skewed(b))) == {"delete_timeout"}
