"""``harness model``: scenario, params file and run folder inputs; calibration; compare; sweep; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as harness_main
from harness.model import load_params
from harness.model.cli import load_input, main
from harness.rundata import RunData

try:
    from tests.unit.test_model_calibrate import stalled_lines, synthetic_lines
except ImportError:  # pragma: no cover - run from inside tests/unit
    from test_model_calibrate import stalled_lines, synthetic_lines  # type: ignore[no-redef]

SCENARIO = """
name = "tiny"
seed = 4

[target]
processes = 2
variants = ["lock_restore"]
server_args = ["--no-tokenize-thread"]

[backend]
latency = { model = "uniform", min_ms = 5, max_ms = 15 }

[[backend.rules]]
fault = "abort"
probability = 0.1

[workload]
sessions = 30
concurrency = 6
turns = [2, 3]

[slo]
p99_total_ms = 50
"""

PARAMS = """
name = "plain"
seed = 2

[deployment]
processes = 3
tokenize_in_thread = false

[workload]
sessions = 40
concurrency = 8
turns = 3

[tokens]
first_prompt_tokens = 80

[costs]
tokenize_in_ms = 1.5

[backend]
latency = { model = "fixed", ms = 20 }
"""


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(SCENARIO)
    return p


def test_scenario_input_reads_workload_backend_and_target(scenario: Path) -> None:
    params, slo = load_input(str(scenario))
    assert params.name == "tiny"
    assert params.deployment.processes == 2
    assert params.deployment.lock_restore is True
    assert params.deployment.tokenize_in_thread is False
    assert params.workload.turns == (2, 3)
    assert params.plan.latency.model == "uniform"
    assert params.plan.rules[0].fault.name == "abort"
    assert slo == {"total_ms": 50.0}


def test_params_file(tmp_path: Path) -> None:
    p = tmp_path / "plain.toml"
    p.write_text(PARAMS)
    params = load_params(p)
    assert params.deployment.processes == 3
    assert params.workload.turns == (3, 3)
    assert params.tokens.first_prompt_tokens == 80
    assert params.costs.tokenize_in_ms == 1.5
    assert params.plan.latency.ms == 20.0
    assert main([str(p)]) == 0


def test_run_prints_percentiles_and_writes_summary_and_plot(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([str(scenario), "--sessions", "12", "--processes", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "total_ms" in text and "p99 ms" in text and "outcomes:" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["buckets"]["total_ms"]["n"] == summary["requests"] > 12
    assert summary["params"]["deployment"]["processes"] == 1
    assert (out / "buckets.png").read_bytes()[:4] == b"\x89PNG"


def test_dispatch_through_harness_cli(scenario: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert harness_main(["model", str(scenario), "--sessions", "5"]) == 0
    assert "lock_wait_ms" in capsys.readouterr().out


def test_sweep_writes_the_capacity_chart(scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    rc = main([str(scenario), "--sweep", "--sweep-processes", "1,2,4", "--sweep-agents", "4,16", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "min processes" in text  # the scenario's p99 SLO is the line on the chart
    data = json.loads((out / "sweep.json").read_text())
    assert len(data["points"]) == 6
    assert data["slo_ms"] == 50.0
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_from_a_run_folder_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines, drawn = synthetic_lines(n_sessions=8, turns=4)
    execs = {"k": [{"request_id": c, "latency_ms": ms} for c, ms in drawn.items()]}
    scenario = {
        "name": "synthetic",
        "seed": 1,
        "backend": {"plan": {"latency": {"model": "uniform", "min_ms": 10, "max_ms": 50}}},
        "workload": {"sessions": 8, "concurrency": 2, "turns": [4, 4]},
        "target": {"processes": 1, "server_args": ["--no-tokenize-thread"]},
    }
    run = tmp_path / "run"
    RunData(scenario=scenario, history=[], backend_executions=execs, server_logs=lines).save(run)
    out = tmp_path / "out"
    rc = main([str(run), "--calibration", str(run), "--compare", str(run), "--as-live", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "calibration from" in text and "R^2" in text
    assert "model against live run" in text
    assert (out / "calibration.json").exists() and (out / "calibration.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compare"]["buckets"]["total_ms"]["n_live"] == 33  # every chat_done line, as the model
    # a saved calibration works as well as the folder
    assert main([str(run), "--calibration", str(out / "calibration.json")]) == 0


def test_bad_input_is_exit_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[deployment]\nprocesess = 2\n")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "deployment.procesess" in err and "did you mean 'processes'" in err
    typo = tmp_path / "typo.toml"
    typo.write_text('name = "t"\n[workload]\nsesions = 3\n')
    assert main([str(typo)]) == 2
    assert "sesions" in capsys.readouterr().err


def test_stalls_from_a_params_file_and_calibration_switch_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "stalls.toml"
    p.write_text(
        "[deployment]\nprocesses = 1\n[workload]\nsessions = 200\nconcurrency = 10\nturns = 5\n"
        '[backend]\nlatency = { model = "fixed", ms = 10 }\n[stalls]\nrate_per_s = 3.0\ndurations_ms = [50.0]\n'
    )
    params = load_params(p)
    assert params.stalls.enabled and params.stalls.durations_ms == (50.0,)
    assert main([str(p)]) == 0
    assert "stalls:" in capsys.readouterr().out
    bad = tmp_path / "bad_stalls.toml"
    bad.write_text("[stalls]\nrate = 1\n")
    assert main([str(bad)]) == 2
    assert "stalls.rate" in capsys.readouterr().err
    # a calibration that found stalls applies them unless --no-stalls
    lines, drawn, _ = stalled_lines(seconds=60.0)
    execs = {"k": [{"request_id": c, "latency_ms": ms} for c, ms in drawn.items()]}
    scenario = {"name": "st", "seed": 1, "workload": {"sessions": 20, "concurrency": 4, "turns": [3, 3]}}
    run = tmp_path / "run"
    RunData(scenario=scenario, history=[], backend_executions=execs, server_logs=lines).save(run)
    out = tmp_path / "out"
    assert main([str(run), "--calibration", str(run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stalls: " in text and "per process" in text
    assert json.loads((out / "summary.json").read_text())["params"]["stalls"]["rate_per_s"] > 0
    assert main([str(run), "--calibration", str(run), "--no-stalls", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["params"]["stalls"]["rate_per_s"] == 0
