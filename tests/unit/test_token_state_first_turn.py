"""token_state rule 7 (first_turn_render), the channels scenario tokenizer and the fake's reasoning parser.

A turn rendered from scratch is the chat template's rendering of the request's messages, as Hugging Face's
apply_chat_template makes it: on scenarios/tokenizers/channels (a template that reads ``thinking``) that
includes an earlier turn's ``reasoning_content``, which the bare compiled template drops (mutant 43f6557f8cbb).
Built runs (test_checkers_builders.RunBuilder) whose first record carries real token ids and messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_checkers_builders import RunBuilder

from harness.checkers import CHECKERS
from harness.fake_sglang.generate import Identity, TokenModel
from harness.fake_sglang.plan import FaultPlan, GenerationSpec, PlanError, parse_plan
from harness.rundata import RunData
from harness.tokenizer import load_tokenizer
from harness.tokenizer.build import CHANNELS_TEMPLATE

CHANNELS = Path(__file__).resolve().parents[2] / "scenarios" / "tokenizers" / "channels"
TOK = load_tokenizer(str(CHANNELS))
CALL = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"x": 1}'}}
MSGS: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is one?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL], "reasoning_content": "Use the calculator"},
    {"role": "tool", "tool_call_id": "call_1", "content": "1"},
    {"role": "assistant", "content": "One."},
    {"role": "user", "content": "And two?"},
]


def first_turn_run(text: str) -> RunData:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    run = b.build()
    run.scenario["target"] = {**(run.scenario.get("target") or {}), "tokenizer": str(CHANNELS)}
    st = run.final_states[sid]
    assert st is not None
    (rec,) = st["records"]
    prompt = list(TOK.encode(text, add_special_tokens=False))
    out = list(TOK.encode("<|channel|>final<|message|>Two.<|end|>", add_special_tokens=False))
    rec["request"]["input_ids"], rec["request"]["messages"] = prompt, MSGS
    rec["response"]["choices"][0]["meta_info"]["output_token_logprobs"] = [[-0.1, t] for t in out]
    st["metadata"]["token_ids"] = [*prompt, *out]
    st["metadata"]["checkpoints"] = [len(prompt) + len(out)]
    return run


def kinds(run: RunData) -> set[str]:
    return {v.kind for v in CHECKERS["token_state"].check(run).violations}


def test_the_templates_rendering_is_valid_and_a_lost_reasoning_is_flagged() -> None:
    want = str(TOK.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True))
    assert "<|channel|>analysis<|message|>Use the calculator<|end|>" in want
    assert kinds(first_turn_run(want)) == set()
    # what the bare compiled template renders: it sees no `thinking`, as if the reasoning were not sent
    plain = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in MSGS]
    bare = str(TOK.apply_chat_template(plain, tokenize=False, add_generation_prompt=True))
    assert kinds(first_turn_run(bare)) == {"first_turn_render"}


def test_the_committed_channels_tokenizer_has_the_template_of_its_source() -> None:
    cfg = json.loads((CHANNELS / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["chat_template"] == CHANNELS_TEMPLATE


def test_the_reasoning_parser_splits_the_thought_and_keeps_the_ids() -> None:
    ident = Identity(7, "sess", 1, 0, "x")
    gen = GenerationSpec(min_words=4, max_words=6)
    reasoning = TokenModel(load_tokenizer("reasoning"))
    inline, parsed = reasoning.answer(ident, gen), reasoning.answer(ident, gen, parser=True)
    assert parsed.body_ids == inline.body_ids and inline.reasoning is None
    assert parsed.reasoning and inline.content == f"<think>\n{parsed.reasoning}\n</think>\n\n{parsed.content}"
    channels = TokenModel(TOK)
    assert not channels.thinks and channels.renders_thought
    a = channels.answer(ident, gen, parser=True)
    text = channels.decode(a.body_ids)
    assert a.reasoning and f"<|channel|>analysis<|message|>{a.reasoning}<|end|>" in text
    assert text.endswith(f"<|channel|>final<|message|>{a.content}")
    assert channels.split(a, text[: text.find(a.reasoning) + 3]) == ("", a.reasoning[:3])
    assert channels.answer(ident, gen).reasoning is None  # the mode is off by default


def test_the_plan_key_is_a_bool_and_off_plans_describe_as_before() -> None:
    assert "reasoning_parser" not in FaultPlan().describe()["generation"]
    on = parse_plan({"generation": {"reasoning_parser": True}})
    assert on.generation.reasoning_parser and on.describe()["generation"]["reasoning_parser"] is True
    try:
        parse_plan({"generation": {"reasoning_parser": "yes"}})
    except PlanError as exc:
        assert "generation.reasoning_parser" in str(exc)
    else:
        raise AssertionError("a non-bool reasoning_parser was accepted")
