"""liveness and fault coverage when the backend's execution log is lost mid-run (issue 13).

Like exactly_once (tests/unit/test_exactly_once_continuity.py): after a backend
restart (another ``boot_id``) or ``POST /admin/reset`` the log holds only what
ran after it, so what its *absence* would prove is unknown, not invalid. The
same runs with a continuous log keep their verdicts (the controls).
"""

from __future__ import annotations

from typing import Any

from harness.checkers import CHECKERS
from harness.checkers.faults import fault_coverage
from harness.rundata import RunData

SID = "s" * 32


def probe(op: int, t: float, boot: str, resets: int, n: int) -> list[dict[str, Any]]:
    base = {"op": op, "f": "probe", "process": "runner", "session": None, "value": "backend_stats", "server": "b"}
    return [
        {**base, "type": "invoke", "time": t},
        {**base, "type": "ok", "time": t, "status": 200, "body": {"boot_id": boot, "resets": resets, "executions": n}},
    ]


def op(op: int, f: str, t0: float, t1: float, typ: str = "ok", **fields: Any) -> list[dict[str, Any]]:
    base = {"op": op, "f": f, "process": f"agent-{op}", "session": SID, "server": "http://127.0.0.1:1"}
    inv = {**base, "type": "invoke", "time": t0, "turn": fields.get("turn"), "request_id": fields.get("request_id")}
    return [inv, {**base, **fields, "type": typ, "time": t1}]


def run_of(events: list[dict[str, Any]], *, lost: bool, rules: list[dict[str, Any]]) -> RunData:
    """A run whose backend was restarted (``lost``) or not between its two /stats probes."""
    hist = probe(0, 0.0, "a", 0, 0) + events + probe(99, 100.0, "b" if lost else "a", 0, 1)
    for i, e in enumerate(hist):
        e["index"] = i
    return RunData(
        scenario={
            "checks": {"liveness_bound_s": 30.0},
            "backend": {"rules": rules, "faults": [r["fault"] for r in rules]},
        },
        history=hist,
        # one execution survives the loss: a later request, not the slow one
        backend_executions={SID: [{"rid": "x", "request_id": "later", "turn": 1, "attempt": 0}]},
    )


SLOW_CHAT = op(1, "chat", 1.0, 45.0, status=200, turn=0, attempt=0, request_id="slow")
HANG = [{"fault": "hang", "probability": 0.1}]


def test_slow_chat_after_a_log_loss_is_unknown_not_invalid() -> None:
    v = CHECKERS["liveness"].check(run_of(SLOW_CHAT, lost=True, rules=HANG))
    assert v.status == "unknown", [x.message for x in v.violations]
    assert "restarted" in v.notes and "1 chat(s) slower than the bound" in v.notes


def test_slow_chat_with_a_continuous_log_is_still_a_violation() -> None:
    v = CHECKERS["liveness"].check(run_of(SLOW_CHAT, lost=False, rules=HANG))
    assert v.status == "invalid" and v.violations[0].kind == "slow"


def test_slow_chat_without_slow_faults_in_the_plan_is_a_violation_whatever_the_log() -> None:
    v = CHECKERS["liveness"].check(run_of(SLOW_CHAT, lost=True, rules=[{"fault": "abort", "probability": 0.1}]))
    assert v.status == "invalid"


def test_delete_dropped_connection_is_not_a_deadlock_but_a_timeout_is() -> None:
    dropped = op(1, "delete", 1.0, 1.5, "info", error="RemoteProtocolError: Server disconnected without sending")
    v = CHECKERS["liveness"].check(run_of(dropped, lost=False, rules=[]))
    assert v.status == "valid" and "1 DELETE(s) ended by a dropped connection" in v.notes
    timed_out = op(1, "delete", 1.0, 31.0, "info", error="ReadTimeout: timed out")
    v = CHECKERS["liveness"].check(run_of(timed_out, lost=False, rules=[]))
    assert v.status == "invalid" and v.violations[0].kind == "delete_timeout"


def test_fault_coverage_after_a_log_loss_is_undecided_for_unseen_faults_only() -> None:
    rules = [{"fault": "abort", "probability": 0.1}]
    cov = fault_coverage(run_of([], lost=True, rules=rules))
    assert not cov.decided and cov.not_exercised == [] and "backend.rules[0]" in cov.reason
    cov = fault_coverage(run_of([], lost=False, rules=rules))
    assert cov.decided and [d.by for d in cov.not_exercised] == ["backend.rules[0]"]
    seen = run_of([], lost=True, rules=rules)
    seen.backend_executions[SID][0].update(fault="abort", fault_source="plan:x")
    cov = fault_coverage(seen)
    assert cov.decided and cov.not_exercised == []
