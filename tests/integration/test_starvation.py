"""A correct server is never INVALID, even when the machine is starved (issue 16).

The whole default suite runs live on the correct reference server with a
busy-loop process on every core the harness and its servers may use (they are
pinned to one core, with one hog on it) and them niced below it: the client is
the slow party, as on a shared CI runner. Each scenario is
scaled down to the fewest sessions that still run its race (``SESSIONS``,
``python -m harness.starve``), and the hogs are stopped while server processes
start (and restart) and while a finished run is checked: a verdict depends on
the order of what happened while the sessions ran, not on how long a niced
process took to import its libraries under the hogs, which cost most of this
test's time when the hogs ran throughout (bench/bench_startup.py measures a
start). Cost: 149 s in CI (2 idle cores, before the idle comparison was added), 520 s on the shared 2-core
box at load 8.5 with it (the idle part 47 s); one scenario with the hogs throughout took 181 s, with them
stopped during startup and checking 40 s (load ~12). Pinned to one core with one hog (the other core
left to the suite's other worker): 143 s alone at load 1-6, 262 s in the whole suite at load ~9 (it was
419 s there with two hogs, load ~8-17). The full-size suite starved is
``bench/bench_flakes.py``'s job.

Expected, as on an idle machine: no invalid verdict anywhere; the checkers
whose verdict depends on the order the server handled a session's requests
(lost_turns, provisional, stale_writers, token_state) decide (valid), since
the reference server logs chat_start / chat_done and the fake logs its
executions; and the races once judged from client timing (``IDLE_COMPARED``)
give the same verdicts as an idle run of the same scaled scenarios, checker by
checker, except that a checker judging partly from the client's own view
(``CLIENT_VIEW``) may lose a decision to unknown, with its reason: starvation
may cost time and certainty, never a verdict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness.runner._suite import SCENARIO_DIR, find_scenarios
from harness.starve import RUN_NICE, cpu_hogs, run_scaled_cli

pytestmark = [pytest.mark.integration]

# The default suite, most timing-sensitive race first (if the run is cut, the races that matter most have run),
# each at the fewest sessions that still run its race: a late duplicate and its twin, four processes racing, an
# aborted copy and its committed twin, the DELETE races, then the fault paths; a kill at 0.8 s needs sessions
# still in flight then, and rapid_lifecycle's one-turn sessions need a few to overlap on two processes.
SESSIONS = {
    "duplicate_inflight_retry": 4,
    "multi_backend_race": 6,
    "abort_retry_supersede": 4,
    "variant_comparison": 4,
    "delete_during_proxy": 4,
    "client_disconnect": 4,
    "delete_storm": 8,
    "process_kill_restart": 8,
    "tool_retry_rollback": 4,
    "rapid_lifecycle": 10,
    "transport_faults": 6,
    "litellm_abort_remap": 4,
    "abort_retries_exhausted": 3,
}
# variant_comparison's one run here: the lock held across the backend call, where an aborted copy processed
# after its committed twin was once a false alarm (provisional_not_superseded). Its other three variants
# (default, conflict_409, delete_cancel: 3 more server starts under the hogs, ~30 s of CI's budget) run starved
# in bench/bench_flakes.py, and the default variant's races are the other scenarios' own.
ONLY_VARIANT = {"variant_comparison": "lock_restore"}
RUNS = [f"{n}@{ONLY_VARIANT[n]}" if n in ONLY_VARIANT else n for n in SESSIONS]
# The races whose verdict was once decided from client timing (issue 16's false alarms), run idle too: the
# starved verdicts must be the same as these, checker by checker (the others: no invalid, order checkers valid).
IDLE_COMPARED = ["duplicate_inflight_retry", "multi_backend_race", "abort_retry_supersede", RUNS[3]]
ORDER_CHECKERS = ("lost_turns", "provisional", "stale_writers", "token_state")
# Checkers whose evidence is partly the client's own view, which starvation degrades: they may lose a decision
# (valid idle, unknown starved, with the reason), never gain a violation. Seen in this test: a create the
# starved client timed out on leaves a session the client never learned of (leaks: the excess is explained or
# a leak, both fit); a DELETE that completed after a chat's proxy phase either waited behind it or reached the
# server late (blocking: no line CONTEXT.md promises says when a DELETE arrived); a timed-out request is
# judged by the server's clock where there is one (liveness).
CLIENT_VIEW = {"leaks", "blocking", "liveness"}


def verdicts(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        f.parent.name: {str(v["checker"]): v for v in json.loads(f.read_text())} for f in out.glob("*/verdicts.json")
    }


def test_every_default_scenario_has_a_starved_size() -> None:
    default = {p.stem for p in find_scenarios([], suite="default", root=SCENARIO_DIR)}
    assert set(SESSIONS) == default, "give a new default-suite scenario its session count here"


@pytest.mark.slow
@pytest.mark.timeout(900)  # the hogs are the point: on the shared 8-engineer box it took > 5 min
def test_default_suite_holds_its_verdicts_under_starvation(tmp_path: Path) -> None:
    idle_code = run_scaled_cli(tmp_path / "idle", IDLE_COMPARED, sessions=SESSIONS, timeout_s=300)
    assert idle_code == 0, (tmp_path / "idle" / "cli_output.txt").read_text()
    # the harness and its servers on one core, with a hog on it: starved on every core it has, while the other
    # cores stay free for the suite's other worker (two hogs on CI's two cores took both from it as well)
    cpus = [max(os.sched_getaffinity(0))]
    with cpu_hogs(max_s=800, cpus=cpus) as hogs:
        code = run_scaled_cli(
            tmp_path / "starved", RUNS, sessions=SESSIONS, nice=RUN_NICE, timeout_s=780, pause=hogs, cpus=cpus
        )
    output = (tmp_path / "starved" / "cli_output.txt").read_text()
    assert code == 0, output
    runs = verdicts(tmp_path / "starved")
    assert set(runs) == set(RUNS), output  # every run finished and was checked
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
    idle = verdicts(tmp_path / "idle")
    assert set(idle) == set(IDLE_COMPARED)
    changed = {}
    for run, checks in idle.items():
        for c, v in checks.items():
            starved = runs[run].get(c, {})
            lost = c in CLIENT_VIEW and (v["status"], starved.get("status")) == ("valid", "unknown")
            if starved.get("status") != v["status"] and not (lost and starved.get("notes")):
                changed[(run, c)] = (v["status"], starved.get("status"), starved.get("notes"))
    assert not changed, changed  # (run, checker): (idle, starved, starved's reason)
