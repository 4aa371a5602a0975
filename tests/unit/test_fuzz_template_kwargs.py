"""The fuzz's ``chat_template_kwargs`` probe: a wrong type at that optional key may not crash the server.

``chat_template_kwargs`` is SGLang's (and vLLM's) object of chat-template variables, not part of OpenAI's
request schema, so the seeded cases never send it; the fuzz's fixed HTTP probe (harness/fuzz.py,
``_Fuzzer.http_probe``) sends it once as a string. CONTEXT.md: careless input may not produce a 500. The
correct server refuses it (400); a server whose validation of the key crashes on a non-object (the
mutant 2271b1e6fb02 of reference_impl/tito.py ``template_kwargs``: ``or`` -> ``and``, so a string reaches
``raw.keys()``) answers a 500, which no_unexpected_5xx and bad_input flag. One small sim run each (~2 s).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import reference_impl.app as server_app
from harness.scenario import load_scenario
from harness.sim.runner import check, simulate, with_seed

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "malformed_requests.toml"


def _crashing_template_kwargs(raw: Any) -> dict[str, Any]:
    """Validation that only rejects a dict with bad keys; anything else reaches ``.keys()`` (as the mutant)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) and not all(isinstance(k, str) and k.isidentifier() for k in raw):
        raise server_app.MessageError("'chat_template_kwargs' must be an object whose keys are identifiers")
    if {"messages", "tokenize"} & raw.keys():  # a str has no .keys(): AttributeError, the handler's 500
        raise server_app.MessageError("'chat_template_kwargs' must not set the render's own arguments")
    return dict(raw)


def _verdicts() -> dict[str, dict[str, Any]]:
    sc = load_scenario(SCENARIO)
    sc = with_seed(dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=1, fuzz=2)), 0)
    out = simulate(sc, 0, "random")
    assert out.error is None, out.error
    return {v["checker"]: v for v in check(out)}


def test_the_correct_server_refuses_the_probe_without_a_violation() -> None:
    verdicts = _verdicts()
    assert [k for k, v in verdicts.items() if v["status"] == "invalid"] == []


def test_a_server_that_crashes_on_a_string_template_kwargs_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_app, "template_kwargs", _crashing_template_kwargs)
    verdicts = _verdicts()
    flagged = {k for k, v in verdicts.items() if v["status"] == "invalid"}
    assert "no_unexpected_5xx" in flagged, {k: v["status"] for k, v in verdicts.items()}
    assert "chat_template_kwargs" in str(verdicts["bad_input"]), verdicts["bad_input"]
