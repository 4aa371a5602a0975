"""``harness run``: one line per run says what was not checked; ``--strict`` and ``[checks] strict`` fail on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner.cli import main

SCENARIO = """
name = "strict_probe"
description = "two short sessions; a backend rule for a turn no session reaches"
seed = 3
[backend]
[[backend.rules]]
turn = 9
fault = "http_503"
[workload]
sessions = 2
concurrency = 2
turns = [1, 1]
"""


@pytest.mark.slow
def test_run_prints_the_unexercised_fault_and_strict_fails_on_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = tmp_path / "strict_probe.toml"
    sc.write_text(SCENARIO)
    argv = [str(sc), "--mode", "sim", "--quiet", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "strict_probe: PASS (exit 0)" in out
    assert "UNKNOWN declared but not exercised: http_503 (backend.rules[0])" in " ".join(out.split())
    assert main([*argv, "--strict"]) == 1
    assert "strict" in capsys.readouterr().out
    sc.write_text(SCENARIO.replace("[workload]", "[checks]\nstrict = true\n[workload]"))
    assert main(argv) == 1
    sc.write_text(SCENARIO.replace("turn = 9", "turn = 0"))
    assert main([*argv, "--strict"]) == 0
