"""R07: a broken prefix is a 500 tokenization error, never a commit (CONTEXT.md, TITO).

The fake's ``retokenized_prompt`` fault reports ``meta_info.prompt_token_ids`` that differ from the
``input_ids`` sent, from token 0 on, on the first attempt of later turns (scenarios/retokenized_prompt.toml).
The correct server answers those with 500 and commits nothing (no_unexpected_5xx explains the 500 by the
fault, token_state finds every stored chain intact); a server that commits whatever the backend reports
(harness/coverage/_bugs.py ``no_prefix_check``) is flagged by token_state. One sim seed each (~2 s).
"""

from __future__ import annotations

from pathlib import Path

from harness.checkers import Verdict, check_all
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "retokenized_prompt.toml"


def _verdicts(target: str | None) -> dict[str, Verdict]:
    sc = with_seed(load_scenario(SCENARIO), 0, None)
    out = simulate(sc, 0, "random", target=target, trace=False)
    assert out.error is None and out.data is not None, out.error
    return {v.checker: v for v in check_all(out.data)}


def test_a_broken_prefix_is_refused_by_the_correct_server_and_flagged_when_committed() -> None:
    ours = _verdicts(None)
    assert {n: v.status for n, v in ours.items() if v.status == "invalid"} == {}
    five = ours["no_unexpected_5xx"]
    assert "500: " in five.notes and "explained" in five.notes, five.notes
    broken = _verdicts("asgi:harness.coverage._bugs:no_prefix_check")["token_state"]
    assert broken.status == "invalid"
    kinds = {x.kind for x in broken.violations}
    assert "prefix_broken" in kinds, kinds
