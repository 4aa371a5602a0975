"""Chat templates written for the TITO tests, and tokenizers built from them on the fly.

Each template here reproduces one way a real template defeats a naive
session server, on the shipped ChatML vocabulary: the TITO tests use them for
the cases the shipped families do not cover (templates the stand-in method
must refuse), and to build a tokenizer *directory* that is not a shipped name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness.tokenizer import resolve_tokenizer

_ROLE = "{{- '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') + '<|im_end|>\\n' -}}"
_GEN = "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"

# Earlier assistant turns are rendered without their content (only the last one keeps it).
DROPS_OLD_CONTENT = (
    "{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' + ((m['content'] or '') if loop.last else '') + '<|im_end|>\\n' -}}"
    "{%- else -%}" + _ROLE + "{%- endif -%}{%- endfor -%}" + _GEN
)

# The system message is rendered at the end, after every other message.
SYSTEM_LAST = (
    "{%- for m in messages -%}{%- if m['role'] != 'system' -%}" + _ROLE + "{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'system' -%}" + _ROLE + "{%- endif -%}{%- endfor -%}" + _GEN
)

# The generation prompt repeats the first message (a "remember the task" reminder).
ECHO_FIRST = (
    "{%- for m in messages -%}" + _ROLE + "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n(task: ' + messages[0]['content'] + ')' -}}"
    "{%- endif -%}"
)

# Turns separated by plain text, no special token closes an assistant turn.
PLAIN_TEXT = (
    "{%- for m in messages -%}{{- m['role'] | upper + ': ' + (m['content'] or '') + '\\n\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT: ' -}}{%- endif -%}"
)


def load_with_template(template: str | None = None, family: str = "chatml") -> Any:
    """A fresh (uncached) tokenizer of ``family`` whose chat template is replaced by ``template``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(resolve_tokenizer(family)), local_files_only=True)
    if template is not None:
        tok.chat_template = template
    return tok


def tokenizer_dir(dest: Path, template: str, family: str = "chatml") -> Path:
    """A local tokenizer directory (``family``'s vocabulary) whose chat template is ``template``."""
    shutil.copytree(resolve_tokenizer(family), dest)
    cfg = dest / "tokenizer_config.json"
    data = json.loads(cfg.read_text(encoding="utf-8"))
    data["chat_template"] = template
    cfg.write_text(json.dumps(data), encoding="utf-8")
    return dest
