"""Every shipped tokenizer family, end to end in simulation: the correct server passes, bad ones are caught.

``harness run --suite default --mode sim --tokenizer F`` for each family F
(the scenarios' own seeds), and every known-bad variant against the scenario
aimed at it (tests/unit/test_sim_teeth.py) with every family, one seed each:
the families change what the fake answers and how TITO joins turns, and none
of that may hide a bug or make the correct server look broken.

``retokenize_history`` is flagged only where re-rendering changes the tokens:
``reasoning`` (earlier think blocks dropped from the prompts), and every
family whose template closes a turn with text the model does not generate
(``chatml``, ``tools``, ``trail``: the stored history ends with it). On
``headers`` the re-rendered history is token for token what the model saw, so
there is nothing to flag.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sim_teeth import TEETH

from harness.runner import find_scenarios
from harness.scenario import load_scenario
from harness.sim.explore import run_seed
from harness.sim.runner import with_seed
from harness.tokenizer import SHIPPED

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
VISIBLE_ONLY_WITH = {"retokenize_history": {"chatml", "reasoning", "tools", "trail"}}


@pytest.mark.slow
@pytest.mark.parametrize("family", SHIPPED)
def test_default_suite_is_valid_on_every_family(family: str) -> None:
    bad = []
    for path in find_scenarios([], "default"):
        sc = load_scenario(path).with_tokenizer(family)
        r = run_seed(with_seed(sc, sc.seed), sc.seed, "random")
        if r.status != "valid":
            bad.append(f"{path.stem} seed {sc.seed}: {r.status} {[v['checker'] for v in r.invalid]} {r.error or ''}")
    assert not bad, bad


@pytest.mark.slow
@pytest.mark.parametrize("family", SHIPPED)
def test_every_known_bad_variant_is_flagged_on_every_family(family: str) -> None:
    missed = []
    for variant, (name, checker) in sorted(TEETH.items()):
        if family not in VISIBLE_ONLY_WITH.get(variant, {family}):
            continue
        sc = load_scenario(SCENARIOS / f"{name}.toml").with_tokenizer(family)
        r = run_seed(with_seed(sc, 0, variant), 0, "random")
        if checker not in {str(v["checker"]) for v in r.invalid}:
            missed.append(f"{variant} on {name}: {r.status} {[v['checker'] for v in r.invalid]} {r.error or ''}")
    assert not missed, missed
