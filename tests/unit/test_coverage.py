"""harness coverage: the rules file, the facets, the gap rules, and docs/coverage.md kept current.

The document is regenerated from simulation (deterministic) and compared with
the committed one: a change to a scenario, a checker, the server or the rules
that moves any cell makes the test fail until `harness coverage` is re-run.
That regeneration runs the whole plan (47 simulated runs, ~27 s of CPU) and
is marked slow, as is the gap-rule test (9 small runs, ~5 s of CPU); the rest
is cheap.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.checkers import CHECKERS
from harness.cli import main as harness_main
from harness.coverage import FACETS, CoverageError, count_facets, load_plan, load_proofs, load_rules
from harness.coverage.cli import main as coverage_main
from harness.rundata import RunData

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "coverage.md"
SCENARIOS = ROOT / "scenarios"


def test_every_rule_has_a_checker_and_facets_that_exist() -> None:
    rules = load_rules()
    assert len(rules) >= 30
    for r in rules:
        assert r.checkers, f"{r.id} has no checker"
        assert set(r.checkers) <= set(CHECKERS), r.id
        assert r.facets and set(r.facets) <= set(FACETS), r.id
    assert len({r.id for r in rules}) == len(rules)
    assert load_plan().seeds
    assert load_proofs()


def test_every_registered_checker_is_some_rules_checker() -> None:
    used = {c for r in load_rules() for c in r.checkers}
    assert set(CHECKERS) - used == set(), "a checker that guards no rule of CONTEXT.md"


def test_a_bad_rules_file_names_the_rule_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text(
        textwrap.dedent(
            """
            [[rule]]
            id = "X1"
            title = "t"
            section = "s"
            text = "x"
            facets = ["no_such_facet"]
            checkers = { lost_turns = [] }
            """
        )
    )
    with pytest.raises(CoverageError, match=r"rule\[0\] \(X1\): unknown facet.*allowed"):
        load_rules(bad)
    bad.write_text(bad.read_text().replace("no_such_facet", "create").replace("lost_turns", "lost_turnz"))
    with pytest.raises(CoverageError, match=r"unknown checker.*lost_turnz"):
        load_rules(bad)
    assert coverage_main(["--rules", str(bad), "--check", "--out", str(tmp_path / "c.md")]) == 2


def test_bad_input_on_the_command_line_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert coverage_main(["--scenarios", "no_such_scenario", "--out", str(tmp_path / "c.md")]) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert coverage_main(["--from-runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.md")]) == 2
    assert not (tmp_path / "c.md").exists()


def test_the_subcommand_is_wired_with_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert harness_main(["--help"]) == 0
    assert "coverage" in capsys.readouterr().out
    assert harness_main(["coverag"]) == 2
    assert "did you mean 'coverage'" in capsys.readouterr().err


def _op(index: int, op: int, f: str, t: float, end: float, sid: str, **completion: Any) -> list[dict[str, Any]]:
    inv = {"index": index, "type": "invoke", "op": op, "f": f, "session": sid, "time": t, "process": f"p{op}"}
    done = {"index": index + 1, "type": "ok", "op": op, "f": f, "session": sid, "time": end, "process": f"p{op}"}
    done.update(completion)
    return [inv, done]


def test_facets_count_what_happened_not_what_was_asked() -> None:
    history = (
        _op(0, 1, "create", 0.0, 0.01, "s1", status=200)
        + _op(2, 2, "chat", 0.01, 0.50, "s1", status=200, headers={"x-sglang-aborted": "1"}, finish_reason="stop")
        + _op(4, 3, "delete", 0.20, 0.30, "s1", status=204)
        + _op(6, 4, "delete", 0.25, 0.35, "s1", status=404)
        + _op(8, 5, "get", 0.40, 0.41, "s1", status=404)
    )
    run = RunData(
        # the scenario asks for hang faults and streams: neither happened, so neither counts
        scenario={"backend": {"faults": ["hang"]}, "agent": {"stream_probability": 1.0}},
        history=history,
        backend_executions={"s1": [{"request_id": "r", "finish_reason": "abort", "completion_tokens": 0}]},
    )
    n = count_facets(run)
    assert n["concurrent_deletes"] == 1
    assert n["delete_during_proxy"] == 2
    assert n["after_delete"] == 1  # the GET; the second DELETE overlapped the first
    assert n["abort_answered"] == 1 and n["abort_remapped"] == 1 and n["retries_exhausted"] == 1
    assert n["abort_zero_tokens"] == 1 and n["abort_partial"] == 0
    assert n["backend_slow"] == 0 and n["stream"] == 0
    assert n["passthrough"] == 0 and n["wrong_process"] == 0


def _tiny_rules(tmp_path: Path, *, with_gap: str | None) -> tuple[Path, Path]:
    rules = tmp_path / "rules.toml"
    gap = f'gap = "{with_gap}"\n' if with_gap else ""
    rules.write_text(
        textwrap.dedent(
            """
            [plan]
            seeds = [0]

            [[rule]]
            id = "T1"
            title = "hostile input gets a 4xx"
            section = "What real servers and real models do"
            text = "x"
            facets = ["fuzz_malformed"]
            checkers = { bad_input = ["status_5xx"] }

            [[rule]]
            id = "T2"
            title = "the wrong process answers 404"
            section = "Multi-backend deployment"
            text = "y"
            facets = ["wrong_process"]
            checkers = { bad_input = [] }
            """
        )
        + gap
    )
    proofs = tmp_path / "proofs.toml"
    proofs.write_text('[[proof]]\nbug = "crash_on_bad_json"\nscenario = "malformed_requests"\nseed = 0\n')
    return rules, proofs


@pytest.mark.slow
def test_a_rule_no_run_exercises_fails_the_check_unless_declared(tmp_path: Path) -> None:
    """Three times three simulated runs of malformed_requests (~5 s CPU): T1 is exercised and proven, T2 never
    happens there."""
    rules, proofs = _tiny_rules(tmp_path, with_gap=None)
    out = tmp_path / "coverage.md"
    args = ["--rules", str(rules), "--proofs", str(proofs), "--scenarios-dir", str(SCENARIOS), "--jobs", "1"]
    args += ["--scenarios", "malformed_requests"]
    assert coverage_main([*args, "--out", str(out)]) == 1  # written, but T2 is a gap
    text = out.read_text()
    assert "| T1 | hostile input gets a 4xx | ok | malformed_requests |" in text
    assert "| T2 | the wrong process answers 404 | **GAP** | **none** |" in text
    assert "`bad_input` (status_5xx)" in text  # the proof was computed: crash_on_bad_json trips it
    rules, _ = _tiny_rules(tmp_path, with_gap="no scenario with one process sends to the wrong one")
    assert coverage_main([*args, "--out", str(out)]) == 0
    assert coverage_main([*args, "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("known gap", "ok"))
    assert coverage_main([*args, "--out", str(out), "--check"]) == 1  # stale


@pytest.mark.slow
def test_docs_coverage_md_is_current_and_has_no_undeclared_gap(capsys: pytest.CaptureFixture[str]) -> None:
    """Regenerates docs/coverage.md (the whole plan in simulation: ~30 s CPU idle, more on a loaded box)."""
    rc = coverage_main(["--check", "--out", str(DOC), "--scenarios-dir", str(SCENARIOS)])
    err = capsys.readouterr().err
    assert rc == 0, f"docs/coverage.md is stale or has a gap; run `harness coverage`:\n{err}"


def test_mutants_killed_per_checker_are_read_from_harness_mutate_output(tmp_path: Path) -> None:
    from harness.coverage._compute import load_mutants

    f = tmp_path / "mutants.jsonl"
    rows = [
        {"id": "a1", "status": "killed", "killed_by": {"checkers": ["no_unexpected_5xx", "lost_turns"]}},
        {"id": "b2", "status": "survived", "killed_by": None},
        {"id": "c3", "status": "killed", "killed_by": {"checkers": ["no_unexpected_5xx"]}},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_mutants(f) == {"lost_turns": ["a1"], "no_unexpected_5xx": ["a1", "c3"]}
    f.write_text("not json\n")
    with pytest.raises(CoverageError, match="line 1 is not JSON"):
        load_mutants(f)
    assert coverage_main(["--mutants", str(f), "--out", str(tmp_path / "c.md")]) == 2  # before any run


def test_without_runs_every_rule_is_a_gap_and_mutants_get_their_own_section() -> None:
    from harness.coverage import Coverage, render

    rules = load_rules()
    cov = Coverage(rules, load_plan(), [], [], [], mutants={"lost_turns": ["a1"]}, mutants_source="m.jsonl")
    assert len(cov.problems()) == len([r for r in rules if not r.gap])  # nothing exercised, nothing proven
    text = render(cov)
    assert text.count("**GAP**") == len([r for r in rules if not r.gap])
    assert "| `lost_turns` | 1 | `a1` |" in text
    assert "(killed none)" in text
