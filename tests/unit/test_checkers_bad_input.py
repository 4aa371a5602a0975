"""bad_input: a 5xx, an accepted malformed request, a served unknown session or a changed canary is flagged."""

from __future__ import annotations

from typing import Any

from harness.checkers import CHECKERS, Verdict
from harness.history import History
from harness.rundata import RunData

SRV = "http://s0"
BODY = {"session_id": "c", "records": [{"kind": "committed", "request": {"input_ids": [1, 2]}}]}
BODY["metadata"] = {"accumulated_token_ids": [1, 2, 3]}


class Tick:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 0.001
        return self.t

    def wall(self) -> float:
        return self.t


class Fuzzed:
    def __init__(self) -> None:
        self.h = History(Tick())

    def snapshot(self, sid: str, reason: str, body: Any, status: int = 200) -> None:
        op = self.h.invoke(process="fuzzer", f="get", session=sid, server=SRV, reason=reason)
        if status == 200:
            self.h.ok(op, status=200, body=body)
        else:
            self.h.fail(op, status=status)

    def case(
        self, name: str, status: int | None, *, expect: str = "4xx", category: str = "not_json", size: int = 0
    ) -> None:
        f, sid = ("chat", "v") if category != "odd_session_id" else ("fuzz", None)
        op = self.h.invoke(
            process="fuzzer",
            f=f,
            session=sid,
            server=SRV,
            fuzz=name,
            expect=expect,
            fuzz_category=category,
            body_bytes=size,
        )
        if status is None:
            self.h.info(op, error="ReadError: dropped", dropped=True)
        elif 200 <= status < 300:
            self.h.ok(op, status=status)
        else:
            self.h.fail(op, status=status)

    def run(self, canary_after: Any = BODY, scenario: dict[str, Any] | None = None) -> Verdict:
        self.snapshot("c", "fuzz_canary_after", canary_after)
        self.snapshot("v", "fuzz_victim_after", {**BODY, "session_id": "v"})
        return CHECKERS["bad_input"].check(RunData(scenario=scenario or {}, history=self.h.events))


def fuzzed() -> Fuzzed:
    f = Fuzzed()
    f.snapshot("c", "fuzz_canary_before", BODY)
    f.snapshot("v", "fuzz_victim_before", {**BODY, "session_id": "v"})
    return f


def kinds(v: Verdict) -> set[str]:
    return {x.kind for x in v.violations}


def test_all_rejected_and_canary_unchanged_is_valid() -> None:
    f = fuzzed()
    f.case("not_json:text", 400)
    f.case("role:unknown", 200, expect="no_5xx", category="bad_role")
    f.case("unknown_id:get -1", 404, category="odd_session_id")
    v = f.run()
    assert v.status == "valid", v
    assert "3 fuzz requests" in v.notes


def test_each_broken_promise_has_its_kind() -> None:
    f = fuzzed()
    f.case("not_json:deep_nesting", 500, expect="no_5xx")
    f.case("messages:missing", 200)
    f.case("unknown_id:chat 0000", 200, category="odd_session_id")
    f.case("body=array", None)
    v = f.run()
    assert v.status == "invalid"
    assert kinds(v) == {"status_5xx", "accepted_malformed", "unknown_session_served", "no_answer"}
    assert all(x.ops for x in v.violations)


def test_a_malformed_request_must_be_refused_with_a_4xx() -> None:
    f = fuzzed()
    f.case("body=array", 399)  # a mutant's off-by-one status: not a refusal any client understands
    f.case("passthrough:GET v1/models", 307, expect="no_5xx", category="passthrough")  # a relayed redirect: fine
    f.case("passthrough:POST generate", 413, expect="no_5xx", category="passthrough", size=5_000_000)  # fine
    v = f.run()
    assert kinds(v) == {"not_a_refusal"}
    f.case("passthrough:POST generate", 413, expect="no_5xx", category="passthrough", size=80)
    assert kinds(f.run()) == {"not_a_refusal", "too_large_claimed"}
    assert [x.message for x in v.violations] == ["body=array: a malformed request answered 399, not a 4xx refusal"]


def test_canary_compared_on_records_and_token_ids_only() -> None:
    f = fuzzed()
    f.case("not_json:text", 400)
    extra = {**BODY, "metadata": {**BODY["metadata"], "last_seen": 123.0}}  # bookkeeping may change
    assert f.run(canary_after=extra).status == "valid"
    g = fuzzed()
    g.case("not_json:text", 400)
    v = g.run(canary_after={**BODY, "metadata": {"accumulated_token_ids": [1, 2]}})
    assert kinds(v) == {"canary_changed"}


def test_victim_changed_by_refused_requests_is_flagged_but_not_after_an_accepted_one() -> None:
    f = fuzzed()
    f.case("not_json:text", 400)
    f.snapshot("v", "fuzz_victim_after", {**BODY, "records": []})
    v = CHECKERS["bad_input"].check(RunData(scenario={}, history=f.h.events))
    assert "rejected_changed_state" in kinds(v)
    g = fuzzed()
    g.case("role:unknown", 200, expect="no_5xx", category="bad_role")
    g.snapshot("v", "fuzz_victim_after", {**BODY, "records": []})
    g.snapshot("c", "fuzz_canary_after", BODY)
    assert CHECKERS["bad_input"].check(RunData(scenario={}, history=g.h.events)).status == "valid"


def test_unreadable_after_and_missing_snapshots() -> None:
    f = fuzzed()
    f.case("not_json:nan", 200, expect="no_5xx")
    f.snapshot("v", "fuzz_victim_after", None, status=500)
    f.snapshot("c", "fuzz_canary_after", BODY)
    assert kinds(CHECKERS["bad_input"].check(RunData(scenario={}, history=f.h.events))) == {"state_unreadable"}
    g = Fuzzed()
    g.case("not_json:text", 400)
    v = CHECKERS["bad_input"].check(RunData(scenario={}, history=g.h.events))
    assert v.status == "unknown" and "snapshot" in v.notes


def test_no_fuzz_is_valid_and_says_nothing_was_sent() -> None:
    v = CHECKERS["bad_input"].check(RunData(scenario={}, history=[]))
    assert v.status == "valid" and "no fuzz requests" in v.notes


def test_a_413_within_the_reference_servers_limit_is_flagged() -> None:
    """docs/reference_server.md: a body larger than max_body_bytes (default 4 MiB) is 413, so one of exactly
    the limit is read; only the reference server the harness starts itself has a known limit."""
    limit = 4 * 1024 * 1024
    f = fuzzed()
    f.case("passthrough:POST generate (4 MiB)", 413, expect="no_5xx", category="passthrough", size=limit)
    assert kinds(f.run()) == {"too_large_claimed"}
    assert kinds(f.run(scenario={"target": {"kind": "reference", "server_args": ["--max-body-bytes", "100"]}})) == set()
    assert kinds(f.run(scenario={"target": {"kind": "command"}})) == set()  # another server: its limit is unknown
    assert kinds(f.run(scenario={"sim": {"target": "asgi:m:f"}})) == set()  # a user's app in sim, not ours
    f = fuzzed()
    f.case("passthrough:POST generate (4 MiB + 1)", 413, expect="no_5xx", category="passthrough", size=limit + 1)
    assert kinds(f.run()) == set()
