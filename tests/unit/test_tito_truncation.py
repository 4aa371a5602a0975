"""A tokenizer.json that enables truncation or padding must not cut or pad what the server tokenizes.

Found by triage of mutant 6e09fbb3053f (the fast encode path never taken): the original server was the
wrong one. ``Tito.encode`` used the tokenizers backend directly, which applies a ``truncation`` /
``padding`` set in tokenizer.json, while ``tokenizer.encode`` (what the prompt must equal: CONTEXT.md,
"render the messages with the tokenizer's chat template") turns both off.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from harness.tokenizer import resolve_tokenizer
from reference_impl.tito import Tito

TEXT = " ".join(f"word{i}" for i in range(40))


def _copy_with(tmp_path: Path, key: str, value: dict[str, Any]) -> Any:
    src = resolve_tokenizer("chatml")
    dst = tmp_path / key
    shutil.copytree(src, dst)
    spec = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    spec[key] = value
    (dst / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(dst), local_files_only=True)


TRUNCATION = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
PADDING = {
    "strategy": {"Fixed": 128},
    "direction": "Right",
    "pad_to_multiple_of": None,
    "pad_id": 0,
    "pad_type_id": 0,
    "pad_token": "<|endoftext|>",
}


@pytest.mark.parametrize(("key", "value"), [("truncation", TRUNCATION), ("padding", PADDING)])
def test_encode_ignores_the_backends_truncation_and_padding(tmp_path: Path, key: str, value: dict[str, Any]) -> None:
    tok = _copy_with(tmp_path, key, value)
    assert getattr(tok.backend_tokenizer, key) is not None, "the copy must enable it"
    expected = list(
        AutoTokenizer.from_pretrained(str(resolve_tokenizer("chatml")), local_files_only=True).encode(
            TEXT, add_special_tokens=False
        )
    )
    assert len(expected) > 8
    assert Tito(tok).encode(TEXT) == expected


def test_the_fast_path_still_serves_a_plain_tokenizer() -> None:
    tok = AutoTokenizer.from_pretrained(str(resolve_tokenizer("chatml")), local_files_only=True)
    t = Tito(tok)
    assert t._fast is not None and t._fast.truncation is None and t._fast.padding is None
    assert t.encode(TEXT) == list(tok.encode(TEXT, add_special_tokens=False))
