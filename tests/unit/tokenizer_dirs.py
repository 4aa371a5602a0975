"""Local tokenizer folders built on the fly, as a user's checkpoint would be: not a shipped name.

They reuse the shipped BPE vocabulary (chatml's ``tokenizer.json``, which has
the ChatML and think tags as special tokens) with a chat template written in
the test, so a test exercises ``--tokenizer DIR`` with a template this project
does not ship.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.tokenizer import DATA_ROOT

# Reasoning-style, and deliberately not the shipped `reasoning` text: the think
# block sits on the same line as its tags and is dropped from every assistant
# turn before the last user message.
REASONING_STYLE = (
    "{%- set ns = namespace(q=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.q = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- set c = m['content'] or '' -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set r = m.get('reasoning_content') -%}"
    "{%- if r is none and '</think>' in c -%}"
    "{%- set r = c.split('</think>')[0].split('<think>')[-1].strip() -%}"
    "{%- set c = c.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if loop.index0 > ns.q -%}{{ '<think>' + (r or '').strip() + '</think>\\n' }}{%- endif -%}"
    "{{ c }}"
    "{%- for tc in m.get('tool_calls') or [] -%}"
    "{{ '\\n<tool_call>\\n{\"name\": \"' + tc['function']['name'] + '\", \"arguments\": ' }}"
    "{%- if tc['function']['arguments'] is string -%}{{ tc['function']['arguments'] }}"
    "{%- else -%}{{ tc['function']['arguments'] | tojson }}{%- endif -%}{{ '}\\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + c + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Unservable: every user turn is numbered, so the text a new message renders to
# depends on how many messages came before it, which no stand-in prefix knows.
NUMBERED_TURNS = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{ '<|im_start|>user ' + (loop.index0 | string) + '\\n' }}"
    "{%- else -%}{{ '<|im_start|>' + m['role'] + '\\n' }}{%- endif -%}"
    "{{ m['content'] or '' }}"
    "{%- for tc in m.get('tool_calls') or [] -%}"
    "{{ '\\n<tool_call>' + tc['function']['name'] + ' ' + tc['function']['arguments'] + '</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def tokenizer_dir(path: Path, template: str | None) -> Path:
    """A tokenizer folder at ``path`` with ``template`` as its chat template (None: no template at all)."""
    path.mkdir(parents=True, exist_ok=True)
    src = DATA_ROOT / "chatml"
    (path / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    if template is None:
        del cfg["chat_template"]
    else:
        cfg["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
    return path
