"""Two scenario tokenizers for how a server encodes (harness/tokenizer/build.py; scenarios/tokenizers/):

- ``bos_truncation`` (scenario bos_truncation_template): the template writes the BOS ``<s>`` and the
  post-processor adds one to every ``encode(text)`` with special tokens on (the double-BOS bug), and
  tokenizer.json enables truncation (16) and padding (24), which the backend applies and
  ``tokenizer.encode`` turns off (the reference bug found by triage of 6e09fbb3053f);
- ``slow_bytes`` (scenario slow_tokenizer_template): no Rust backend at all (ByT5Tokenizer), and
  ``encode`` with special tokens on appends ``</s>``; its template writes tool-call arguments by string
  concatenation (OpenAI's string arguments only), so a stand-in turn whose arguments are an object where
  the stored call's are a string cannot be rendered.

A server that encodes with special tokens on, through the backend as configured, or only through the
backend, is flagged on them; the reference server passes. Mutants of ``Tito.encode`` they kill:
99e82c53dd5f (``add_special_tokens=True``), e25842fe2338 (``and`` -> ``or`` in the fast-path guard) and
5cc269e38023 (``is not`` -> ``is``: the guard reads the missing backend); and 0e75e9fdc33c (``_stand_in``:
the stand-in's arguments of the other type than the stored call's).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

import harness.tokenizer as tokenizer_mod
from harness.checkers import check_all
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed
from harness.tokenizer.build import write_bos_truncation, write_slow_bytes
from reference_impl import tito as ref_tito

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BOS = SCENARIOS / "tokenizers" / "bos_truncation"
SLOW = SCENARIOS / "tokenizers" / "slow_bytes"
MSGS = [{"role": "system", "content": "You plan."}, {"role": "user", "content": "Turn 0: plan step check reward."}]


@pytest.fixture(autouse=True)
def _fresh_tokenizers() -> Iterator[None]:
    # transformers' encode switches the shared backend's truncation and padding off for good: load afresh
    tokenizer_mod._load.cache_clear()
    yield
    tokenizer_mod._load.cache_clear()


def test_the_scenario_tokenizers_rebuild_byte_identically(tmp_path: Path) -> None:
    write_bos_truncation(tmp_path / "bos")
    write_slow_bytes(tmp_path / "slow")
    for built, shipped in ((tmp_path / "bos", BOS), (tmp_path / "slow", SLOW)):
        assert sorted(p.name for p in built.iterdir()) == sorted(p.name for p in shipped.iterdir())
        for f in built.iterdir():
            assert f.read_bytes() == (shipped / f.name).read_bytes(), f


def test_bos_truncation_adds_a_second_bos_and_truncates_through_the_backend() -> None:
    tok = AutoTokenizer.from_pretrained(str(BOS), local_files_only=True)
    text = str(tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True))
    assert text.startswith("<s>")
    backend = tok.backend_tokenizer
    assert len(backend.encode(text, add_special_tokens=False).ids) == 24  # cut to 16, padded to 24
    plain = list(tok.encode(text, add_special_tokens=False))
    assert len(plain) > 24 and plain[0] == tok.bos_token_id
    assert list(tok.encode(text)) == [tok.bos_token_id, *plain]  # the double BOS


def test_the_fake_encodes_like_tokenizer_encode_whoever_encoded_first() -> None:
    # SGLang encodes with ``tokenizer.encode``, which applies neither truncation nor padding; the fake read the
    # Rust backend directly, so on a fresh tokenizer its prompts were cut to 16 and padded to 24 ids, and right
    # only once something else in the process had called ``tok.encode`` (an order-dependent test failure).
    # It must not switch them off on the shared backend either: the server under test shares it in sim.
    from harness.fake_sglang.generate import TokenModel

    tok = AutoTokenizer.from_pretrained(str(BOS), local_files_only=True)
    model = TokenModel(tok)
    text = str(tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True))
    first = model.encode(text)
    assert tok.backend_tokenizer.truncation is not None  # the shared backend is left as loaded
    assert len(tok.backend_tokenizer.encode(text, add_special_tokens=False).ids) == 24
    assert first == list(tok.encode(text, add_special_tokens=False))
    assert len(first) > 24


def test_slow_bytes_has_no_backend_and_appends_eos() -> None:
    tok = AutoTokenizer.from_pretrained(str(SLOW), local_files_only=True)
    assert getattr(tok, "backend_tokenizer", None) is None
    plain = list(tok.encode("abc", add_special_tokens=False))
    assert list(tok.encode("abc")) == [*plain, tok.eos_token_id]


def _special_tokens_on(self: Any, text: str) -> list[int]:
    return list(self.tok.encode(text)) if text else []


def _backend_as_configured(self: Any, text: str) -> list[int]:
    return list(self.tok.backend_tokenizer.encode(text, add_special_tokens=False).ids) if text else []


def _backend_only(self: Any, text: str) -> list[int]:
    return list(self._fast.encode(text, add_special_tokens=False).ids) if text else []


_real_stand_in = ref_tito._stand_in


def _stand_in_with_objects(last: Any) -> Any:
    msg, marks = _real_stand_in(last)
    for tc in msg.get("tool_calls") or ():
        fn = tc["function"]
        fn["arguments"] = json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else fn["arguments"]
    return msg, marks


def _verdicts(name: str) -> dict[str, str]:
    sc = with_seed(load_scenario(SCENARIOS / f"{name}.toml"), 0)
    out = simulate(sc, 0, "random", trace=False)
    assert out.error is None and out.data is not None, out.error
    return {v.checker: v.status for v in check_all(out.data)}


@pytest.mark.parametrize(
    ("name", "encode", "flagged"),
    [
        ("bos_truncation_template", _special_tokens_on, "token_state"),
        ("bos_truncation_template", _backend_as_configured, "token_state"),
        ("slow_tokenizer_template", _special_tokens_on, "token_state"),
        ("slow_tokenizer_template", _backend_only, "refused_legal"),
    ],
)
def test_a_server_that_encodes_otherwise_is_flagged(
    monkeypatch: pytest.MonkeyPatch, name: str, encode: Callable[[Any, str], list[int]], flagged: str
) -> None:
    monkeypatch.setattr(ref_tito.Tito, "encode", encode)
    v = _verdicts(name)
    assert v[flagged] == "invalid", v


def test_a_stand_in_shaped_otherwise_than_the_stored_call_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ref_tito, "_stand_in", _stand_in_with_objects)
    v = _verdicts("slow_tokenizer_template")
    assert v["refused_legal"] == "invalid", v


@pytest.mark.parametrize("name", ["bos_truncation_template", "slow_tokenizer_template"])
def test_the_reference_server_passes(name: str) -> None:
    v = _verdicts(name)
    assert not [c for c, s in v.items() if s == "invalid"], v
