"""Token counts a tokenizer gives the harness's workload: how prompts grow per turn, tokens per word.

The capacity model (``harness model``) prices tokenization per token, so its
prompt-growth figures must come from the tokenizer the deployment runs: a
``headers`` template injects a system prompt into the first prompt, a
``reasoning`` model's answers carry a think block, a ``trail`` template adds
whitespace to every turn. The figures are measured, not guessed: the first
prompt as the agents send it, the suffix one more user turn appends (as the
appended-suffix method renders it), and the fake's own answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.tokenizer import load_tokenizer

__all__ = ["TokenCounts", "token_counts"]

# What the agents send (harness/agents/_episode.py): a system prompt, then one short user message per turn.
_SYSTEM = "You are a careful assistant in a reinforcement-learning rollout."
_FIRST = "Turn 0: plan step check reward."
_USER = "Turn 1: plan step check reward."


@dataclass(frozen=True)
class TokenCounts:
    first_prompt_tokens: int
    turn_tokens: int  # appended per later turn besides the completion: trail, user message, generation prompt
    tokens_per_word: float  # completion tokens per answer word, less the end-of-turn token

    def as_params(self) -> dict[str, Any]:
        return {
            "first_prompt_tokens": self.first_prompt_tokens,
            "turn_tokens": self.turn_tokens,
            "tokens_per_word": self.tokens_per_word,
        }


def token_counts(name_or_dir: str | os.PathLike[str] | None, *, samples: int = 200) -> TokenCounts:
    from harness.fake_sglang.generate import Identity, TokenModel
    from harness.fake_sglang.plan import GenerationSpec
    from harness.tokenizer.check import suffix_after
    from reference_impl.tito import Tito

    tok = load_tokenizer(name_or_dir)
    model = TokenModel(tok)
    first = model.render_prompt([{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _FIRST}])
    gen = GenerationSpec()
    words = tokens = 0
    for i in range(samples):
        a = model.answer(Identity(0, f"stats-{i}", 0, 0, ""), gen)
        words += len(a.content.split("</think>")[-1].split())
        tokens += len(a.completion_ids(True)) - 1

    history = [{"role": "system", "content": _SYSTEM}, {"role": "assistant", "content": "x"}]
    suffix = suffix_after(Tito(tok), history, [{"role": "user", "content": _USER}], model.end_id)
    return TokenCounts(len(first), len(model.encode(suffix)), round(tokens / max(1, words), 4))
