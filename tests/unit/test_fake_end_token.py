"""The fake's end-of-turn token on a template that writes whitespace before it (fake_sglang/generate.py _end_id).

A template may close an assistant turn with a newline and then its end token (CONTEXT.md: whitespace the model
never generates). The fake must still end its answers with that token, not fall back to another guess (before:
`<|im_end|>` or the eos token, whichever the vocabulary had). <2 s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.fake_sglang.generate import TokenModel
from harness.tokenizer import DATA_ROOT, load_tokenizer


def test_the_end_token_after_a_newline_is_the_one_the_model_ends_with(tmp_path: Path) -> None:
    shutil.copytree(DATA_ROOT / "headers", tmp_path / "tok")
    cfg_path = tmp_path / "tok" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    closing = "{{- '<|eot|>' -}}{%- endfor -%}"
    assert closing in cfg["chat_template"], "the headers template changed: adapt this test"
    cfg["chat_template"] = cfg["chat_template"].replace(closing, "{{- '\\n<|eot|>' -}}{%- endfor -%}")
    cfg["eos_token"] = "<|begin|>"  # an eos that is not the turn's end: the old fallback picked it
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    tok = load_tokenizer(str(tmp_path / "tok"))
    model = TokenModel(tok)
    assert tok.convert_ids_to_tokens(model.end_id) == "<|eot|>"
    plain = TokenModel(load_tokenizer("headers"))
    assert model.end_id == plain.end_id
