"""The tokenizer seam: the shipped small ChatML tokenizer, or any local HF tokenizer directory.

Every component that tokenizes (the fake SGLang, the reference server, the
agents) takes a ``--tokenizer DIR``; ``None`` means the tokenizer this project
ships in ``data/``. Nothing is ever downloaded: ``local_files_only`` is forced.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parent / "data"

__all__ = ["DEFAULT_TOKENIZER_DIR", "TokenizerError", "load_tokenizer"]


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be used, with the reason and the fix."""


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tok, "chat_template", None):
        raise TokenizerError(f"tokenizer at {path} has no chat_template; use a chat model's tokenizer directory")
    return tok


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> Any:
    """Load a Hugging Face tokenizer from a local directory (default: the shipped one).

    Cached per path: loading takes ~100 ms and every app instance shares it.
    """
    p = Path(path) if path is not None else DEFAULT_TOKENIZER_DIR
    if not p.is_dir():
        raise TokenizerError(f"--tokenizer {p}: not a directory; pass a local Hugging Face tokenizer folder")
    if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
        raise TokenizerError(f"--tokenizer {p}: no tokenizer.json or tokenizer_config.json in it")
    return _load(str(p.resolve()))
