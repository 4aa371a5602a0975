"""Order-dependent verdicts follow the server's evidence, not the client's clock (issue 16).

On a starved client box a request reaches the server late and an answer reaches
the client late, so the client's invoke/complete times can disagree with the
order the server handled a session's requests in. Each test builds a run whose
client view allows both a legal and an illegal order, then (a) without server
evidence the checker does not call it invalid, (b) with log lines that order the
requests legally it is valid, (c) with log lines that order them illegally it is
flagged. Synthetic runs from test_checkers_builders.
"""

from __future__ import annotations

import hashlib
from typing import Any

from test_checkers_builders import RunBuilder

from harness.checkers import CHECKERS, Verdict
from harness.rundata import RunData


def check(run: RunData, name: str) -> Verdict:
    return CHECKERS[name].check(run)


def kinds(v: Verdict) -> set[str]:
    return {x.kind for x in v.violations}


def rid_of(run: RunData, op: int) -> str:
    return str(next(e["request_id"] for e in run.history if e["op"] == op))


def records(run: RunData, sid: str) -> list[dict[str, Any]]:
    st = run.final_states[sid]
    assert st is not None
    return list(st["records"])


def move_line(run: RunData, event: str, op: int, *, before: tuple[str, int]) -> None:
    """Move ``op``'s ``event`` log line just before the ``before`` line: the server's order."""
    logs = run.server_logs

    def find(ev: str, o: int) -> int:
        rid = rid_of(run, o)
        return next(i for i, ln in enumerate(logs) if ln["event"] == ev and ln.get("caller_request_id") == rid)

    line = logs.pop(find(event, op))
    logs.insert(find(*before), line)


def no_server_evidence(run: RunData) -> RunData:
    run.server_logs = []
    run.backend_executions = {}
    return run


# --- lost_turns: out_of_order -------------------------------------------------------------------


def _overlapping_turns() -> tuple[RunBuilder, str, int, int]:
    """Turn 1 (``a``) and turn 2 (``c``) overlap at the client; the server committed ``a`` first, and
    ``a``'s answer reached the (starved) client only after ``c``'s did."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    t = b.tick()
    a = b.chat(sid, 1, t0=t, t1=t + 1.0)
    c = b.chat(sid, 2, t0=t + 0.1, t1=t + 0.5)
    b.t = t + 1.1
    return b, sid, a, c


def test_records_in_the_servers_order_are_not_out_of_order_when_answers_arrive_late() -> None:
    b, _, _, _ = _overlapping_turns()
    assert check(b.build(), "lost_turns").status == "valid"  # logs: a done before c
    assert check(no_server_evidence(b.build()), "lost_turns").status == "valid"  # either order fits


def _swapped(b: RunBuilder, sid: str) -> RunData:
    """The run with turn 2's record stored before turn 1's."""
    run = b.build()
    st = run.final_states[sid]
    assert st is not None
    st["records"][1], st["records"][2] = st["records"][2], st["records"][1]
    return run


def test_records_against_the_servers_order_are_out_of_order() -> None:
    b, sid, a, c = _overlapping_turns()
    # without the server's word the client view allows "c was served first": legal
    assert check(no_server_evidence(_swapped(b, sid)), "lost_turns").status == "valid"
    # the logs say c arrived after a's chat_done: c read the state after a committed, yet stored before it
    run = _swapped(b, sid)
    move_line(run, "chat_done", a, before=("chat_start", c))
    v = check(run, "lost_turns")
    assert kinds(v) == {"out_of_order"}
    assert rid_of(run, c) in v.violations[0].message
    # and the client's own view suffices when it had a's answer before it sent c
    seq = RunBuilder()
    sid2 = seq.create()
    seq.episode(sid2, 3)
    assert kinds(check(_swapped(seq, sid2), "lost_turns")) == {"out_of_order"}


# --- provisional: retries run out ---------------------------------------------------------------


def _last_two_aborted_overlap() -> tuple[RunBuilder, str, int, int]:
    """The last attempts of turn 1 overlap at the client; both aborted; the second in call order is the
    server's last (its provisional replaced the first's)."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    t = b.tick()
    first = b.chat(sid, 1, 0, outcome="aborted", t0=t, t1=t + 1.0)
    second = b.chat(sid, 1, 1, outcome="aborted", t0=t + 0.1, t1=t + 0.5)
    b.t = t + 1.1
    return b, sid, first, second


def test_retries_run_out_is_judged_from_the_servers_order_of_concurrent_attempts() -> None:
    b, sid, first, second = _last_two_aborted_overlap()
    run = b.build()
    move_line(run, "chat_done", first, before=("chat_start", second))  # the server: first, then second
    assert check(run, "provisional").status == "valid"
    run.final_states[sid]["records"].pop()  # type: ignore[index]
    v = check(run, "provisional")
    assert kinds(v) == {"provisional_missing"}
    assert rid_of(run, second) in {e["request_id"] for e in run.history if e["index"] in v.ops}


def test_concurrent_last_attempts_without_the_servers_order_are_not_judged() -> None:
    b, sid, _, _ = _last_two_aborted_overlap()
    run = no_server_evidence(b.build())
    run.final_states[sid]["records"].pop()  # type: ignore[index]
    v = check(run, "provisional")
    assert v.status == "valid"
    assert "cannot order" in v.notes


def test_a_delete_that_may_have_closed_the_session_excuses_a_missing_provisional_without_logs() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    b.chat(sid, 1, 0, outcome="aborted")
    t = b.tick()
    last = b.chat(sid, 1, 1, outcome="aborted", t0=t, t1=t + 0.5)
    d = b.invoke("delete", at=t + 0.1, session=sid, request_id=b.uid("r"), process="nemesis")
    b.complete(d, "info", at=t + 2.0, error="timeout")  # the server may have set closing before last's Phase 3
    run = b.build()
    run.final_states[sid]["records"].pop()  # type: ignore[index]
    assert kinds(check(run, "provisional")) == {"provisional_missing"}  # its chat_done says it stored one
    run.server_logs = []
    v = check(run, "provisional")
    assert v.status == "valid", v.violations
    assert last is not None


# --- provisional: superseded by the retry that the server served later ---------------------------


def _aborted_copy_and_committed_twin() -> tuple[RunBuilder, str, int, int]:
    """Two copies of turn 1 overlap at the client: ``ab`` was aborted, ``ok`` committed."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    t = b.tick()
    ok = b.chat(sid, 1, 0, t0=t, t1=t + 0.4)
    ab = b.chat(sid, 1, 1, outcome="aborted", t0=t + 0.1, t1=t + 1.0)  # served after ok: a legal tail
    b.t = t + 1.1
    return b, sid, ok, ab


def test_an_aborted_copy_served_after_its_committed_twin_is_a_legal_tail() -> None:
    b, sid, _, _ = _aborted_copy_and_committed_twin()
    assert [r["kind"] for r in records(b.build(), sid)] == ["committed", "committed", "provisional"]
    assert check(b.build(), "provisional").status == "valid"


def test_a_provisional_that_the_servers_order_says_was_superseded_is_flagged() -> None:
    b, _, ok, ab = _aborted_copy_and_committed_twin()
    run = b.build()
    # the server: the aborted copy finished before the committed twin arrived, so the twin superseded it
    move_line(run, "chat_done", ab, before=("chat_start", ok))
    move_line(run, "chat_start", ab, before=("chat_done", ab))
    assert kinds(check(run, "provisional")) == {"provisional_not_superseded"}
    # no evidence either way: unknown, never invalid
    v = check(no_server_evidence(b.build()), "provisional")
    assert v.status == "unknown", (v.status, v.notes, v.violations)


# --- liveness: a starved client ---------------------------------------------------------------


def test_a_delete_that_never_connected_is_not_a_deadlock() -> None:
    """Seen on a loaded box: the client's connect timed out after 10 s; the server never had the DELETE."""
    for error, flagged in (
        ("ConnectTimeout: ", False),
        ("RemoteProtocolError: Server disconnected without sending a response.", False),
        ("ReadTimeout: ", True),
    ):
        b = RunBuilder()
        b.scenario["checks"]["liveness_bound_s"] = 10.0  # the client waited the whole bound
        sid = b.create()
        b.chat(sid, 0)
        d = b.invoke("delete", session=sid, request_id=b.uid("r"), process="nemesis")
        b.complete(d, "info", at=b.t + 10.6, error=error)
        v = check(b.build(), "liveness")
        assert ("delete_timeout" in kinds(v)) is flagged, (error, v.violations)


# --- leaks: a create whose answer never came ------------------------------------------------------


def test_a_session_from_a_create_of_unknown_outcome_is_not_a_leak() -> None:
    """Seen on a loaded box: a create timed out at the client (10 s); the server had made the session."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    lost = b.invoke("create", process="agent-1")
    b.complete(lost, "info", error="timeout after 10 s")
    b.stats("http://127.0.0.1:9001", sessions=2)  # the one the run knows and the one it never heard of
    v = check(b.build(), "leaks")
    assert v.status == "unknown" and "unknown outcome" in v.notes, v.notes
    b.stats("http://127.0.0.1:9001", sessions=3)  # more than any order explains
    assert kinds(check(b.build(), "leaks")) == {"sessions_leak"}


def test_a_request_slow_only_by_the_clients_own_stall_is_unknown() -> None:
    """Seen on a loaded box: a create took 74 s while the harness's event loop lagged 73.8 s."""
    b = RunBuilder()
    op = b.invoke("create")
    b.complete(op, at=b.t + 74.0, session="5e55ffffff", status=200)
    run = b.build()
    assert kinds(check(run, "liveness")) == {"slow"}  # no self-report: the client's clock is all there is
    run.harness = {"lag_max_ms": 73846.0, "saturated": True}
    v = check(run, "liveness")
    assert v.status == "unknown" and "event-loop stall" in v.notes, v.notes
    run.harness = {"lag_max_ms": 20000.0}  # 74 s is more than the bound plus the stall: the server was slow
    assert kinds(check(run, "liveness")) == {"slow"}


# --- lost_turns: two copies answered, the client went on from the one the server overwrote ---------


def _twins_then_diverging_turn(went_on_from: str) -> tuple[RunData, str]:
    """Turn 2 sent twice: copy ``x`` commits, then copy ``y`` arrives after x's chat_done and re-commits
    turn 2 by a one-step rollback. Both answer 200 with different content. The client goes on (turn 3)
    from ``went_on_from``'s answer; from x's, turn 3 diverges from the stored turn 2 and rolls it back, as
    the protocol says, so turn 2 has no record of its own; the stored messages show x's content."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    b.chat(sid, 1)
    t = b.tick()
    sha = {"x": hashlib.sha1(b"answer x").hexdigest(), "y": hashlib.sha1(b"answer y").hexdigest()}
    b.chat(sid, 2, 0, t0=t, t1=t + 0.1, content_sha=sha["x"])
    b.chat(sid, 2, 1, t0=t + 0.05, t1=t + 0.3, back=1, content_sha=sha["y"])  # logged after x's chat_done
    b.t = t + 0.4
    b.chat(sid, 3, back=1)  # drops turn 2's record: the request diverged there
    b.collect_and_delete(sid)
    run = b.build()
    for st in [run.final_states.get(sid), *[e.get("body") for e in run.history if e["f"] == "get"]]:
        if isinstance(st, dict):
            meta = st.setdefault("metadata", {})
            meta["messages"] = [
                {"role": "user", "content": "u0"},
                {"role": "assistant", "content": "a0"},
                {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "u2"},
                {"role": "assistant", "content": f"answer {went_on_from}"},
                {"role": "user", "content": "u3"},
                {"role": "assistant", "content": "a3"},
            ]
    return run, sid


def test_going_on_from_an_overwritten_twin_rolls_its_turn_back_legitimately() -> None:
    run, _ = _twins_then_diverging_turn("x")
    assert check(run, "lost_turns").status == "valid", check(run, "lost_turns").violations


def test_a_dropped_turn_the_client_went_on_from_as_stored_is_still_lost() -> None:
    run, _ = _twins_then_diverging_turn("y")  # y was the last commit: nothing diverged, yet turn 2 is gone
    assert "lost_turn" in kinds(check(run, "lost_turns"))


# --- lost_turns: a turn skipped by design because another request committed during its proxy ---------


def _turn_skipped_for_a_late_copy(*, late_copy: bool) -> RunData:
    """Seen on a starved box (duplicate_inflight_retry): turn 0's first copy timed out at the client and
    reached the server late; turn 1 was sent from the second copy's answer; the late copy rolled turn 0
    back and re-committed it while turn 1 was in its proxy phase, so the server skipped turn 1's update
    (state_changed) and answered 200, as CONTEXT.md's Phase 3 says. ``late_copy=False``: the same skip
    with no other commit at all (a server skipping for no reason)."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, 1)
    t = b.tick()
    skipped = b.chat(sid, 1, outcome="state_changed_skip", t0=t, t1=t + 0.5)
    if late_copy:
        late = b.chat(sid, 0, 0, back=1, t0=t + 0.1, t1=t + 0.3, status=200)
    b.t = t + 0.6  # collected after both answers
    b.collect_and_delete(sid)
    run = b.build()
    if late_copy:
        move_line(run, "chat_start", late, before=("chat_start", skipped))
        move_line(run, "chat_done", late, before=("chat_done", skipped))
    return run


def test_a_turn_skipped_because_another_request_committed_meanwhile_is_not_lost() -> None:
    v = check(_turn_skipped_for_a_late_copy(late_copy=True), "lost_turns")
    assert v.status == "valid", v.violations
    assert "skipped by the server because another request" in v.notes, v.notes
    assert "lost_turn" in kinds(check(_turn_skipped_for_a_late_copy(late_copy=False), "lost_turns"))


def test_a_server_request_id_shared_by_two_sessions_joins_each_chat_to_its_own_lines(tmp_path: Any) -> None:
    """CONTEXT.md's server request id is 8 hex characters: a 10^5-session run has ~18 pairs of chats that share
    one. A join by that id alone gives one session's chat the other's chat_start/chat_done, and lost_turns then
    calls a correct run out of order. Each chat is joined to its own session's lines (every chat_start and
    chat_done names its session_id). Here: a correct sim run of duplicate_inflight_retry, then two chats of
    different sessions given one server request id, in the answers' headers and in the log lines."""
    import json
    from pathlib import Path

    from harness.checkers.ops import pair_ops
    from harness.scenario import load_scenario
    from harness.sim.runner import simulate, with_seed

    root = Path(__file__).resolve().parents[2]
    sc = with_seed(load_scenario(root / "scenarios" / "duplicate_inflight_retry.toml"), 1, None)
    out = simulate(sc, 1, "random", trace=False)
    assert out.data is not None, out.error
    run = out.data
    names = ("lost_turns", "provisional", "stale_writers", "log_consistency", "blocking", "token_state")
    before = {n: json.dumps(check(run, n).to_dict(), sort_keys=True) for n in names}
    assert all(json.loads(before[n])["status"] != "invalid" for n in names), before
    chats = [o for o in pair_ops(run.history) if o.f == "chat" and o.req_id and o.session]
    by_session: dict[str, list[Any]] = {}
    for o in chats:
        by_session.setdefault(str(o.session), []).append(o)
    (sa, la), (_sb, lb) = list(by_session.items())[:2]
    changed = 0
    for a, b in zip(la[:3], lb[:3], strict=True):  # three of a's chats each take the id of one of b's
        old, new = a.req_id, b.req_id
        for ev in run.history:
            h = ev.get("headers")
            if isinstance(h, dict) and h.get("x-req-id") == old:
                h["x-req-id"] = new
                changed += 1
        for ln in run.server_logs:
            if ln.get("req_id") == old and str(ln.get("session_id")) == sa:
                ln["req_id"] = new
                changed += 1
    assert changed >= 6
    again = RunData(
        scenario=run.scenario,
        history=type(run.history)(run.history),
        final_states=run.final_states,
        owners=run.owners,
        backend_executions=run.backend_executions,
        server_logs=run.server_logs,
        harness=run.harness,
    )
    after = {n: json.dumps(check(again, n).to_dict(), sort_keys=True) for n in names}
    for n in names:
        assert json.loads(after[n])["status"] != "invalid", (n, after[n])
    assert after["lost_turns"] == before["lost_turns"]
