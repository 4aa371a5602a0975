"""Simulation has teeth: every known-bad variant is flagged within a few seeds, by either strategy.

The seed bound is deliberately small (5): these races are found in the first
seeds because the scenarios aim chaos at their windows and the strategies
interleave tasks at every step; a regression that needs more seeds is a
regression of the simulation, not bad luck. ``echo_upstream_framing`` is
observable in process: the routing network hands the client the app's raw
header list, so the duplicated ``content-length`` reaches ``http_framing``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario import load_scenario
from harness.sim.explore import run_seed
from harness.sim.runner import with_seed
from harness.sim.teeth import TEETH, TEETH_TOKENIZER
from reference_impl.config import BAD_VARIANTS

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
MAX_SEEDS = 5


def test_every_known_bad_variant_has_a_scenario() -> None:
    assert set(TEETH) == set(BAD_VARIANTS)


@pytest.mark.parametrize("strategy", ["random", "pct"])
@pytest.mark.parametrize("variant", sorted(TEETH))
def test_known_bad_variant_is_flagged(variant: str, strategy: str) -> None:
    name, checker = TEETH[variant]
    sc0 = load_scenario(SCENARIOS / f"{name}.toml").with_tokenizer(TEETH_TOKENIZER.get(variant))
    seen: list[str] = []
    for seed in range(MAX_SEEDS):
        r = run_seed(with_seed(sc0, seed, variant), seed, strategy)
        flagged = [str(v["checker"]) for v in r.invalid]
        if checker in flagged:
            return
        seen.append(f"seed {seed}: {r.status} {flagged} {r.error or ''}")
    pytest.fail(f"{variant} on {name} ({strategy}) not flagged by {checker} in {MAX_SEEDS} seeds: {seen}")
