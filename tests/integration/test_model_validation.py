"""The capacity model against a real (small) live run: calibrate on it, model it, compare.

The bound is deliberately loose (p50 of total_ms within 50%): CI's machine is
shared and noisy, and a stall of the whole box moves a live p99 by tens of
percent between two identical runs (bench/results_model.md has the measured
errors and that live-vs-live spread). What this test guards is the wiring:
that a run folder calibrates, that the model reads the same scenario the
live runner ran, and that the two land in the same neighbourhood.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.model import calibrate, from_scenario, run_model
from harness.model._compare import compare_live, live_buckets
from harness.rundata import RunData
from harness.runner import run_scenario
from harness.scenario import parse_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_model_tracks_a_small_live_run(tmp_path: Path) -> None:
    sc = parse_scenario(
        {
            "name": "model_validation",
            "seed": 7,
            "target": {"processes": 1},
            "backend": {"latency": {"model": "uniform", "min_ms": 20, "max_ms": 60}},
            "workload": {"sessions": 30, "concurrency": 4, "turns": 4},
            "checks": {"enabled": ["lost_turns"]},
        },
        "<test>",
    )
    res = run_scenario(sc, tmp_path, report=False)
    assert res.status != "error", res.error
    run_dir = tmp_path / "model_validation"
    run = RunData.load(run_dir)
    live = live_buckets(run)
    assert len(live["total_ms"]) == 120

    cal = calibrate(run_dir)
    assert cal.fits["tokenize_in"].n == 120
    assert cal.fits["proxy"].n == 120  # joined with the fake's drawn latencies
    assert cal.fits["client"].n == 120  # joined with the history
    params = cal.apply(from_scenario(sc)).as_live(os.cpu_count() or 1)
    result = run_model(params)
    assert result.outcomes["committed"] == 120
    cmp = compare_live(result, live)
    total = cmp["total_ms"]
    assert abs(total["p50_err"]) < 0.5, total
    # the backend dominates: the proxy bucket must be close whatever the machine does
    assert abs(cmp["proxy_elapsed_ms"]["p50_err"]) < 0.3, cmp["proxy_elapsed_ms"]
