"""The fake SGLang answers as each tokenizer family's model would.

What a model generates is the assistant turn as its template renders it, up to
and including the end-of-turn token, and nothing after (the trail). So for
every family: prompt text + decoded completion + trail is the template's own
render of the conversation with the answer; the last id is the family's
end-of-turn token (``<|eot|>`` for ``headers``, not EOS); tool calls come in
the family's syntax; a reasoning model's answer starts with a think block.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from harness.fake_sglang import create_app
from harness.tokenizer import SHIPPED, load_tokenizer

MSGS = [{"role": "user", "content": "Tell me a thing."}]
END = {f: "<|eot|>" if f == "headers" else "<|im_end|>" for f in SHIPPED}
TRAIL = {"chatml": "\n", "reasoning": "\n", "tools": "\n", "headers": "", "trail": "\n\n"}


def render(tok: Any, msgs: list[dict[str, Any]], gen: bool, **kw: Any) -> str:
    return str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, **kw))


async def answer(family: str, prompt: str, key: str = "s", **headers: str) -> tuple[dict[str, Any], list[int]]:
    tok = load_tokenizer(family)
    app = create_app(seed=5, tokenizer=tok)
    ids = list(tok.encode(prompt, add_special_tokens=False))
    hdrs = {"x-smg-routing-key": key, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as c:
        r = await c.post("/v1/chat/completions", json={"input_ids": ids, "messages": MSGS}, headers=hdrs)
    assert r.status_code == 200, r.text
    d = r.json()
    return d["choices"][0], [t for _, t in d["choices"][0]["meta_info"]["output_token_logprobs"]]


@pytest.mark.parametrize("family", SHIPPED)
@pytest.mark.parametrize("calls", [0, 2])
async def test_completion_is_the_templates_assistant_turn_up_to_its_end_token(family: str, calls: int) -> None:
    tok = load_tokenizer(family)
    prompt = render(tok, MSGS, True)
    fault = {"x_fake_fault": f"tool_calls;count={calls}"} if calls else {}
    choice, ids = await answer(family, prompt, **fault)
    msg = choice["message"]
    end = tok.convert_tokens_to_ids(END[family])
    assert ids[-1] == end and end not in ids[:-1]
    if family == "headers":
        assert end != tok.eos_token_id  # the model stops at end-of-turn, not at EOS
    text = tok.decode(ids, skip_special_tokens=False)
    assert prompt + text + TRAIL[family] == render(tok, [*MSGS, msg], False)
    assert len(msg.get("tool_calls") or []) == calls
    if not calls:
        assert text == msg["content"] + END[family]  # completion ids decode to the content
    if calls and family == "headers":
        assert '{"name": "' in text and '"parameters": ' in text and "<tool_call>" not in text
    elif calls:
        assert text.count("<tool_call>\n") == calls


async def test_reasoning_answers_think_first_unless_the_prompt_switched_it_off() -> None:
    tok = load_tokenizer("reasoning")
    choice, _ = await answer("reasoning", render(tok, MSGS, True))
    content = choice["message"]["content"]
    assert content.startswith("<think>\n") and "\n</think>\n\n" in content
    thought = content.split("</think>")[0]
    assert len(thought.split()) >= 3
    again, _ = await answer("reasoning", render(tok, MSGS, True))
    assert again["message"]["content"] == content  # deterministic
    off = render(tok, MSGS, True, enable_thinking=False)
    choice, ids = await answer("reasoning", off)
    assert "<think>" not in choice["message"]["content"]
    assert off + tok.decode(ids, skip_special_tokens=False) + "\n" == render(tok, [*MSGS, choice["message"]], False)


async def test_non_reasoning_families_never_think() -> None:
    for family in ("chatml", "tools", "headers", "trail"):
        tok = load_tokenizer(family)
        choice, _ = await answer(family, render(tok, MSGS, True))
        assert "<think>" not in choice["message"]["content"], family


async def test_truncated_answers_stop_before_the_end_token() -> None:
    tok = load_tokenizer("headers")
    choice, ids = await answer("headers", render(tok, MSGS, True), x_fake_fault="length;tokens=3")
    assert choice["finish_reason"] == "length" and len(ids) == 3
    assert tok.convert_tokens_to_ids("<|eot|>") not in ids
