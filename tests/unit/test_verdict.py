"""One verdict (harness/verdict.py): every command gives the same exit code for the same run folder.

0 pass, 1 violation / failed SLO / crashed run, 2 bad input, 3 cannot judge (fail_on_unknown).
One simulated run is recorded once (no report: plots are the expensive part) and copied per test;
each test then edits the copy the way a user's run would differ (an SLO bound, an unknown verdict).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.verdict import EXIT_CANNOT_JUDGE, EXIT_FAIL, EXIT_PASS, META_FILE, fresh_verdicts, judge, suite_exit

pytest_plugins = ("pytester",)

SCENARIO = """
name = "verdict_probe"
description = "two short sessions, nothing injected"
seed = 3
[workload]
sessions = 2
concurrency = 2
turns = [1, 1]
"""
SLO_FAIL = SCENARIO + "[slo]\np99_total_ms = 0.0001\n"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.scenario import load_scenario
    from harness.sim.runner import run_sim

    d = tmp_path_factory.mktemp("verdict")
    (d / "verdict_probe.toml").write_text(SCENARIO)
    res = run_sim(load_scenario(d / "verdict_probe.toml"), d / "out", report=False)
    assert res.run.judgement is not None and res.run.judgement.exit_code == EXIT_PASS, res.run.judgement
    return res.run.run_dir


@pytest.fixture
def run_dir(recorded: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "suite" / recorded.name
    shutil.copytree(recorded, dst)
    return dst


def _edit_scenario(run_dir: Path, **changes: object) -> None:
    path = run_dir / "scenario.json"
    sc = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "checks":
            sc["checks"].update(value)
        else:
            sc[key] = value
    path.write_text(json.dumps(sc))


def _hand_verdicts(run_dir: Path, verdicts: list[dict[str, object]]) -> None:
    """A verdicts.json written by hand (no freshness record): taken as it is."""
    (run_dir / "verdicts.json").write_text(json.dumps(verdicts))
    (run_dir / META_FILE).unlink()


UNKNOWN = [
    {"checker": "lost_turns", "status": "valid", "violations": [], "notes": ""},
    {"checker": "blocking", "status": "unknown", "violations": [], "notes": "client timing only"},
]
INVALID = [
    {"checker": "lost_turns", "status": "invalid", "violations": [{"message": "turn 2 lost", "ops": [4]}], "notes": ""}
]


def test_judge_slo_failure_and_the_unknown_policy(run_dir: Path) -> None:
    assert judge(run_dir).exit_code == EXIT_PASS
    _edit_scenario(run_dir, slo={"p99_total_ms": 0.0001})
    j = judge(run_dir)
    assert j.exit_code == EXIT_FAIL and j.verdict == "fail"
    assert any(r.startswith("SLO total_ms p99_ms <= 0.0001 ms") for r in j.reasons), j.reasons
    _edit_scenario(run_dir, slo={})
    _hand_verdicts(run_dir, UNKNOWN)
    assert judge(run_dir).exit_code == EXIT_PASS  # unknown alone: loud, not failing
    assert judge(run_dir, fail_on_unknown=True).exit_code == EXIT_CANNOT_JUDGE
    assert judge(run_dir, strict=True).exit_code == EXIT_FAIL
    _edit_scenario(run_dir, checks={"fail_on_unknown": True})
    j = judge(run_dir)
    assert j.exit_code == EXIT_CANNOT_JUDGE and j.unknown == [("blocking", "client timing only")]
    assert judge(run_dir, error="boom").exit_code == EXIT_FAIL  # a crashed run fails whatever it recorded


def test_stale_verdicts_are_rechecked_and_rewritten(run_dir: Path) -> None:
    fresh, note = fresh_verdicts(run_dir)
    assert note is None
    (run_dir / "verdicts.json").write_text(json.dumps(INVALID))  # what an older checker wrote
    meta = json.loads((run_dir / META_FILE).read_text())
    (run_dir / META_FILE).write_text(json.dumps({**meta, "checkers": "older checker code"}))
    verdicts, note = fresh_verdicts(run_dir)
    assert note is not None and "checkers changed" in note
    assert verdicts == fresh and json.loads((run_dir / "verdicts.json").read_text()) == fresh
    assert judge(run_dir).exit_code == EXIT_PASS


def test_suite_exit_fail_beats_cannot_judge_beats_pass(run_dir: Path) -> None:
    p = judge(run_dir)
    _hand_verdicts(run_dir, UNKNOWN)
    cj = judge(run_dir, fail_on_unknown=True)
    f = judge(run_dir, error="boom")
    assert suite_exit([p, p]) == 0 and suite_exit([p, cj]) == 3 and suite_exit([cj, f, p]) == 1


def test_check_rewrites_verdicts_and_report_junit_agree(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.checkers.__main__ import main as check_main
    from harness.report.cli import report_main

    (run_dir / "verdicts.json").write_text(json.dumps(INVALID))  # stale, and its record no longer matches
    assert check_main([str(run_dir)]) == EXIT_PASS
    assert "verdict: PASS (exit 0)" in capsys.readouterr().out
    assert all(v["status"] != "invalid" for v in json.loads((run_dir / "verdicts.json").read_text()))
    _edit_scenario(run_dir, slo={"p99_total_ms": 0.0001})
    assert check_main([str(run_dir)]) == EXIT_FAIL
    assert report_main([str(run_dir)]) == EXIT_FAIL  # the same answer, from the same function
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"]["exit_code"] == EXIT_FAIL and summary["verdict"]["verdict"] == "fail"
    junit = (run_dir / "junit.xml").read_text()
    assert re.search(r'<testcase [^>]*name="verdict"[^>]*>\s*<failure [^>]*type="fail"', junit), junit
    _edit_scenario(run_dir, slo={})
    _hand_verdicts(run_dir, UNKNOWN)
    assert check_main([str(run_dir), "--fail-on-unknown", "--checker", "lost_turns"]) == EXIT_PASS
    assert check_main([str(run_dir), "--checker", "no_such_checker"]) == 2
    assert check_main([str(run_dir / "nope")]) == 2


def test_run_exit_codes_and_the_summary_at_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.runner.cli import main as run_main

    monkeypatch.setenv("COLUMNS", "80")
    sc = tmp_path / "verdict_probe.toml"
    sc.write_text(SLO_FAIL)
    argv = [str(sc), "--mode", "sim", "--no-report", "--out", str(tmp_path / "out")]
    assert run_main(argv) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a tty: no colour, so every mark must be a word
    lines = out.splitlines()
    # wider than 80 only where one word is, or for what is copied or grepped whole (paths, replay, notes)
    whole = ("note:", "replay:", "report:", "history:")
    assert not [ln for ln in lines if len(ln) > 80 and " " in ln.strip() and not ln.lstrip().startswith(whole)]
    assert "verdict_probe: FAIL (exit 1)" in out
    slo_rows = [ln for ln in lines if ln.lstrip().startswith("total_ms")]
    assert slo_rows and "FAIL" in slo_rows[0] and "p99<=0.0001ms" in slo_rows[0]
    assert "[1/1] verdict_probe: checking" in out  # the phase after the workload is visible
    assert any(ln.startswith(f"  replay: harness run {sc} --seed 3") for ln in lines)  # one line, to copy
    assert out.rstrip().splitlines()[-2].startswith("failed: verdict_probe") or "failed: verdict_probe" in out


def test_run_rejects_bad_cli_input_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.runner.cli import main as run_main

    sc = tmp_path / "verdict_probe.toml"
    sc.write_text(SCENARIO)
    out = tmp_path / "out"
    base = [str(sc), "--out", str(out), "--quiet"]
    cases = {
        "--variant": [*base, "--variant", "lock_restor"],
        "--target": [*base, "--mode", "sim", "--target", "asgi:no_such_module_t14:create_app"],
        "--depth": [*base, "--mode", "sim", "--depth", "0"],
        "--seed": [*base, "--seed", "-1"],
    }
    for flag, argv in cases.items():
        assert run_main(argv) == 2, flag
        cap = capsys.readouterr()
        assert flag in cap.err and "replay" not in cap.out + cap.err, (flag, cap)
        assert not out.exists(), flag  # nothing started: no run folder
    assert run_main([*base, "--variant", "lock_restor"]) == 2
    assert "did you mean 'lock_restore'" in capsys.readouterr().err


def test_replay_exits_with_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.sim.cli import replay_main

    sc = tmp_path / "verdict_probe.toml"
    sc.write_text(SLO_FAIL)
    out = str(tmp_path / "sim")
    assert replay_main([str(sc), "--seed", "3", "--no-report", "--out", out]) == EXIT_FAIL
    assert "verdict: FAIL (exit 1)" in capsys.readouterr().out
    assert replay_main([str(sc), "--seed", "3", "--variant", "nope", "--out", out]) == 2


def test_pytest_plugin_fails_an_slo_failure(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    d = pytester.mkdir("scenarios")
    (d / "verdict_probe.toml").write_text(SLO_FAIL)
    res = pytester.runpytest_inprocess("--run-scenarios", "--scenario-mode", "sim", "-q", "scenarios")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*FAIL (exit 1*", "*SLO total_ms p99_ms <= 0.0001 ms*"])
    typo = pytester.runpytest_inprocess("--run-scenarios", "--scenario-variant", "lock_restor", "-q", "scenarios")
    typo.assert_outcomes(errors=1)  # collection fails: nothing ran
    typo.stdout.fnmatch_lines(["*unknown variant 'lock_restor'; did you mean 'lock_restore'*"])


def test_broken_pipe_gives_no_traceback() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m harness.cli run --list | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip(), proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_run_list_wraps_descriptions_at_word_boundaries(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.runner._suite import find_scenarios
    from harness.runner.cli import main as run_main
    from harness.scenario import load_scenario

    monkeypatch.setenv("COLUMNS", "80")
    assert run_main(["--list", "abort_retry_supersede"]) == 0
    lines = capsys.readouterr().out.splitlines()
    desc = load_scenario(find_scenarios(["abort_retry_supersede"])[0]).description
    body = [ln.strip() for ln in lines if ln.startswith("    ")]
    assert " ".join(body) == " ".join(desc.split())  # every word whole, none cut or dropped
    assert len(body) > 1 and all(len(ln) <= 80 for ln in lines if " " in ln.strip())


def test_summary_block_fits_80_columns_and_marks_are_words(tmp_path: Path) -> None:
    from rich.console import Console

    from harness.runner._summary import render_run
    from harness.verdict import Judgement

    long = "the backend execution log has a gap (restart, reset), so it cannot say a request never reached it " * 2
    j = Judgement(
        run="mixed_production@lock_restore+retokenize_history",
        run_dir=tmp_path,
        status="invalid",
        exit_code=EXIT_FAIL,
        verdicts=[
            {"checker": "lost_turns", "status": "invalid", "violations": [{"message": long, "ops": [1]}]},
            {"checker": "no_unexpected_5xx", "status": "unknown", "violations": [], "notes": long},
        ],
        failing=["lost_turns"],
        unknown=[("no_unexpected_5xx", long)],
        not_exercised=["http_503 (backend.rules[0])", "abort (chaos.forced_faults.abort)"],
        slo={
            "status": "fail",
            "checks": [
                {"series": "total_ms", "key": "p99_ms", "threshold_ms": 250, "status": "fail", "observed_ms": 312.5},
                {"series": "total_ms", "key": "p50_ms", "threshold_ms": 100, "status": "pass", "observed_ms": 40.1},
                {"series": "lock_wait_ms", "key": "p99_9_ms", "threshold_ms": 5, "status": "no_data"},
            ],
        },
        latency={"total_ms": {"n": 1200, "p50_ms": 40.1, "p99_ms": 312.5}, "lock_wait_ms": {"n": 3, "p50_ms": 0.0}},
    )
    block = render_run(j, width=80, report=tmp_path / "report.html", replay="harness run x --seed 1 " + "-v " * 40)
    for tty in (False, True):
        console = Console(width=80, force_terminal=tty, no_color=not tty, record=True)
        for line in block:
            console.print(line, soft_wrap=True, highlight=False)
        text = console.export_text()
        wrapped = [ln for ln in text.splitlines() if not ln.lstrip().startswith(("replay:", "report:"))]
        assert max(len(ln) for ln in wrapped) <= 80, text
        assert "  replay: harness run x --seed 1 -v -v" in text  # the command on one line, to copy
        assert "FAIL lost_turns: 1 violation(s)" in text and "UNKNOWN no_unexpected_5xx:" in text
        assert "p99<=250ms FAIL" in text and "p50<=100ms ok" in text and "p99_9<=5ms UNKNOWN" in text
        assert "declared but not exercised: http_503" in text and str(tmp_path / "report.html") in text


def test_the_gate_is_part_of_the_verdict(
    recorded: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.runner.cli import main as run_main
    from harness.verdict import Gate

    assert judge(run_dir, gate=Gate(EXIT_FAIL, ("total_ms p99 +40%",))).exit_code == EXIT_FAIL
    refused = Gate(EXIT_CANNOT_JUDGE, ("too few samples",))
    assert judge(run_dir, gate=refused).exit_code == EXIT_PASS
    assert judge(run_dir, gate=refused, fail_on_unknown=True).exit_code == EXIT_CANNOT_JUDGE
    sc = tmp_path / "verdict_probe.toml"
    sc.write_text(SCENARIO)
    argv = [str(sc), "--mode", "sim", "--no-report", "--quiet", "--out", str(tmp_path / "out")]
    # the recorded run is its baseline: 2 samples, so the real gate refuses (it needs 1,000 for p99)
    assert run_main([*argv, "--baseline", str(recorded.parent), "--fail-on-unknown"]) == EXIT_CANNOT_JUDGE
    out = " ".join(capsys.readouterr().out.split())
    assert "CANNOT JUDGE" in out and "gate: [REFUSED] verdict_probe total_ms" in out
    assert run_main([*argv, "--baseline", str(tmp_path / "nope")]) == 2
