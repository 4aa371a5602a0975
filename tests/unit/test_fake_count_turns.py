"""The fake's turn identity without an ``x-turn`` header: one turn per assistant message, on every family.

A channel layout (scenarios/tokenizers/channels, gpt-oss style) renders one
assistant message as several segments that each open with the assistant
header (analysis, commentary, one call segment per tool call, final), and the
fake's own completions carry those segments; counting headers counted each of
them, so turn-matched fault rules fired on the wrong request there.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.fake_sglang import create_app, plan_from_text
from harness.fake_sglang.generate import Identity, TokenModel
from harness.fake_sglang.plan import GenerationSpec
from harness.tokenizer import SHIPPED, load_tokenizer
from reference_impl.tito import SessionView, Tito

SCENARIO_TOKENIZERS = Path(__file__).resolve().parents[2] / "scenarios" / "tokenizers"
EVERY_FAMILY = [*SHIPPED, *sorted(str(d) for d in SCENARIO_TOKENIZERS.iterdir() if d.is_dir())]
CHANNELS = str(SCENARIO_TOKENIZERS / "channels")


def _call(i: int) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": "search", "arguments": '{"query": "x"}'}}


def _conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "plain answer"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "calling two tools", "tool_calls": [_call(1), _call(2)]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        {"role": "assistant", "content": "", "tool_calls": [_call(3)]},
        {"role": "tool", "tool_call_id": "call_3", "content": "three"},
        {"role": "assistant", "content": "thought through", "reasoning_content": "a thought"},
        {"role": "user", "content": "third"},
    ]


@pytest.mark.parametrize("family", EVERY_FAMILY, ids=lambda f: Path(f).name)
def test_rendered_prompts_count_one_turn_per_assistant_message(family: str) -> None:
    model = TokenModel(load_tokenizer(family))
    convo = _conversation()
    for i, m in enumerate(convo):
        if m["role"] == "assistant":
            continue
        prefix = convo[: i + 1]
        want = sum(1 for x in prefix if x["role"] == "assistant")
        assert model.count_turns(array("I", model.render_prompt(prefix))) == want, (family, i)


@pytest.mark.parametrize("family", EVERY_FAMILY, ids=lambda f: Path(f).name)
def test_tito_prompts_count_one_turn_per_assistant_message(family: str) -> None:
    """The prompts a TITO server sends: the fake's own completions (a channel layout's analysis segment
    included, with a reasoning parser) joined to the appended messages."""
    tok = load_tokenizer(family)
    model, tito = TokenModel(tok), Tito(tok)
    gen = GenerationSpec(reasoning_parser=True)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "first"}]
    view = SessionView()
    for turn, calls in enumerate((2, 0, 1, 0)):
        plan = tito.plan(view, messages)
        assert model.count_turns(array("I", plan.input_ids)) == turn, (family, turn)
        a = model.answer(Identity(3, "k", turn, 0, "p"), gen, tool_calls=calls, parser=True)
        reply: dict[str, Any] = {"role": "assistant", "content": a.content}
        if a.tool_calls:
            reply["tool_calls"] = a.tool_calls
        if a.reasoning:
            reply["reasoning_content"] = a.reasoning
        done = tito.commit(plan, plan.input_ids, a.completion_ids(True), reply)
        at = (*view.assistant_at, len(done.messages) - 1)
        view = SessionView(
            tuple(done.token_ids), tuple(done.messages), tuple(done.keys), (*view.checkpoints, len(done.token_ids)), at
        )
        messages = list(done.messages)
        if a.tool_calls:
            messages += [{"role": "tool", "tool_call_id": tc["id"], "content": "result"} for tc in a.tool_calls]
        else:
            messages.append({"role": "user", "content": f"question {turn + 2}"})


async def test_a_turn_matched_rule_fires_on_that_turn_on_the_channels_layout() -> None:
    """Without x-turn, ``turn = 1`` must hit the second assistant turn, not a segment of the first."""
    tok = load_tokenizer(CHANNELS)
    model = TokenModel(tok)
    app = create_app(seed=5, tokenizer=tok, plan=plan_from_text('[[rules]]\nfault = "http_503"\nturn = 1', "<t>"))
    first = [{"role": "user", "content": "first"}]
    answered = [*first, {"role": "assistant", "content": "let me look", "tool_calls": [_call(1)]}]
    second = [*answered, {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as c:
        codes = []
        for msgs in (first, second):
            r = await c.post("/v1/chat/completions", json={"input_ids": model.render_prompt(msgs)})
            codes.append(r.status_code)
    assert codes == [200, 503]
    assert [e["turn"] for e in app.executions["-"]] == [0, 1]
