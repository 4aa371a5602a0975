"""A correct server is never INVALID, even when the machine is starved (issue 16).

The default suite's most timing-sensitive race (a late duplicate and its twin)
runs live on the correct reference server with a busy-loop process on every
core and the harness and its servers niced below them: the client is the slow
party, as on a shared CI runner. Reduced to 4 sessions (``python -m
harness.starve``); with multi_backend_race too it cost 116 s of a clean CI run,
dominated by starting niced servers under the hogs (the whole default suite
starved takes over 25 min on a loaded box; that is ``bench/bench_flakes.py``'s
job).

Expected, as on an idle machine: no invalid verdict anywhere; and the checkers
whose verdict depends on the order the server handled a session's requests
(lost_turns, provisional, stale_writers, token_state) decide (valid), since
the reference server logs chat_start / chat_done and the fake logs its
executions: starvation may cost time, never a verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.starve import RUN_NICE, cpu_hogs, run_scaled_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# multi_backend_race (four niced server processes) doubled the cost; the sim covers it under
# client_delay_ms (tests/unit/test_sim_client_delay.py) and bench/bench_flakes.py runs it starved live
RACES = ("duplicate_inflight_retry",)
ORDER_CHECKERS = ("lost_turns", "provisional", "stale_writers", "token_state")


def verdicts(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        f.parent.name: {str(v["checker"]): v for v in json.loads(f.read_text())} for f in out.glob("*/verdicts.json")
    }


@pytest.mark.timeout(900)  # the hogs are the point: on the shared 8-engineer box it took > 5 min
def test_timing_sensitive_races_hold_their_verdicts_under_starvation(tmp_path: Path) -> None:
    with cpu_hogs(max_s=800):
        code = run_scaled_cli(tmp_path, RACES, sessions=4, nice=RUN_NICE, timeout_s=780)
    output = (tmp_path / "cli_output.txt").read_text()
    assert code == 0, output
    runs = verdicts(tmp_path)
    assert sorted(runs) == sorted(RACES), output
    false_alarms = {
        (run, c): [x.get("message") for x in v.get("violations") or []][:2]
        for run, checks in runs.items()
        for c, v in checks.items()
        if v["status"] == "invalid"
    }
    assert not false_alarms, false_alarms
    undecided = {
        (run, c): checks[c].get("notes") for run, checks in runs.items() for c in ORDER_CHECKERS if c in checks
    }
    undecided = {k: n for k, n in undecided.items() if runs[k[0]][k[1]]["status"] != "valid"}
    assert not undecided, undecided
