"""The deterministic p99 gate: a sim run of mixed_production against its committed baseline.

Simulation measures latency in virtual time, so the same code and seed give
the same percentiles on any machine; CI can gate on them without the noise
that makes live baselines hard. When a change moves the numbers on purpose,
refresh the baseline (reports/baselines/README.md) and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as harness
from harness.report.baseline import BaselineError, save_baseline

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "reports" / "baselines" / "sim" / "mixed_production"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_committed_sim_baseline_is_green_and_from_the_library_scenario() -> None:
    meta = json.loads((BASELINE / "sim.json").read_text())
    assert meta["source"] == "scenarios/mixed_production.toml"
    verdicts = json.loads((BASELINE / "verdicts.json").read_text())
    assert verdicts and all(v["status"] == "valid" for v in verdicts)
    chat_done = (BASELINE / "server_logs.jsonl").read_text().count('"event": "chat_done"')
    assert chat_done >= 1000, "p99 needs at least 1000 samples per side or compare refuses to judge"


def test_sim_p99_does_not_regress_against_the_committed_baseline(tmp_path: Path) -> None:
    meta = json.loads((BASELINE / "sim.json").read_text())
    rc = harness(
        ["run", str(ROOT / meta["source"]), "--mode", "sim", "--seed", str(meta["seed"]), "--out", str(tmp_path)]
    )
    assert rc == 0
    current = tmp_path / "mixed_production"
    out = tmp_path / "compare.json"
    rc = harness(
        ["compare", str(BASELINE), str(current), "--bucket", "total_ms", "--percentile", "99", "--json", str(out)]
    )
    assert rc == 0, out.read_text()
    # The other client-visible bucket gates too.
    assert harness(["compare", str(BASELINE), str(current), "--bucket", "client_request_ms"]) == 0
    # And the unchanged server passes every gated bucket at once (the default: lock wait, tokenize in,
    # proxy, tokenize out, total); tests/integration/test_gate_lock_wait.py is the same gate failing.
    out_all = tmp_path / "gate.json"
    assert harness(["compare", str(BASELINE), str(current), "--json", str(out_all)]) == 0, out_all.read_text()
    gate = json.loads(out_all.read_text())
    assert gate["verdict"] == "pass" and len(gate["comparisons"]) == 5


def test_baseline_refuses_a_red_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text("")
    (run / "verdicts.json").write_text(json.dumps([{"checker": "lost_turns", "status": "invalid"}]))
    with pytest.raises(BaselineError, match="lost_turns"):
        save_baseline([run], tmp_path / "dest")


def test_the_gate_fails_a_run_whose_server_got_slower(tmp_path: Path) -> None:
    """Teeth: the same samples, every server total 30% slower, must exit 1 against the baseline."""
    slow = tmp_path / "mixed_production"
    save_baseline([BASELINE], slow)
    lines = []
    for raw in (slow / "server_logs.jsonl").read_text().splitlines():
        ev = json.loads(raw)
        if ev.get("event") == "chat_done":
            ev["total_ms"] = ev["total_ms"] * 1.3
        lines.append(json.dumps(ev))
    (slow / "server_logs.jsonl").write_text("\n".join(lines) + "\n")
    assert harness(["compare", str(BASELINE), str(slow), "--bucket", "total_ms", "--percentile", "99"]) == 1


def test_exact_mode_refuses_noisy_live_runs(tmp_path: Path) -> None:
    live_like = tmp_path / "mixed_production"
    save_baseline([BASELINE], live_like)
    (live_like / "sim.json").unlink()  # now it looks like a live run: its samples carry machine noise
    assert harness(["compare", str(BASELINE), str(live_like), "--exact"]) == 2
    # Without --exact the bootstrap gate applies, and the same samples pass.
    assert harness(["compare", str(BASELINE), str(live_like)]) == 0
