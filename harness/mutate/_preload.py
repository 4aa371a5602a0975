"""Imported once by the fork server that forks every kill-test child (never imports ``reference_impl``).

The expensive part of a fresh Python for one mutant is importing httpx,
starlette, transformers and loading the shipped tokenizer (~2-3 s); a child
forked from a server that did it already starts its first scenario at once.
``reference_impl`` is deliberately left out: each child imports it from its
own mutated tree.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no Rust thread pool survives a fork half-started

import harness.checkers
import harness.scenario
import harness.sim.explore
import harness.sim.runner
import harness.sim.world
from harness.tokenizer import load_tokenizer

# the chat template compiles on first use (transformers caches it): once here, not once per mutant
_WARM = [{"role": "user", "content": "warm"}]
load_tokenizer(None).apply_chat_template(_WARM, tokenize=False, add_generation_prompt=True)

__all__: list[str] = []
_ = (harness.checkers, harness.scenario, harness.sim.explore, harness.sim.runner, harness.sim.world)
