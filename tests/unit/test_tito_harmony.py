"""TITO on a template whose closer depends on ``loop.last`` (scenarios/tokenizers/harmony, gpt-oss-style).

The template closes the final answer of the last assistant message with ``<|return|>`` (the end of
generation) and every earlier one with ``<|end|>``. The model stops on ``<|return|>``, which is stored; the
next turn must join the appended messages after it (the suffix starts after the ``<|end|>`` that the render
with more messages has in its place), never rewrite the stored tokens. Before the fix the reference server
raised TitoError ("does not close an assistant turn with '<|return|>' when more messages follow"): a 500 on
every turn after a final answer; the foreign fixture answered 400, the fake ended a tool-call turn with
``<|end|><|return|>``, and ``harness tokenizer check`` said exit 1. Each test below fails on that code. <3 s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.fake_sglang.generate import Identity, TokenModel
from harness.fake_sglang.plan import GenerationSpec
from harness.tokenizer import load_tokenizer
from harness.tokenizer.build import CHANNELS_TEMPLATE, HARMONY_TEMPLATE
from harness.tokenizer.check import check_tokenizer
from reference_impl.tito import SessionView, Tito, TitoError
from tests.foreign_server.tokens import Tokens

TOKENIZERS = Path(__file__).resolve().parents[2] / "scenarios" / "tokenizers"
HARMONY = TOKENIZERS / "harmony"
TOK = load_tokenizer(str(HARMONY))
USER = {"role": "user", "content": "the first question"}
ANSWER = {"role": "assistant", "content": "answer number one"}
NEXT = {"role": "user", "content": "and the next question"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"query": "cats"}'}}


def _id(text: str) -> int:
    return int(TOK.convert_tokens_to_ids(text))


def test_the_folder_is_the_built_template() -> None:
    cfg = json.loads((HARMONY / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["chat_template"] == HARMONY_TEMPLATE != CHANNELS_TEMPLATE
    last = TOK.apply_chat_template([USER, ANSWER], tokenize=False)
    followed = TOK.apply_chat_template([USER, ANSWER, NEXT], tokenize=False)
    assert last.endswith("answer number one<|return|>") and "answer number one<|end|>" in followed


def test_after_a_final_answer_the_suffix_follows_the_models_return_token() -> None:
    tito = Tito(TOK)
    suffix = tito.suffix(ANSWER, [NEXT], _id("<|return|>"), system=False)
    assert suffix == "<|start|>user<|message|>and the next question<|end|><|start|>assistant"
    # a cut answer (its last token is no special token) is closed the way a followed turn is: with <|end|>
    assert tito.suffix(ANSWER, [NEXT], TOK.encode(" one", add_special_tokens=False)[-1], system=False) == (
        "<|end|>" + suffix
    )
    # a tool-call turn closes with <|end|> whether last or not: the model's <|end|> is the join, as before
    turn = {"role": "assistant", "content": "", "tool_calls": [CALL]}
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "found"}
    assert tito.suffix(turn, [tool], _id("<|end|>"), system=False) == (
        "<|start|>tool<|message|>found<|end|><|start|>assistant"
    )


def test_a_whole_turn_keeps_the_stored_tokens() -> None:
    tito = Tito(TOK)
    first = tito.plan(SessionView(), [USER])
    stored = [*first.input_ids, *TOK.encode("<|channel|>final<|message|>answer number one<|return|>")]
    view = SessionView(tuple(stored), (USER, ANSWER), (), (len(stored),), (1,))
    plan = tito.plan(view, [USER, ANSWER, NEXT])
    assert plan.input_ids[: len(stored)] == stored  # <|return|> kept, nothing re-tokenized
    assert TOK.decode(plan.input_ids[len(stored) :]).startswith("<|start|>user<|message|>and the next question")


def test_another_closing_in_its_place_must_be_a_special_token(tmp_path: Path) -> None:
    """Only a special token may stand in the last turn's closer's place: plain text there is still refused."""
    shutil.copytree(HARMONY, tmp_path / "tok")
    cfg_path = tmp_path / "tok" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = HARMONY_TEMPLATE.replace("else '<|end|>'", "else '\\n\\n'")
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    tok = load_tokenizer(str(tmp_path / "tok"))
    with pytest.raises(TitoError, match="another special token in its place"):
        Tito(tok).suffix(ANSWER, [NEXT], _id("<|return|>"), system=False)


def test_the_next_messages_opener_is_not_taken_for_a_closer(tmp_path: Path) -> None:
    """A template that writes nothing between turns: the special token after the turn is the next message's
    ``<|start|>``, which closes nothing. Taking it for the closer dropped it from the prompt (review finding:
    ``...one<|return|>user<|message|>...``) and the tokenizer check called that safe; both refuse it now."""
    shutil.copytree(HARMONY, tmp_path / "tok")
    cfg_path = tmp_path / "tok" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = HARMONY_TEMPLATE.replace("else '<|end|>'", "else ''")
    assert cfg["chat_template"] != HARMONY_TEMPLATE
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    tok = load_tokenizer(str(tmp_path / "tok"))
    with pytest.raises(TitoError, match="another special token in its place"):
        Tito(tok).suffix(ANSWER, [NEXT], _id("<|return|>"), system=False)
    assert check_tokenizer(tok, str(tmp_path / "tok")).exit_code != 0


def test_tokenizer_check_holds_and_reports_the_return_token() -> None:
    res = check_tokenizer(TOK, "harmony")
    assert res.exit_code == 0, res.text()
    assert res.end_of_turn == "<|return|>"
    assert any("re-render" in n for n in res.notes)  # the model's <|return|> is not what the template re-renders


def test_the_fake_stops_a_tool_call_turn_on_the_templates_own_closer() -> None:
    model = TokenModel(TOK)
    gen = GenerationSpec()
    final = model.answer(Identity(7, "k", 0, 0, "p"), gen)
    called = model.answer(Identity(7, "k", 0, 0, "p"), gen, tool_calls=1)
    assert final.end_id == _id("<|return|>")
    assert called.end_id == _id("<|end|>") and not TOK.decode(called.body_ids).endswith("<|end|>")
    channels = TokenModel(load_tokenizer(str(TOKENIZERS / "channels")))
    assert channels.end_for([CALL]) == channels.end_id  # one end token where the template has one


def test_the_foreign_fixture_joins_after_the_return_token() -> None:
    ids = Tokens(TOK)._suffix(ANSWER, "<|channel|>final<|message|>answer number one<|return|>", [NEXT])
    assert TOK.decode(ids) == "<|start|>user<|message|>and the next question<|end|><|start|>assistant"
