"""Each shipped tokenizer family renders the property it exists for (harness/tokenizer/build.py).

These are the real-template behaviours a token-in/token-out server must survive
(../CONTEXT.md, last section); if a family lost its property, the suites run
with it would silently stop testing that behaviour.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.tokenizer import SHIPPED, load_tokenizer
from harness.tokenizer.build import HEADERS_DEFAULT_SYSTEM

CALL = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "cats"}'}}


def render(family: str, messages: list[dict[str, Any]], gen: bool = False, **kwargs: Any) -> str:
    tok = load_tokenizer(family)
    return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, **kwargs))


def test_chatml_is_append_only_at_assistant_boundaries() -> None:
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "tool_calls": [CALL]},
        {"role": "tool", "content": "r"},
        {"role": "assistant", "content": "c"},
    ]
    tools = [{"role": "tool", "content": "x"}, {"role": "tool", "content": "y"}]
    for more in ([{"role": "user", "content": "d"}], tools):
        assert render("chatml", history + more, gen=True).startswith(render("chatml", history))


def test_reasoning_think_block_only_after_the_last_user_query() -> None:
    thought = {"role": "assistant", "content": "<think>\nplan it\n</think>\n\nanswer one"}
    convo = [{"role": "user", "content": "q1"}, thought]
    last = render("reasoning", convo)
    assert last.endswith("<|im_start|>assistant\n<think>\nplan it\n</think>\n\nanswer one<|im_end|>\n")
    later = render("reasoning", [*convo, {"role": "user", "content": "q2"}], gen=True)
    assert "plan it" not in later and "<think>" not in later  # dropped once a user query follows
    assert "<|im_start|>assistant\nanswer one<|im_end|>\n" in later
    assert not later.startswith(last)  # the reason the family exists: not append-only
    # a tool result is not a user query: the block stays through a tool round trip
    tool_round = [*convo[:1], {**thought, "tool_calls": [CALL]}, {"role": "tool", "content": "r"}]
    assert "plan it" in render("reasoning", tool_round, gen=True)


def test_reasoning_content_field_and_enable_thinking() -> None:
    msg = {"role": "assistant", "content": "the answer", "reasoning_content": "\nwhy\n"}
    text = render("reasoning", [{"role": "user", "content": "q"}, msg])
    assert text.endswith("<think>\nwhy\n</think>\n\nthe answer<|im_end|>\n")
    no_reasoning = render("reasoning", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}])
    assert no_reasoning.endswith("assistant\n<think>\n\n</think>\n\nx<|im_end|>\n")
    q = [{"role": "user", "content": "q"}]
    assert render("reasoning", q, gen=True).endswith("<|im_start|>assistant\n")
    assert render("reasoning", q, gen=True, enable_thinking=True).endswith("<|im_start|>assistant\n")
    off = render("reasoning", q, gen=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_tools_calls_as_tagged_json_after_content_and_grouped_results() -> None:
    calls = [CALL, {"function": {"name": "count", "arguments": {"n": 2}}}]
    convo = [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "Looking.", "tool_calls": calls},
        {"role": "tool", "content": "r1"},
        {"role": "tool", "content": "r2"},
        {"role": "assistant", "content": "ok"},
        {"role": "tool", "content": "r3"},
    ]
    text = render("tools", convo, gen=True)
    assert (
        "<|im_start|>assistant\nLooking.\n"
        '<tool_call>\n{"name": "search", "arguments": {"q": "cats"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "count", "arguments": {"n": 2}}\n</tool_call><|im_end|>\n'
    ) in text
    assert (
        "<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n"
        in text
    )
    assert "<|im_start|>user\n<tool_response>\nr3\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text
    assert "<|im_start|>tool" not in text
    one = render("tools", convo[:3])
    assert not render("tools", convo[:4]).startswith(one)  # the group stays open for the next result


def test_headers_default_system_prompt_and_eot_distinct_from_eos() -> None:
    tok = load_tokenizer("headers")
    assert tok.eos_token == "<|end_of_text|>" and tok.bos_token == "<|begin|>"
    eot = tok.convert_tokens_to_ids("<|eot|>")
    assert isinstance(eot, int) and eot != tok.eos_token_id
    bare = render("headers", [{"role": "user", "content": "hi"}], gen=True)
    assert bare == (
        f"<|begin|><|header_start|>system<|header_end|>\n\n{HEADERS_DEFAULT_SYSTEM}<|eot|>"
        "<|header_start|>user<|header_end|>\n\nhi<|eot|><|header_start|>assistant<|header_end|>\n\n"
    )
    own = render("headers", [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert HEADERS_DEFAULT_SYSTEM not in own and own.startswith("<|begin|><|header_start|>system<|header_end|>\n\nS")
    call_turn = {"role": "assistant", "content": "", "tool_calls": [CALL]}
    called = render("headers", [{"role": "user", "content": "u"}, call_turn])
    assert called.endswith('assistant<|header_end|>\n\n{"name": "search", "parameters": {"q": "cats"}}<|eot|>')


def test_trail_closes_turns_with_multi_token_whitespace() -> None:
    tok = load_tokenizer("trail")
    text = render("trail", [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])
    assert text.endswith("a<|im_end|>\n\n")
    trail_ids = tok.encode("\n\n", add_special_tokens=False)
    assert len(trail_ids) > 1
    assert tok.encode(text, add_special_tokens=False)[-len(trail_ids) - 1 :] == [tok.eos_token_id, *trail_ids]


@pytest.mark.parametrize("family", SHIPPED)
def test_every_family_has_a_generation_prompt_that_extends_the_render(family: str) -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    with_gen, without = render(family, msgs, gen=True), render(family, msgs)
    assert with_gen.startswith(without) and len(with_gen) > len(without)
