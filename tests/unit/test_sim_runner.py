"""Simulation runs are a pure function of (scenario, seed, strategy): madsim's "run twice, compare".

Every library scenario runs twice on one seed and must give the same history
digest (history + server log lines) and the same trace digest; a different
seed must give a different interleaving. The run folder is the live one plus
trace.txt and sim.json, and nothing from the wall clock, the OS pid or a
global counter leaks into it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.rundata import RUN_FILES
from harness.scenario import Scenario, expand_variants, load_scenario
from harness.sim.runner import pct_horizon, run_sim, simulate, with_seed
from harness.sim.world import BASE_PID, EPOCH

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
LIBRARY = sorted(p.stem for p in SCENARIOS.glob("*.toml"))


def _load(name: str, seed: int, variant: str | None = None) -> Scenario:
    sc = expand_variants(load_scenario(SCENARIOS / f"{name}.toml"))[0]
    return with_seed(sc, seed, variant)


# Determinism does not depend on a run's size: the two largest scenarios (ci_gate 450 sessions,
# mixed_production 300) run here at this many sessions, the same workload mix and faults.
DETERMINISM_SESSIONS = 60


def _capped(name: str, seed: int) -> Scenario:
    sc = _load(name, seed)
    if sc.workload.script or sc.workload.sessions <= DETERMINISM_SESSIONS:
        return sc
    return dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=DETERMINISM_SESSIONS))


@pytest.mark.parametrize("name", LIBRARY)
def test_same_seed_same_history_and_trace(name: str) -> None:
    a = simulate(_capped(name, 5), 5, "random")
    b = simulate(_capped(name, 5), 5, "random")
    assert a.error is None, a.error
    assert a.history_digest == b.history_digest
    assert a.trace_digest == b.trace_digest
    assert a.trace == b.trace
    c = simulate(_capped(name, 6), 6, "random")
    assert c.trace_digest != a.trace_digest, "another seed must explore another interleaving"


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_same_workload_other_schedule(strategy: str) -> None:
    """The seed of the strategy alone changes the interleaving (same workload, same backend draws)."""
    sc = _load("delete_during_proxy", 1)
    digests = {simulate(sc, s, strategy).trace_digest for s in range(4)}
    assert len(digests) > 1


def test_pct_horizon_comes_from_a_first_run_and_is_seed_independent() -> None:
    k = pct_horizon(_load("abort_retries_exhausted", 3))
    assert k == pct_horizon(_load("abort_retries_exhausted", 9))
    assert k == simulate(_load("abort_retries_exhausted", 0), 0, "fifo").steps


def test_run_folder_trace_and_no_leaks(tmp_path: Path) -> None:
    sc = load_scenario(SCENARIOS / "process_kill_restart.toml")
    r1 = run_sim(sc, tmp_path / "a", 4, "random", report=False)
    r2 = run_sim(sc, tmp_path / "b", 4, "random", report=False)
    assert r1.status == "valid", r1.run.verdicts
    d = r1.run.run_dir
    for f in (*(v for k, v in RUN_FILES.items() if k != "harness"), "trace.txt", "sim.json"):  # sim: no self-monitor
        assert (d / f).exists(), f
    assert (d / "history.jsonl").read_bytes() == (r2.run.run_dir / "history.jsonl").read_bytes()
    assert (d / "server_logs.jsonl").read_bytes() == (r2.run.run_dir / "server_logs.jsonl").read_bytes()
    meta = json.loads((d / "sim.json").read_text())
    assert meta["history_digest"] == r1.history_digest and meta["seed"] == 4
    assert len((d / "trace.txt").read_text().splitlines()) > 100
    logs = [json.loads(x) for x in (d / "server_logs.jsonl").read_text().splitlines()]
    assert {ln["pid"] for ln in logs} <= {BASE_PID, BASE_PID + 1, BASE_PID + 100, BASE_PID + 101}
    assert all(EPOCH <= ln["ts"] < EPOCH + 60 for ln in logs), "log timestamps are virtual, from the fixed epoch"
    history = [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    assert max(ev["time"] for ev in history) < 60
    kills = [ev for ev in history if ev["f"] == "chaos" and isinstance(ev.get("value"), dict)]
    assert {"kill", "restart"} <= {ev["value"].get("action") for ev in kills}


def test_latency_buckets_are_virtual_and_deterministic(tmp_path: Path) -> None:
    sc = load_scenario(SCENARIOS / "abort_retries_exhausted.toml")
    a = run_sim(sc, tmp_path / "a", 2, "random", report=True)
    b = run_sim(sc, tmp_path / "b", 2, "random", report=True)
    sa = json.loads((a.run.run_dir / "summary.json").read_text())
    sb = json.loads((b.run.run_dir / "summary.json").read_text())
    assert sa["latency"] == sb["latency"], "virtual-time percentiles are exact: CI can gate on them"
    assert sa["percentiles"] == sb["percentiles"]
    p99 = sa["latency"]["client"]["client_request_ms"]["all"]["p99_ms"]
    assert 0 < p99 < 1000, "client latency in virtual ms (backend 5-20 ms), not wall-clock"


def test_run_scenario_has_the_live_signature(tmp_path: Path) -> None:
    from harness.sim.runner import run_scenario

    sc = load_scenario(SCENARIOS / "abort_retries_exhausted.toml")
    r = run_scenario(sc, tmp_path, None, 3, run_name="x", report=False, strategy="pct", depth=2)
    assert r.status == "valid" and r.run_dir == tmp_path / "x" and r.seed == 3
    assert json.loads((r.run_dir / "sim.json").read_text())["strategy"] == "pct"


def test_unbuildable_target_is_an_error_run_not_a_traceback(tmp_path: Path) -> None:
    from harness.scenario import parse_scenario
    from harness.sim.runner import run_scenario

    sc = parse_scenario({"name": "u", "target": {"kind": "urls", "urls": ["http://127.0.0.1:1"]}})
    r = run_scenario(sc, tmp_path, None, 1)
    assert r.status == "error" and "asgi:module:factory" in (r.error or "")
    r = run_scenario(load_scenario(SCENARIOS / "abort_retries_exhausted.toml"), tmp_path, None, 1, target="asgi:x")
    assert r.status == "error" and "--target" in (r.error or "")
