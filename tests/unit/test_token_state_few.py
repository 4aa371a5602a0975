"""token_state: a prompt that drops more than 2 but at most A_FEW trailing tokens of the previous checkpoint.

CONTEXT.md tolerates "a few trailing tokens (max_trim_tokens, e.g. ...)": the reference server's value is 2, a
user's server may be configured with more. Where the run knows the server's value (our reference server, or the
scenario declares it) such a prompt is a broken prefix; where it does not (a server started by command, a
user's sim target) it is unknown, with the reason, never a violation. retokenized_middle's ``from_end = 10``
rule, committed as reported by a server without the prefix check, is the case.
"""

from __future__ import annotations

import copy
from pathlib import Path

from harness.checkers import check_all
from harness.rundata import RunData
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed

MIDDLE = Path(__file__).resolve().parents[2] / "scenarios" / "retokenized_middle.toml"


def _near_end_only(tmp_path: Path) -> Path:
    text = MIDDLE.read_text(encoding="utf-8")
    # keep the from_end = 10 rule, drop the two that rewrite tokens 16 / 20 (far from the end)
    cut, workload = text.index('[[backend.rules]]\nname = "retokenize_middle"'), text.index("[workload]")
    kept = text[:cut] + text[workload:]
    assert "from_end = 10" in kept and "at = 16" not in kept
    p = tmp_path / "retokenized_near_end.toml"
    p.write_text(kept.replace('name = "retokenized_middle"', 'name = "retokenized_near_end"'), encoding="utf-8")
    return p


def _token_state(data: RunData) -> tuple[str, list[str], str]:
    v = next(x for x in check_all(data) if x.checker == "token_state")
    return v.status, sorted({x.kind for x in v.violations}), v.notes


def test_a_few_trailing_tokens_dropped_is_invalid_for_ours_and_unknown_for_a_server_of_unknown_tolerance(
    tmp_path: Path,
) -> None:
    sc = with_seed(load_scenario(_near_end_only(tmp_path)), 0, None)
    out = simulate(sc, 0, "random", target="asgi:harness.coverage._bugs:no_prefix_check", trace=False)
    assert out.error is None and out.data is not None, out.error
    status, kinds, _ = _token_state(out.data)
    assert status == "invalid" and kinds, (status, kinds)  # the reference app (with the bug): its value is 2
    other = copy.deepcopy(out.data.scenario)
    other["target"]["kind"] = "command"  # the same history, from a server whose max_trim_tokens is not known
    status, kinds, notes = _token_state(RunData(scenario=other, history=out.data.history))
    assert status == "unknown" and kinds == [], (status, kinds, notes)
    declared = copy.deepcopy(other)
    declared.setdefault("checks", {}).setdefault("options", {})["max_trim_tokens"] = 2
    status, kinds, _ = _token_state(RunData(scenario=declared, history=out.data.history))
    assert status == "invalid" and kinds, (status, kinds)
