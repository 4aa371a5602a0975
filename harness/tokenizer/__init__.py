"""The tokenizer seam: a shipped tokenizer family by name, or any local HF tokenizer directory.

Every component that tokenizes (the fake SGLang, the reference server, the
agents) takes a ``--tokenizer NAME|DIR``: ``NAME`` is one of the families this
project ships in ``data/<name>/`` (``chatml``, ``reasoning``, ``tools``,
``headers``, ``trail``; see ``build.py`` for what each one's chat template
does), ``DIR`` a local Hugging Face tokenizer folder with a chat template.
``None`` means ``chatml``. Nothing is ever downloaded: ``local_files_only`` is
forced.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

DATA_ROOT = Path(__file__).resolve().parent / "data"
SHIPPED = ("chatml", "reasoning", "tools", "headers", "trail")
DEFAULT_FAMILY = "chatml"
DEFAULT_TOKENIZER_DIR = DATA_ROOT / DEFAULT_FAMILY
WORDS_FILE = Path(__file__).resolve().parent / "words.txt"

__all__ = [
    "DATA_ROOT",
    "DEFAULT_FAMILY",
    "DEFAULT_TOKENIZER_DIR",
    "SHIPPED",
    "WORDS_FILE",
    "TokenizerError",
    "load_tokenizer",
    "resolve_tokenizer",
]


class TokenizerError(ValueError):
    """A tokenizer name or directory that cannot be used, with the reason and the fix."""


_FIX = f"pass a shipped name ({', '.join(SHIPPED)}) or a local Hugging Face tokenizer folder"


def _has_chat_template(p: Path) -> bool:
    if (p / "chat_template.jinja").is_file() or (p / "chat_template.json").is_file():
        return True
    cfg = p / "tokenizer_config.json"
    if not cfg.is_file():
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("chat_template"))


def resolve_tokenizer(name_or_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory a ``--tokenizer`` value names, checked; raises ``TokenizerError`` saying why not.

    A shipped name wins over a directory of the same name (write ``./chatml`` for
    the directory). The old location of the single shipped tokenizer (``data/``
    itself) still means ``chatml``.
    """
    if name_or_dir is None:
        return DEFAULT_TOKENIZER_DIR
    raw = os.fspath(name_or_dir)
    if raw in SHIPPED:
        return DATA_ROOT / raw
    if not raw.strip():
        raise TokenizerError(f"--tokenizer {raw!r}: empty; {_FIX}")
    p = Path(raw).expanduser()
    if not p.is_dir():
        what = "not a directory" if p.exists() else "no such directory"
        raise TokenizerError(f"--tokenizer {raw}: not a shipped tokenizer name and {what}; {_FIX}")
    if p.resolve() == DATA_ROOT:
        return DEFAULT_TOKENIZER_DIR
    if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
        raise TokenizerError(f"--tokenizer {raw}: no tokenizer.json or tokenizer_config.json in it; {_FIX}")
    if not _has_chat_template(p):
        raise TokenizerError(
            f"--tokenizer {raw}: no chat template (neither chat_template in tokenizer_config.json nor a "
            "chat_template.jinja); use a chat model's tokenizer directory"
        )
    return p


@functools.lru_cache(maxsize=16)
def _load(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tok, "chat_template", None):
        raise TokenizerError(f"tokenizer at {path} has no chat_template; use a chat model's tokenizer directory")
    return tok


def load_tokenizer(name_or_dir: str | os.PathLike[str] | None = None) -> Any:
    """Load a shipped tokenizer by name or a Hugging Face tokenizer from a local directory (default: chatml).

    Cached per resolved path: loading takes ~100 ms and every app instance shares it.
    """
    return _load(str(resolve_tokenizer(name_or_dir).resolve()))
