"""R07: a broken prefix is a 500 tokenization error, never a commit (CONTEXT.md, TITO).

The fake's ``retokenized_prompt`` fault reports ``meta_info.prompt_token_ids`` that differ from the
``input_ids`` sent, from token 0 on, on the first attempt of later turns (scenarios/retokenized_prompt.toml).
The correct server answers those with 500 and commits nothing (no_unexpected_5xx explains the 500 by the
fault, token_state finds every stored chain intact); a server that commits whatever the backend reports
(harness/coverage/_bugs.py ``no_prefix_check``) is flagged by token_state. One sim seed each (~2 s).

scenarios/retokenized_tail.toml rewrites instead only the last token of the checkpoint a prompt extends
(``from_end = 1``), within CONTEXT.md's "few trailing tokens": the correct server commits those turns
(no 500; token_state follows the reported prompt it stored), and a server that commits what the backend
reports is still flagged where the rewrite (``at = 0``, the scenario's other rule) breaks the prefix.
"""

from __future__ import annotations

from pathlib import Path

from harness.checkers import Verdict, check_all
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "retokenized_prompt.toml"


TAIL = SCENARIO.with_name("retokenized_tail.toml")


def _verdicts(target: str | None, scenario: Path = SCENARIO) -> dict[str, Verdict]:
    sc = with_seed(load_scenario(scenario), 0, None)
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


def test_a_one_token_tail_is_committed_by_the_correct_server_and_a_broken_head_still_flagged() -> None:
    ours = _verdicts(None, TAIL)
    assert {n: v.status for n, v in ours.items() if v.status != "valid"} == {}
    assert "500: " in ours["no_unexpected_5xx"].notes  # the at = 0 rule's refusals, each explained
    broken = _verdicts("asgi:harness.coverage._bugs:no_prefix_check", TAIL)["token_state"]
    kinds = {x.kind for x in broken.violations}
    assert broken.status == "invalid" and kinds & {"token_ids_mismatch", "prefix_broken", "retokenized"}, kinds
