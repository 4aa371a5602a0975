"""The correct server passes 1,000 simulated seeds of the suite with zero violations.

The other half of "the harness has teeth": a checker that flags the correct
server on some interleaving is a false alarm, and a thousand seeds is where
such alarms surface. To fit CI on two cores the thousand seeds are spread
over the library's cheapest scenarios (0.17-0.51 s per seed), half of
them under ``random`` and half under ``pct``, one test case per scenario so
that make test's pytest workers share them out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sim.explore import explore

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SEEDS = 1000
# scenario -> strategy (each gets SEEDS / len seeds)
CHEAP: dict[str, str] = {
    "abort_retries_exhausted": "random",
    "client_disconnect": "pct",
    "delete_during_proxy": "random",
    "abort_retry_supersede": "pct",
    "duplicate_inflight_retry": "random",
    "process_kill_restart": "pct",
    "transport_faults": "random",
    "litellm_abort_remap": "pct",
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("name", "strategy"), sorted(CHEAP.items()))
def test_correct_server_passes_its_share_of_1000_seeds(name: str, strategy: str) -> None:
    # one case per scenario (SEEDS / len(CHEAP) seeds each) so pytest's workers share them out
    per = SEEDS // len(CHEAP)
    assert per * len(CHEAP) == SEEDS
    results = explore(str(SCENARIOS / f"{name}.toml"), range(per), strategy, jobs=1, stop_on_first=False)
    assert len(results) == per
    failures: list[str] = []
    for r in results:
        if r.flagged:
            why = r.error or "; ".join(
                f"{v['checker']}: {(v.get('violations') or [{}])[0].get('message')}" for v in r.invalid
            )
            failures.append(f"harness replay {name} --seed {r.seed} --strategy {strategy}: {why}")
    assert not failures, "\n".join(failures[:10])
