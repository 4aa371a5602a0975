"""Fault coverage: each declared fault is found applied in the backend's execution log, or listed as
declared but not exercised; the summary's unknown line says how many verdicts were unknown and why."""

from __future__ import annotations

from typing import Any

from harness.checkers.faults import declared_faults, fault_coverage
from harness.report.summary import coverage_line, unknown_line, unknown_summary
from harness.rundata import RunData

SCENARIO: dict[str, Any] = {
    "target": {},
    "backend": {"rules": [{"fault": "abort", "turn": 1}, {"fault": "http_503", "name": "weights", "probability": 0.1}]},
    "chaos": {
        "forced_faults": {"reset": 0.2, "hang": 0.0},
        "backend_outage": [{"at_s": 1.0, "duration_s": 1.0, "fault": "http_503"}],
    },
    "workload": {"script": [{"session": "a", "kind": "chat", "fault": "invalid_json"}]},
}


def ex(fault: str | None, source: str | None) -> dict[str, Any]:
    return {"rid": "x", "request_id": "r", "turn": 0, "attempt": 0, "fault": fault, "fault_source": source}


def run_with(execs: list[dict[str, Any]], **target: Any) -> RunData:
    sc = {**SCENARIO, "target": dict(target)}
    return RunData(scenario=sc, history=[], backend_executions={"s": execs} if execs else {})


def test_declared_faults_name_the_key_that_declares_them() -> None:
    got = [(d.fault, d.by, d.source) for d in declared_faults(SCENARIO)]
    assert got == [
        ("abort", "backend.rules[0]", "plan"),
        ("http_503", "backend.rules[1]", "plan:weights"),
        ("reset", "chaos.forced_faults.reset", "header"),
        ("http_503", "chaos.backend_outage[0]", "plan:outage"),
        ("invalid_json", "workload.script[0].fault", "header"),
    ]


def test_a_fault_counts_only_from_the_source_that_declares_it() -> None:
    # the outage's 503 does not exercise the named plan rule's 503, nor a plan abort a header abort
    cov = fault_coverage(
        run_with(
            [ex("http_503", "plan:outage"), ex("abort;fraction=0.5", "header"), ex("reset", "header"), ex(None, None)]
        )
    )
    assert cov.decided
    assert [d.by for d in cov.not_exercised] == ["backend.rules[0]", "backend.rules[1]", "workload.script[0].fault"]
    line = coverage_line(cov.to_dict())
    assert line is not None and line.startswith("declared but not exercised: abort (backend.rules[0])")
    cov = fault_coverage(
        run_with(
            [
                ex("abort", "plan:rule1"),  # a plan rule, whatever index it had under an outage plan
                ex("http_503", "plan:weights"),
                ex("reset", "header"),
                ex("http_503", "plan:outage"),
                ex("invalid_json", "header"),
            ]
        )
    )
    assert cov.not_exercised == [] and coverage_line(cov.to_dict()) is None


def test_no_execution_log_is_undecided_and_faults_not_applied_exercise_nothing() -> None:
    cov = fault_coverage(run_with([]))
    assert not cov.decided and cov.not_exercised == []
    assert "fault coverage unknown" in (coverage_line(cov.to_dict()) or "")
    cov = fault_coverage(run_with([ex("abort", "plan:rule0")], faults_applied=False))
    assert len(cov.not_exercised) == 5 and "faults_applied is false" in cov.reason
    assert fault_coverage(RunData(scenario={"backend": {"rules": []}}, history=[])).to_dict()["declared"] == []


def test_unknown_line_counts_and_gives_each_reason() -> None:
    verdicts = [
        {"checker": "lost_turns", "status": "valid", "notes": ""},
        {"checker": "exactly_once", "status": "unknown", "notes": "no backend execution log (external backend?)"},
        {"checker": "token_state", "status": "unknown", "notes": ""},
    ]
    assert unknown_summary(verdicts)["count"] == 2
    line = unknown_line(verdicts)
    assert line is not None and "\n" not in line
    assert line.startswith("UNKNOWN 2 of 3 verdicts")
    assert "exactly_once: no backend execution log" in line and "token_state: no reason given" in line
    assert unknown_line(verdicts[:1]) is None
