"""A run cut by SIGTERM leaves a folder `harness check` can judge (issue 13: history written as it happens)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.checkers.__main__ import main as check_main
from harness.rundata import CUT_REASON, RUN_FILES, RunData

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
name = "cut_me"
[backend]
latency = { model = "uniform", min_ms = 150, max_ms = 300 }
[workload]
sessions = 40
concurrency = 20
turns = 6
[checks]
liveness_bound_s = 60
"""


def test_sigterm_mid_run_leaves_a_checkable_history(tmp_path: Path) -> None:
    scen = tmp_path / "cut_me.toml"
    scen.write_text(SCENARIO)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scen), "--out", str(out), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    hist = out / "cut_me" / RUN_FILES["history"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if hist.exists() and hist.stat().st_size > 20_000:  # mid-run: some batches flushed
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0, output
    run_dir = out / "cut_me"
    assert (run_dir / RUN_FILES["scenario"]).is_file()
    data = RunData.load(run_dir)
    invokes = sum(1 for e in data.history if e["type"] == "invoke")
    completions = sum(1 for e in data.history if e["type"] != "invoke")
    assert invokes > 0 and invokes == completions
    code = check_main([str(run_dir), "--json"])
    assert code in (0, 1), output  # verdicts, not "cannot read" (2)


def test_a_torn_history_reads_with_cut_ops_unknown(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / RUN_FILES["scenario"]).write_text(json.dumps({"name": "r"}))
    inv = {"type": "invoke", "op": 0, "process": "a0", "f": "create", "session": None, "server": "s", "time": 0.1}
    done = {**inv, "type": "ok", "time": 0.2, "status": 200}
    inv1 = {**inv, "op": 1, "f": "chat", "session": "x", "time": 0.3}
    (run_dir / RUN_FILES["history"]).write_text(
        "\n".join(json.dumps(e) for e in (inv, done, inv1)) + '\n{"type": "ok", "op": 1, "ti'
    )
    data = RunData.load(run_dir)
    assert [e["type"] for e in data.history] == ["invoke", "ok", "invoke", "info"]
    assert data.history[-1]["op"] == 1 and data.history[-1]["error"] == CUT_REASON


def test_a_starved_harness_is_reported_as_saturated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chat invoke blocks the agents' loop: the report must not blame the server for the client's lateness.

    Deterministic under load: the self-monitor counts one late timer firing per stretch between two of its
    own wake-ups, so stalls it does not wake between are one stall to it, and one stall is no saturation.
    Which stalls it wakes between used to be a race (a turn's answer against the monitor's timer, both ready
    in one loop pass: 1 of 8 runs on a loaded box saw the run's 8 stalls as 1). Here every turn after the
    first waits a think time first, a timer due later than the monitor's (which expired during the
    0.15 s stall), so asyncio (timers in due order, wake-ups in FIFO order) wakes the monitor between any
    two turns of a session: each session's first TURNS - 1 stalls are separate late samples, each late by
    at least 0.15 s - interval. That is MIN_LATE_SAMPLES and more, so saturation holds as long as they are
    over 1% of the samples (a round trip per turn under ~2 s), whatever the box's load.
    """
    from harness.history import History
    from harness.runner import run_scenario
    from harness.runner._selfmon import LAG_P99_LIMIT_MS, MIN_LATE_SAMPLES, SATURATED_NOTE
    from harness.scenario import parse_scenario

    turns, stall_s, think_s = 6, 0.15, 0.05
    real = History.invoke

    def slow_invoke(self: History, **kw: object) -> int:
        if kw.get("f") == "chat":
            time.sleep(stall_s)  # a CPU-bound client: the loop is blocked, timers fire late
        return real(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(History, "invoke", slow_invoke)
    sc = parse_scenario(
        {
            "name": "starved",
            "workload": {"sessions": 2, "concurrency": 2, "turns": turns, "think_time_s": think_s},
        }
    )
    res = run_scenario(sc, tmp_path)
    summary = json.loads((tmp_path / "starved" / "summary.json").read_text())
    h = summary["harness"]
    assert h["interval_ms"] / 1000.0 < think_s and stall_s - h["interval_ms"] / 1000.0 > LAG_P99_LIMIT_MS / 1000.0
    assert h["late_samples"] >= turns - 1 >= MIN_LATE_SAMPLES, h  # what the timer order guarantees
    assert any(n.startswith(SATURATED_NOTE) for n in res.notes), (res.notes, h)
    assert h["saturated"] is True
    assert SATURATED_NOTE in (tmp_path / "starved" / "report.md").read_text()
    assert res.status == "valid"  # a slow client is not a server fault
