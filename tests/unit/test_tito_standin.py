"""TITO by stand-in: the appended messages are rendered on their own and joined to the stored tokens.

The expected suffixes below are written out by hand from each family's
template (harness/tokenizer/build.py), not computed by the code under test.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from server_fixtures import SYSTEM, make_rig, user
from tito_templates import DROPS_OLD_CONTENT, ECHO_FIRST, PLAIN_TEXT, SYSTEM_LAST, load_with_template, tokenizer_dir

from harness.fake_sglang import create_app as create_fake
from harness.tokenizer import load_tokenizer
from reference_impl.tito import MessageError, SessionView, Tito, TitoError, message_key

ANSWER = {"role": "assistant", "content": "done"}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
}
TWO_RESULTS = [{"role": "tool", "tool_call_id": "c1", "content": "a"}, {"role": "tool", "content": "b"}]
HI = [{"role": "user", "content": "hi"}]

CHATML_HI = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
SUFFIXES: dict[str, tuple[str, str, str]] = {
    # family -> (after a stop token then "hi", after a truncated answer then "hi", after a tool call then two results)
    "chatml": (
        "\n" + CHATML_HI,
        "<|im_end|>\n" + CHATML_HI,
        "\n<|im_start|>tool\n<tool_response>\na\n</tool_response><|im_end|>\n"
        "<|im_start|>tool\n<tool_response>\nb\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    ),
    "reasoning": (
        "\n" + CHATML_HI,
        "<|im_end|>\n" + CHATML_HI,
        "\n<|im_start|>tool\n<tool_response>\na\n</tool_response><|im_end|>\n"
        "<|im_start|>tool\n<tool_response>\nb\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    ),
    "tools": (
        "\n" + CHATML_HI,
        "<|im_end|>\n" + CHATML_HI,
        "\n<|im_start|>user\n<tool_response>\na\n</tool_response>\n<tool_response>\nb\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    "headers": (
        "<|header_start|>user<|header_end|>\n\nhi<|eot|><|header_start|>assistant<|header_end|>\n\n",
        "<|eot|><|header_start|>user<|header_end|>\n\nhi<|eot|><|header_start|>assistant<|header_end|>\n\n",
        "<|header_start|>tool<|header_end|>\n\na<|eot|><|header_start|>tool<|header_end|>\n\nb<|eot|>"
        "<|header_start|>assistant<|header_end|>\n\n",
    ),
    "trail": (
        "\n\n<|im_start|>user\nhi<|im_end|>\n\n<|im_start|>assistant\n",
        "<|im_end|>\n\n<|im_start|>user\nhi<|im_end|>\n\n<|im_start|>assistant\n",
        "\n\n<|im_start|>tool\n<tool_response>\na\n</tool_response><|im_end|>\n\n"
        "<|im_start|>tool\n<tool_response>\nb\n</tool_response><|im_end|>\n\n<|im_start|>assistant\n",
    ),
}


def _id(tito: Tito, text: str) -> int:
    (tid,) = tito.encode(text)
    return tid


@pytest.mark.parametrize("family", sorted(SUFFIXES))
def test_suffix_is_the_templates_closing_and_the_appended_messages(family: str) -> None:
    tito = Tito(load_tokenizer(family))
    stop = _id(tito, "<|eot|>" if family == "headers" else "<|im_end|>")
    word = tito.encode("done")[-1]  # a truncated answer ends on an ordinary token
    after_stop, after_cut, after_call = SUFFIXES[family]
    assert tito.suffix(ANSWER, HI, stop) == after_stop
    assert tito.suffix(ANSWER, HI, word) == after_cut
    assert tito.suffix(CALL, TWO_RESULTS, stop) == after_call
    # reasoning content, a missing system message: the join is the same
    assert tito.suffix({**ANSWER, "reasoning_content": "hmm"}, HI, stop, system=False) == after_stop


def test_a_stop_token_inside_the_turn_ends_the_models_part() -> None:
    """An answer cut right after ``</tool_call>`` (a special token here): the template goes on from there."""
    tito = Tito(load_tokenizer("chatml"))
    close_call = _id(tito, "</tool_call>")
    assert tito.suffix(CALL, TWO_RESULTS[:1], close_call).startswith("<|im_end|>\n<|im_start|>tool\n")


def _view(tito: Tito, history: list[dict[str, Any]], completion: list[int]) -> SessionView:
    prompt = tito.encode(tito.render(history[:-1], generation_prompt=True))
    ids = (*prompt, *completion)
    return SessionView(
        token_ids=ids,
        messages=tuple(history),
        keys=tuple(message_key(m) for m in history),
        checkpoints=(len(ids),),
        assistant_at=(len(history) - 1,),
    )


def test_reasoning_turn_two_keeps_the_think_block_the_model_generated() -> None:
    """The issue's bug: the old method answered 500 here, a re-tokenizer drops the think block."""
    tito = Tito(load_tokenizer("reasoning"))
    answer = {"role": "assistant", "content": "<think>\nweigh it\n</think>\n\nfine"}
    completion = tito.encode("<think>\nweigh it\n</think>\n\nfine<|im_end|>")
    view = _view(tito, [SYSTEM, user("q"), answer], completion)
    plan = tito.plan(view, [SYSTEM, user("q"), answer, user("more")])
    assert plan.input_ids[: len(view.token_ids)] == list(view.token_ids)
    assert (
        tito.decode(plan.input_ids[len(view.token_ids) :])
        == "\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n"
    )
    assert plan.base_len == len(view.token_ids) and plan.discarded == 0
    retok = tito.plan_retokenized(view, [SYSTEM, user("q"), answer, user("more")])
    assert "weigh it" not in tito.decode(retok.input_ids)  # what the classic bug sends instead


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (DROPS_OLD_CONTENT, "content and tool-call arguments verbatim"),
        (SYSTEM_LAST, "renders the messages before an assistant turn differently"),
        (ECHO_FIRST, "renders earlier messages after the appended ones"),
        (PLAIN_TEXT, "without a special token"),
    ],
)
def test_templates_the_method_cannot_serve_are_refused_with_the_reason(template: str, reason: str) -> None:
    tito = Tito(load_with_template(template))
    stop = _id(tito, "<|im_end|>")
    with pytest.raises(TitoError, match=reason):
        tito.suffix(ANSWER, HI, stop)


async def test_server_answers_500_naming_the_reason_and_commits_nothing(tmp_path: Any) -> None:
    tok_dir = tokenizer_dir(tmp_path / "tok", DROPS_OLD_CONTENT)
    async with make_rig(backend_app=create_fake(seed=3, tokenizer=str(tok_dir)), tokenizer=str(tok_dir)) as r:
        sid = await r.new_session()
        first = await r.chat(sid, [SYSTEM, user("q")])
        assert first.status_code == 200, first.text
        answer = first.json()["choices"][0]["message"]
        second = await r.chat(sid, [SYSTEM, user("q"), answer, user("more")])
        assert second.status_code == 500
        assert second.json()["error"]["type"] == "TokenizationError"
        assert "verbatim" in second.json()["error"]["message"]
        assert (await r.state(sid))["metadata"]["num_assistant"] == 1


@pytest.mark.parametrize("family", ["reasoning", "tools", "headers", "trail"])
async def test_every_turn_extends_the_checkpoint_through_the_server(family: str) -> None:
    faults = ["none", "tool_calls", "length", "none", "tool_calls"]
    async with make_rig(backend_app=create_fake(seed=5, tokenizer=family), tokenizer=family) as r:
        sid = await r.new_session()
        msgs: list[dict[str, Any]] = [SYSTEM, user("task")]
        for step, fault in enumerate(faults):
            resp = await r.chat(sid, msgs, headers={"x-turn": str(step), "x-fake-fault": fault})
            assert resp.status_code == 200, resp.text
            answer = resp.json()["choices"][0]["message"]
            msgs = [*msgs, answer]
            calls = answer.get("tool_calls") or []
            msgs += [{"role": "tool", "tool_call_id": tc.get("id", ""), "content": "ok"} for tc in calls]
            if not calls:
                msgs.append(user(f"next {step}"))
        st = await r.state(sid)
        records = st["records"]
        assert len(records) == len(faults) == st["metadata"]["num_assistant"]
        for prev, rec in itertools.pairwise(records):
            done = prev["request"]["input_ids"] + [
                p[1] for p in prev["response"]["choices"][0]["meta_info"]["output_token_logprobs"]
            ]
            assert rec["request"]["input_ids"][: len(done)] == done


async def test_chat_template_kwargs_reach_the_template_and_bad_ones_are_400() -> None:
    async with make_rig(backend_app=create_fake(seed=1, tokenizer="reasoning"), tokenizer="reasoning") as r:
        tito = r.server.tito
        sid = await r.new_session()
        resp = await r.chat(sid, [user("q")], chat_template_kwargs={"enable_thinking": False})
        assert resp.status_code == 200, resp.text
        sent = (await r.state(sid))["records"][0]["request"]["input_ids"]
        assert tito.decode(sent).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        for kwargs in ({"add_generation_prompt": False}, {"tokenize": True}, {"1x": 1}, ["enable_thinking"]):
            bad = await r.chat(sid, [user("q")], chat_template_kwargs=kwargs)
            assert bad.status_code == 400 and "chat_template_kwargs" in bad.json()["error"]["message"], kwargs
        with pytest.raises(MessageError):
            tito.plan(SessionView(), "not a list")


async def test_retokenize_history_variant_stores_the_rerendered_conversation() -> None:
    """The known-bad server hands training the template's rendering, trail tokens the model never made included."""
    async with make_rig(
        "retokenize_history", backend_app=create_fake(seed=2, tokenizer="trail"), tokenizer="trail"
    ) as r:
        sid = await r.new_session()
        first = await r.chat(sid, [SYSTEM, user("q")])
        answer = first.json()["choices"][0]["message"]
        assert (await r.chat(sid, [SYSTEM, user("q"), answer, user("more")])).status_code == 200
        st = await r.state(sid)
        last = st["records"][-1]
        seen = last["request"]["input_ids"] + [
            p[1] for p in last["response"]["choices"][0]["meta_info"]["output_token_logprobs"]
        ]
        stored = st["metadata"]["token_ids"]
        assert stored[: len(seen)] == seen and r.server.tito.decode(stored[len(seen) :]) == "\n\n"


def test_the_closing_cache_is_keyed_by_shape_not_by_call_ids() -> None:
    """A long-running server sees a new tool-call id every turn: the cache must not grow with them."""
    tito = Tito(load_with_template())
    stop = _id(tito, "<|im_end|>")
    for i in range(50):
        call = {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "id": f"call-{i}"}]}
        tito.suffix(call, [{"role": "tool", "tool_call_id": f"call-{i}", "content": "r"}], stop)
    tito.suffix(ANSWER, HI, stop)
    assert len(tito._closers) == 2
