"""A correct server is never INVALID, even when the machine is starved (issue 16).

The default suite runs twice on the correct reference server: once on an idle
machine, once with a busy-loop process on every core and the harness and its
servers niced below them (the client is the slow party, as on a shared CI
runner). The starved run must have no invalid verdict, and every checker's
status must be the one of the idle run: starvation may cost time, never a
verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.starve import RUN_NICE, cpu_hogs, run_suite_cli, suite_verdicts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _statuses(runs: dict[str, dict[str, dict[str, object]]]) -> dict[str, dict[str, object]]:
    return {run: {c: v["status"] for c, v in checks.items()} for run, checks in runs.items()}


def test_default_suite_verdicts_hold_under_starvation(tmp_path: Path) -> None:
    idle_code = run_suite_cli(tmp_path / "idle")
    idle = suite_verdicts(tmp_path / "idle")
    assert idle, (tmp_path / "idle" / "cli_output.txt").read_text()
    with cpu_hogs():
        starved_code = run_suite_cli(tmp_path / "starved", nice=RUN_NICE)
    starved = suite_verdicts(tmp_path / "starved")
    false_alarms = {
        (run, checker): v["first"]
        for run, checks in starved.items()
        for checker, v in checks.items()
        if v["status"] == "invalid"
    }
    assert not false_alarms, false_alarms
    assert _statuses(starved) == _statuses(idle)
    assert starved_code == idle_code == 0, (tmp_path / "starved" / "cli_output.txt").read_text()
