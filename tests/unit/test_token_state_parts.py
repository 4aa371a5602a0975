"""token_state rule 5 and OpenAI content parts: judged only on a template that renders list content.

The fuzz's content-parts turn (harness/fuzz.py) asks rule 5 whether its text reached the model. A template
that drops list content (scenarios/tokenizers/string_content: ChatML that renders a message's content only
when it is a string) leaves that to the server (it may flatten the parts or pass the list on), so the rule
says unknown, never invalid.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from test_token_state_suffix import GEN, kinds, run_with

from harness.checkers import CHECKERS
from harness.scenario import load_scenario
from harness.sim.runner import check, simulate, with_seed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
DROPS_PARTS = str(SCENARIOS / "tokenizers" / "string_content")


def test_content_parts_text_missing_is_unknown_on_a_template_that_drops_list_content() -> None:
    run = run_with(f"\n<|im_start|>user\n<|im_end|>\n{GEN}", last="Some text sent as parts.")
    probed = [e for e in run.history if e.get("f") == "chat" and e.get("type") == "invoke"][-1]
    probed["probe"] = {**probed["probe"], "content_parts": True}
    assert set(kinds(run)) == {"appended_missing"}  # the shipped ChatML renders list content: judged
    run.scenario["target"] = {**(run.scenario.get("target") or {}), "tokenizer": DROPS_PARTS}
    v = CHECKERS["token_state"].check(run)
    assert v.status == "unknown" and "content parts" in v.notes, (v.status, v.notes)


def test_the_fuzz_on_a_template_that_drops_list_content_has_no_violation() -> None:
    sc = load_scenario(SCENARIOS / "malformed_requests.toml").with_tokenizer(DROPS_PARTS)
    sc = with_seed(dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=2, fuzz=6)), 0)
    out = simulate(sc, 0, "random")
    assert out.error is None, out.error
    verdicts = {v["checker"]: v for v in check(out)}
    assert [k for k, v in verdicts.items() if v["status"] == "invalid"] == []
    ts = verdicts["token_state"]
    assert ts["status"] == "unknown" and "content parts" in ts["notes"], ts
