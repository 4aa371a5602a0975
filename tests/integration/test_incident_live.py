"""Incidents end to end over real processes: a live run's log in, a reproducing scenario out.

The unit tests replay the committed logs in simulation. Here the whole path
runs as an on-call engineer would: the reference server (real uvicorn
processes) and the fake SGLang produce an incident under faults, its
``server_logs.jsonl`` is imported, and the simulated replay shows the same
outcomes; and a shipped incident replayed *live* (real sockets, wall-clock
latencies) still reproduces, which is what ``done_s`` causality is for.
Small scenarios only: the machine is shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.incident import compare, expected_outcomes, replay, replay_outcomes
from harness.incident.cli import main as incident_main
from harness.rundata import RunData
from harness.runner import run_scenario
from harness.scenario import load_scenario

pytestmark = pytest.mark.integration

INCIDENTS = Path(__file__).resolve().parents[2] / "scenarios" / "incidents"


def test_live_incident_log_imports_to_a_reproducing_scenario(tmp_path: Path) -> None:
    src = load_scenario(INCIDENTS / "sources" / "delete_mid_proxy.toml")
    res = run_scenario(src, tmp_path / "live", report=False)
    log = res.run_dir / "server_logs.jsonl"
    assert log.is_file()
    out = tmp_path / "fresh_incident.toml"
    assert incident_main(["import", str(log), "-o", str(out)]) == 0
    sc = load_scenario(out)
    outcomes = expected_outcomes(sc)
    assert "closing_skip" in {o.rpartition(":")[2] for o in outcomes}  # the source provokes it
    check = replay(sc, 0)
    assert check.reproduced, check.report()


@pytest.mark.parametrize("name", ["delete_mid_proxy", "dup_retry_race", "abort_weight_update"])
def test_shipped_incident_reproduces_live(name: str, tmp_path: Path) -> None:
    sc = load_scenario(INCIDENTS / f"{name}.toml")
    res = run_scenario(sc, tmp_path, report=False)
    assert res.status == "valid", res.error
    run = RunData.load(res.run_dir)
    check = compare(expected_outcomes(sc), replay_outcomes(run.history, run.server_logs))
    assert check.reproduced, check.report()
