"""``harness explore`` / ``harness replay``: the first violation, its replay command, the same digest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.sim.cli import explore_main, replay_main
from harness.sim.explore import explore

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_explore_reports_the_violation_and_replay_gives_the_same_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = tmp_path / "found"
    argv = ["delete_during_proxy", "--seeds", "6", "--jobs", "1", "--variant", "no_closing_recheck"]
    rc = explore_main([*argv, "--out", str(tmp_path / "sim"), "--found-dir", str(found)])
    out = capsys.readouterr().out
    assert rc == 1
    m = re.search(r"VIOLATION at seed (\d+) \(strategy random\)", out)
    assert m, out
    seed = m.group(1)
    assert "no_resurrection: invalid" in out
    assert f"replay: harness replay scenarios/delete_during_proxy.toml --seed {seed} --strategy random" in out
    trace = Path(re.search(r"trace:\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    assert trace.exists() and trace.read_text().count("\n") > 100
    digest = re.search(r"digest: history (\w+)", out).group(1)  # type: ignore[union-attr]
    assert list(found.glob("delete_during_proxy-*.toml")), out

    replay = ["delete_during_proxy", "--seed", seed, "--variant", "no_closing_recheck", "--no-report"]
    rc = replay_main([*replay, "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"history digest {digest}" in out


def test_explore_correct_server_exits_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = explore_main(["abort_retries_exhausted", "--seeds", "3", "--jobs", "1", "--strategy", "pct"])
    assert rc == 0
    assert "3 seeds (pct), no violation" in capsys.readouterr().out


def test_results_do_not_depend_on_jobs() -> None:
    path = str(SCENARIOS / "duplicate_inflight_retry.toml")
    one = explore(path, range(4), "random", variant="no_num_assistant_guard", jobs=1, stop_on_first=False)
    two = explore(path, range(4), "random", variant="no_num_assistant_guard", jobs=2, stop_on_first=False)
    assert [(r.seed, r.status, r.history_digest) for r in one] == [(r.seed, r.status, r.history_digest) for r in two]


def test_bad_input_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert explore_main(["no_such_scenario_xyz", "--seeds", "1"]) == 2
    assert explore_main(["abort_retries_exhausted", "--seeds", "0"]) == 2
    assert "no such scenario" in capsys.readouterr().err
