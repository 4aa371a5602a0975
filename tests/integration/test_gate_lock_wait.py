"""The gate on a real server change: ``lock_restore`` raises lock_wait_ms p99 while total_ms barely moves.

mixed_production in simulation (virtual time: deterministic, machine-independent) against the committed
sim baseline. Holding the session lock across the backend call makes an in-flight duplicate or delete
wait for the whole proxy phase: lock_wait_ms p99 goes from ~0 to milliseconds, while total_ms p99
(the backend's latency tail) does not rise. A one-bucket gate on total_ms passes it; the per-bucket
gate must not. The unchanged server passing every bucket is
tests/integration/test_sim_baseline_gate.py. Cost: one sim run of mixed_production, 22 s CPU
(measured on a loaded 2-core box).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as harness
from harness.report.compare import gate_verdict

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "reports" / "baselines" / "sim" / "mixed_production"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_gate_fails_lock_restore_on_lock_wait_alone(tmp_path: Path) -> None:
    meta = json.loads((BASELINE / "sim.json").read_text())
    args = ["run", str(ROOT / meta["source"]), "--mode", "sim", "--seed", str(meta["seed"])]
    assert harness([*args, "--variant", "lock_restore", "--out", str(tmp_path), "--quiet"]) == 0
    current = tmp_path / "mixed_production"
    res = gate_verdict(BASELINE, current)
    by = {c.bucket: c for c in res.comparisons}
    assert res.verdict == "regression" and res.exit_code == 1, res.message
    assert [c.bucket for c in res.regressions] == ["lock_wait_ms"], res.message
    lock, total = by["lock_wait_ms"], by["total_ms"]
    assert lock.mode == "exact" and lock.abs_change_ms is not None and lock.abs_change_ms > lock.floor_ms
    assert total.verdict != "regression" and total.change is not None and total.change <= total.threshold
    # the old one-bucket gate on total_ms alone lets it through
    assert harness(["compare", str(BASELINE), str(current), "--bucket", "total_ms"]) == 0
    assert harness(["compare", str(BASELINE), str(current)]) == 1
