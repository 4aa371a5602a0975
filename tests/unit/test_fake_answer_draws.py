"""The fake's answer draws come from one helper (``TokenModel._draw``) on every path, parser or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.fake_sglang.generate import Identity, TokenModel
from harness.fake_sglang.plan import GenerationSpec
from harness.tokenizer import load_tokenizer

CHANNELS = Path(__file__).resolve().parents[2] / "scenarios" / "tokenizers" / "channels"
GEN = GenerationSpec(min_words=2, max_words=9, tool_call_probability=0.5)


@pytest.mark.parametrize(
    ("family", "parser", "thinking"),
    [("chatml", False, None), ("reasoning", False, True), ("reasoning", True, True), (str(CHANNELS), True, None)],
    ids=["plain", "think-block", "think-block-parser", "channels-parser"],
)
def test_every_answer_path_draws_through_the_one_helper(
    family: str, parser: bool, thinking: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = TokenModel(load_tokenizer(family))
    ident = Identity(4, "k", 1, 0, "p")
    seen: list[Identity] = []
    real = TokenModel._draw

    def spy(self: TokenModel, who: Identity, gen: GenerationSpec, tool_calls: int | None) -> Any:
        seen.append(who)
        return real(self, who, gen, tool_calls)

    monkeypatch.setattr(TokenModel, "_draw", spy)
    model.answer(ident, GEN, thinking=thinking, parser=parser)
    assert seen and set(seen) == {ident}


@pytest.mark.parametrize("seed", range(6))
def test_a_reasoning_parser_answer_is_the_same_generation_split(seed: int) -> None:
    """Same draws with and without the parser: content, calls and the log-prob window agree."""
    model = TokenModel(load_tokenizer(CHANNELS))
    ident = Identity(seed, f"s{seed}", seed % 3, 0, "p")
    plain = model.answer(ident, GEN)
    parsed = model.answer(ident, GEN, parser=True)
    assert parsed.reasoning and parsed.content == plain.content and parsed.tool_calls == plain.tool_calls
    assert parsed.logprobs[:8] == plain.logprobs[:8]  # the same stream state after the calls: the same window
