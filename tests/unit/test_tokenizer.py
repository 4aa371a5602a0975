"""The shipped tokenizers: rebuilt byte-identically from their sources, loadable by name or folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.tokenizer import (
    DATA_ROOT,
    DEFAULT_TOKENIZER_DIR,
    SHIPPED,
    TokenizerError,
    load_tokenizer,
    resolve_tokenizer,
)
from harness.tokenizer.build import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "tok"
    subprocess.run(
        [sys.executable, "-m", "harness.tokenizer.build", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert sorted(FAMILIES) == sorted(SHIPPED)
    assert sorted(p.name for p in DATA_ROOT.iterdir() if p.is_dir()) == sorted(SHIPPED)
    for family in SHIPPED:
        for name in FILES:
            assert (out / family / name).read_bytes() == (DATA_ROOT / family / name).read_bytes(), (family, name)


def test_every_family_loads_by_name_with_its_special_tokens() -> None:
    for family in SHIPPED:
        tok = load_tokenizer(family)
        assert tok is load_tokenizer(DATA_ROOT / family)  # one cache entry per folder, whatever named it
        assert tok.chat_template == FAMILIES[family].chat_template
        for special in FAMILIES[family].special_tokens:
            ids = tok.encode(special, add_special_tokens=False)
            assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == special, (family, special)
    assert load_tokenizer(None) is load_tokenizer("chatml")


def test_resolve_names_folders_and_the_old_data_path() -> None:
    assert resolve_tokenizer(None) == DEFAULT_TOKENIZER_DIR == DATA_ROOT / "chatml"
    assert resolve_tokenizer("headers") == DATA_ROOT / "headers"
    assert resolve_tokenizer(str(DATA_ROOT / "trail")) == DATA_ROOT / "trail"
    assert resolve_tokenizer(DATA_ROOT) == DEFAULT_TOKENIZER_DIR  # where the one tokenizer used to live


def test_resolve_errors_say_what_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"chatm: not a shipped tokenizer name and no such directory.*chatml"):
        resolve_tokenizer("chatm")
    with pytest.raises(TokenizerError, match="not a directory"):
        resolve_tokenizer(DEFAULT_TOKENIZER_DIR / "tokenizer.json")
    with pytest.raises(TokenizerError, match="empty"):
        resolve_tokenizer("")
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        resolve_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_bytes())
    with pytest.raises(TokenizerError, match="no chat template"):
        resolve_tokenizer(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert resolve_tokenizer(tmp_path) == tmp_path


def test_loads_via_autotokenizer() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(DEFAULT_TOKENIZER_DIR), local_files_only=True)
    assert tok.chat_template and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for special in ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<think>", "</think>"):
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == special
    assert load_tokenizer() is load_tokenizer(DEFAULT_TOKENIZER_DIR)  # cached per path


def test_renders_every_role() -> None:
    tok = load_tokenizer()
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Find cats."},
        {
            "role": "assistant",
            "content": "Searching.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "cats"}'}},
                {"id": "c2", "type": "function", "function": {"name": "count", "arguments": {"n": 2}}},
            ],
        },
        {"role": "tool", "content": "3 cats"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nFind cats.<|im_end|>\n"
        "<|im_start|>assistant\nSearching.\n"
        '<tool_call>\n{"name": "search", "arguments": {"q": "cats"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "count", "arguments": {"n": 2}}\n</tool_call><|im_end|>\n'
        "<|im_start|>tool\n<tool_response>\n3 cats\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_content = tok.apply_chat_template(
        [{"role": "assistant", "content": None, "tool_calls": msgs[2]["tool_calls"][:1]}], tokenize=False
    )
    assert no_content.startswith("<|im_start|>assistant\n<tool_call>\n")


@pytest.mark.parametrize("text", ["hello world", "Ünïcödé — 漢字 🙂", "<|im_start|>user\nx<|im_end|>\n", "  a\n\tb  "])
def test_encode_decode_round_trip(text: str) -> None:
    tok = load_tokenizer()
    ids = tok.encode(text, add_special_tokens=False)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == text


def test_bad_paths_raise_tokenizer_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such directory"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_tokenizer_without_chat_template_is_refused(tmp_path: Path) -> None:
    import json

    cfg = json.loads((DEFAULT_TOKENIZER_DIR / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer.json").write_bytes((DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_bytes())
    with pytest.raises(TokenizerError, match="no chat template"):
        load_tokenizer(tmp_path)
