"""token_state on our reference server: a request's ``chat_template_kwargs`` must reach the template.

CONTEXT.md does not mention ``chat_template_kwargs``, so on another server either rendering (with or
without them) is its right; docs/reference_server.md says ours applies them on every render of the turn,
so on it (``ops.reference_target``) only the rendering with the kwargs the client sent counts. Mutant
1a365d65d32d of reference_impl/tito.py (``Tito.render``: ``kwargs or {}`` -> ``kwargs and {}``) drops them
on the compiled-template path; the server still answers 200 with a prompt the model never was meant to see.
"""

from __future__ import annotations

from typing import Any

import pytest

from reference_impl import tito as ref_tito
from tests.unit.test_agents import run_inproc, verdicts

_SPEC = {
    "target": {"tokenizer": "reasoning"},
    "workload": {"sessions": 1, "turns": 2},
    "agent": {"chat_template_kwargs": {"enable_thinking": False}},
}


async def test_a_reference_server_that_ignores_chat_template_kwargs_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ref_tito.Tito.render

    def render(self: Any, messages: Any, *, generation_prompt: bool, kwargs: Any = None) -> str:
        return real(self, messages, generation_prompt=generation_prompt, kwargs={})

    monkeypatch.setattr(ref_tito.Tito, "render", render)
    run = await run_inproc(_SPEC)
    v = verdicts(run)
    assert v["token_state"] == "invalid", v


async def test_the_reference_server_applies_them_and_passes() -> None:
    v = verdicts(await run_inproc(_SPEC))
    assert v["token_state"] == "valid", v
