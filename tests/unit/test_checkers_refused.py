"""refused_legal: a 4xx to a chat the protocol allows is flagged; the legal refusals are not.

Synthetic runs from test_checkers_builders; each chat carries the agent's ``request_kind``.
"""

from __future__ import annotations

from test_checkers_builders import S0, S1, RunBuilder, clean_run

from harness.checkers import CHECKERS, Verdict
from harness.rundata import RunData


def judge(run: RunData) -> Verdict:
    return CHECKERS["refused_legal"].check(run)


def kinds(v: Verdict) -> set[str]:
    return {x.kind for x in v.violations}


def test_clean_run_has_no_refusals_and_is_valid() -> None:
    v = judge(clean_run().build())
    assert v.status == "valid"
    assert "no 4xx" in v.notes


def test_one_step_rollbacks_refused_with_400_are_flagged() -> None:
    for kind, turn, attempt in (("tool_retry", 2, 1), ("first_turn_retry", 0, 1), ("retry", 1, 1), ("next", 1, 0)):
        b = RunBuilder()
        sid = b.create()
        b.chat(sid, 0, request_kind="first")
        bad = b.chat(sid, turn, attempt, outcome="bad_request", request_kind=kind, retry_after="timeout")
        run = b.build()
        v = judge(run)
        assert v.status == "invalid", kind
        assert kinds(v) == {"refused_400"}
        idx = [e["index"] for e in run.history if e["op"] == bad]
        assert v.ops == idx and v.sessions == [sid]
        assert kind in v.violations[0].message


def test_first_request_refused_is_flagged_even_without_request_kind() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, outcome="bad_request", status=422)
    assert kinds(judge(b.build())) == {"refused_422"}


def test_refusal_without_request_kind_after_earlier_turns_is_unknown() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    b.chat(sid, 1, outcome="bad_request")
    v = judge(b.build())
    assert v.status == "unknown"
    assert "request_kind" in v.notes


def test_404_after_a_delete_or_a_kill_is_legal_but_not_on_a_live_session() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, request_kind="first")
    b.delete(sid, process="nemesis")
    b.chat(sid, 1, outcome="not_found", request_kind="next")
    other = b.create(S1)
    b.chaos({"action": "kill", "process": 1}, server=S1)
    b.chat(other, 0, outcome="not_found", request_kind="first")
    assert judge(b.build()).status == "valid"

    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, request_kind="first")
    b.chat(sid, 1, outcome="not_found", request_kind="next")
    assert kinds(judge(b.build())) == {"refused_404"}


def test_after_a_delete_only_404_is_legal() -> None:
    """CONTEXT.md: a request for a closing or removed session gets 404 (a 403 there passed as "after delete")."""
    for status, outcome in ((403, "bad_request"), (410, "bad_request"), (400, "bad_request")):
        b = RunBuilder()
        sid = b.create()
        b.chat(sid, 0, request_kind="first")
        b.delete(sid, process="nemesis")
        b.chat(sid, 1, outcome=outcome, status=status, request_kind="next")
        assert kinds(judge(b.build())) == {f"refused_{status}_after_delete"}, status


def test_a_kill_before_the_session_existed_does_not_excuse_its_404() -> None:
    b = RunBuilder()
    b.chaos({"action": "kill", "process": 0}, server=S0)
    b.chaos({"action": "restart", "process": 0}, server=S0)
    sid = b.create(S0)
    b.chat(sid, 0, outcome="not_found", request_kind="first")
    assert kinds(judge(b.build())) == {"refused_404"}


def test_409_needs_conflict_409_and_an_overlapping_chat() -> None:
    def run(variants: list[str], overlap: bool) -> Verdict:
        b = RunBuilder(variants=variants)
        sid = b.create()
        b.chat(sid, 0, request_kind="first")
        t = b.tick()
        b.chat(sid, 1, 0, t0=t, t1=t + 0.5, request_kind="next")
        start = t + 0.1 if overlap else t + 0.6
        b.chat(sid, 1, 1, outcome="conflict", t0=start, t1=start + 0.5, request_kind="duplicate")
        return judge(b.build())

    assert run(["conflict_409"], overlap=True).status == "valid"
    assert kinds(run([], overlap=True)) == {"conflict_undeclared"}
    assert kinds(run(["conflict_409"], overlap=False)) == {"conflict_without_race"}


def test_a_backend_4xx_passed_through_is_legal() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, request_kind="first")
    b.chat(sid, 1, outcome="upstream_error", status=400, fault="http_400", request_kind="next")
    forced = {"forced_fault": "http_400", "request_kind": "retry"}
    b.chat(sid, 1, 1, outcome="upstream_error", status=400, execute=False, **forced)
    v = judge(b.build())
    assert v.status == "valid"
    assert "passed_through: 2" in v.notes
    # the backend served it cleanly: the 400 is the server's own
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, request_kind="first")
    b.chat(sid, 1, outcome="upstream_error", status=400, request_kind="next")
    assert kinds(judge(b.build())) == {"refused_400"}


def test_resource_limits_and_requests_to_a_non_owner_are_not_judged() -> None:
    b = RunBuilder()
    sid = b.create(S0)
    b.chat(sid, 0, outcome="bad_request", status=429, request_kind="first")
    b.chat(sid, 0, 1, outcome="not_found", server=S1, request_kind="retry")
    assert judge(b.build()).status == "valid"


def test_fuzz_requests_are_left_to_bad_input() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, outcome="bad_request", fuzz="messages_not_a_list", expect="4xx")
    assert judge(b.build()).status == "valid"
