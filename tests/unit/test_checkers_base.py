"""Verdicts, compose(), check_all() and the re-check CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_checkers_builders import RunBuilder, clean_run

from harness.checkers import CHECKERS, Checker, Noop, Verdict, Violation, check_all, compose, run_checker
from harness.checkers.__main__ import main
from harness.rundata import RunData

VALID = Verdict("a", "valid")
UNKNOWN = Verdict("b", "unknown", [], "no logs")
INVALID = Verdict("c", "invalid", [Violation("broke", [3, 1], "s1", "k")])


def test_compose_invalid_beats_unknown_beats_valid() -> None:
    assert compose([]).status == "valid"
    assert compose([VALID]).status == "valid"
    assert compose([VALID, UNKNOWN]).status == "unknown"
    assert compose([UNKNOWN, INVALID, VALID]).status == "invalid"
    c = compose([VALID, UNKNOWN, INVALID], name="all")
    assert c.checker == "all"
    assert [x.message for x in c.violations] == ["[c] broke"]
    assert "b: unknown (no logs)" in c.notes


def test_verdict_round_trips_and_lists_ops_and_sessions() -> None:
    assert INVALID.ops == [1, 3] and INVALID.sessions == ["s1"]
    assert Verdict.from_dict(json.loads(json.dumps(INVALID.to_dict()))) == INVALID
    assert Verdict.from_dict({"checker": "x", "status": "bogus"}).status == "unknown"


def test_check_all_runs_every_checker_in_order_or_a_selection() -> None:
    run = RunBuilder().build()
    assert [v.checker for v in check_all(run)] == list(CHECKERS)
    assert [v.checker for v in check_all(run, ["liveness", "lost_turns", "liveness"])] == ["liveness", "lost_turns"]
    with pytest.raises(ValueError, match="allowed"):
        check_all(run, ["lost_turn"])


def test_every_registered_checker_satisfies_the_protocol() -> None:
    for name, c in CHECKERS.items():
        assert isinstance(c, Checker) and c.name == name
    assert isinstance(Noop(), Checker)
    assert Noop().check(RunBuilder().build()).status == "valid"


def test_a_crashing_checker_is_unknown_not_a_pass() -> None:
    class Boom:
        name = "boom"

        def check(self, run: RunData) -> Verdict:
            raise KeyError("records")

    v = run_checker(Boom(), RunBuilder().build())
    assert v.status == "unknown" and "KeyError" in v.notes


def test_checkers_survive_a_ragged_history() -> None:
    """Missing fields, completions without invokes, odd types: unknown or valid, never a crash."""
    run = RunData(
        scenario={"checks": "nonsense", "target": {"variants": "auto_create"}, "backend": {"faults": 3}},
        history=[
            {"type": "ok", "op": 99, "f": "chat", "status": 200},
            {"type": "invoke", "op": 1, "f": "chat", "session": "s", "time": 0.0},
            {"type": "info", "op": 1, "f": "chat", "session": "s", "time": 1.0, "headers": ["odd"]},
            {"type": "invoke", "op": 2, "f": "get", "session": "s", "time": 2.0},
            {"type": "ok", "op": 2, "f": "get", "session": "s", "time": 3.0, "status": 200, "body": {"records": 5}},
        ],
        final_states={"s": {"records": [{"kind": "committed"}], "metadata": []}},
        server_logs=[{"event": "chat_done"}, {"event": "heartbeat", "inflight": "x"}],
        backend_executions={"s": [{}]},
    )
    for v in check_all(run):
        assert not v.notes.startswith("checker crashed"), (v.checker, v.notes)


def test_cli_prints_a_table_and_exits_by_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    clean_run().build().save(good)
    assert main([str(good)]) == 0
    out = capsys.readouterr().out
    assert "lost_turns" in out and "valid" in out

    bad = tmp_path / "bad"
    b = RunBuilder(variants=["auto_create"])
    sid = b.create()
    b.collect_and_delete(sid)
    b.chat(sid, 0)
    b.build().save(bad)
    assert main([str(bad), "--checker", "no_resurrection"]) == 1
    assert "came back" in capsys.readouterr().out
    assert main([str(bad), "--checker", "no_resurrection", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data[0]["status"] == "invalid"

    assert main([str(good), "--checker", "exactly_once", "--strict"]) == 0
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(good), "--checker", "nope"]) == 2


def test_cli_strict_fails_on_unknown_and_on_faults_never_exercised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_log = tmp_path / "no_log"
    run = clean_run().build()
    run.backend_executions = {}
    run.save(no_log)
    assert main([str(no_log)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("UNKNOWN")]
    assert len(lines) == 1 and "exactly_once: no backend execution log" in lines[0]
    assert main([str(no_log), "--strict"]) == 1

    unfired = tmp_path / "unfired"
    run = clean_run().build()
    run.scenario["backend"]["rules"] = [{"fault": "http_503", "turn": 7}]
    run.save(unfired)
    assert main([str(unfired)]) == 0
    assert "declared but not exercised: http_503 (backend.rules[0])" in capsys.readouterr().out
    assert main([str(unfired), "--strict"]) == 1
    run.scenario["checks"]["strict"] = True  # the scenario asks for it: no flag needed
    run.save(unfired)
    assert main([str(unfired)]) == 1
