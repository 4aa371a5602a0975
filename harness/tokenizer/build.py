"""Build the project's own small tokenizers, deterministically, from files in the repo.

Why ship them: real deployments load a model's tokenizer from disk, but this
project must run on a machine with no network, so it carries tokenizers of the
same *shape* as the ones our users run (byte-level BPE, special tokens, a chat
template), small enough to build in a second each.

Why a family of them: chat templates of the model families used for RL differ
in ways that break a naive token-in/token-out server (../CONTEXT.md, last
section). One tokenizer per rendering property keeps every property under test:

- ``chatml``: ChatML, append-only (a rendered history is a prefix of the next);
- ``reasoning``: an assistant turn after the last user query carries a think
  block (from ``reasoning_content`` or an inline ``<think>`` block in the
  content); earlier assistant turns drop it; ``enable_thinking=False`` puts an
  empty think block in the generation prompt;
- ``tools``: tool calls as tagged JSON after the content; consecutive tool
  results grouped into one user block of response tags;
- ``headers``: a header per role made of header tokens, a default system
  prompt when none is given, a begin-of-text token, an end-of-turn token
  (``<|eot|>``) that differs from EOS;
- ``trail``: every turn is closed by two newlines after the end-of-turn token,
  whitespace the model never generates.

Every template here is written for this project; none is a copy of a model's.
All families share one BPE vocabulary trained on ``corpus.txt`` and
``words.txt``; only their special tokens and templates differ.
``python -m harness.tokenizer.build`` rewrites ``data/<family>/``; a test
rebuilds into a temporary folder and checks the bytes are identical, so the
committed files never drift from their sources.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
VOCAB_SIZE = 2048

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# ChatML, as Qwen-family models render it. Assistant tool calls are rendered as
# <tool_call> JSON blocks after the content; tool results as <tool_response>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if message.get('content') -%}{{ message['content'] }}{%- endif -%}"
    "{%- for tc in message.get('tool_calls') or [] -%}"
    "{%- set fn = tc['function'] if tc.get('function') else tc -%}"
    "{%- if (message.get('content') or loop.index0 > 0) -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' }}"
    "{%- if fn['arguments'] is string -%}{{ fn['arguments'] }}"
    "{%- else -%}{{ fn['arguments'] | tojson }}{%- endif -%}"
    "{{ '}\\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' -%}"
    "{{ '<|im_start|>tool\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Shared by the templates below: one assistant tool call as tagged JSON
# (arguments kept verbatim when they arrive as a JSON string).
_TAGGED_CALLS = """
{%- for tc in message.get('tool_calls') or [] -%}
  {%- set fn = tc['function'] if tc.get('function') else tc -%}
  {%- if body or loop.index0 > 0 -%}{{- '\\n' -}}{%- endif -%}
  {{- '<tool_call>\\n{"name": "' + fn['name'] + '", "arguments": ' -}}
  {%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}{%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}
  {{- '}\\n</tool_call>' -}}
{%- endfor -%}
"""


def _template(text: str) -> str:
    """Readable multi-line jinja to one line: every tag trims its own whitespace, so only the layout goes."""
    return "".join(line.strip() for line in text.strip().splitlines())


REASONING_TEMPLATE = _template(
    """
{%- set ns = namespace(last_query=-1) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'user' -%}{%- set ns.last_query = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
  {%- if message['role'] == 'assistant' -%}
    {%- set body = message.get('content') or '' -%}
    {%- set thought = message.get('reasoning_content') -%}
    {%- if thought is none and '</think>' in body -%}
      {%- set thought = body.split('</think>')[0].split('<think>')[-1] -%}
      {%- set body = body.split('</think>')[-1].lstrip('\\n') -%}
    {%- endif -%}
    {{- '<|im_start|>assistant\\n' -}}
    {%- if loop.index0 > ns.last_query -%}
      {{- '<think>\\n' + (thought or '').strip('\\n') + '\\n</think>\\n\\n' -}}
    {%- endif -%}
    {{- body -}}
"""
    + _TAGGED_CALLS
    + """
    {{- '<|im_end|>\\n' -}}
  {%- elif message['role'] == 'tool' -%}
    {{- '<|im_start|>tool\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response><|im_end|>\\n' -}}
  {%- else -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
  {%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}
{%- endif -%}
"""
)

TOOLS_TEMPLATE = _template(
    """
{%- for message in messages -%}
  {%- if message['role'] == 'assistant' -%}
    {%- set body = message.get('content') or '' -%}
    {{- '<|im_start|>assistant\\n' + body -}}
"""
    + _TAGGED_CALLS
    + """
    {{- '<|im_end|>\\n' -}}
  {%- elif message['role'] == 'tool' -%}
    {%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response>' -}}
    {%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
  {%- else -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""
)

HEADERS_DEFAULT_SYSTEM = "You are a helpful assistant. Answer briefly and use tools when they help."

HEADERS_TEMPLATE = _template(
    """
{{- '<|begin|>' -}}
{%- if not messages or messages[0]['role'] != 'system' -%}
  {{- '<|header_start|>system<|header_end|>\\n\\n"""
    + HEADERS_DEFAULT_SYSTEM
    + """<|eot|>' -}}
{%- endif -%}
{%- for message in messages -%}
  {{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' -}}
  {%- set body = message.get('content') or '' -%}
  {{- body -}}
  {%- if message['role'] == 'assistant' -%}
    {%- for tc in message.get('tool_calls') or [] -%}
      {%- set fn = tc['function'] if tc.get('function') else tc -%}
      {%- if body or loop.index0 > 0 -%}{{- '\\n' -}}{%- endif -%}
      {{- '{"name": "' + fn['name'] + '", "parameters": ' -}}
      {%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}
      {%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}
      {{- '}' -}}
    {%- endfor -%}
  {%- endif -%}
  {{- '<|eot|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|header_start|>assistant<|header_end|>\\n\\n' -}}{%- endif -%}
"""
)

TRAIL_TEMPLATE = _template(
    """
{%- for message in messages -%}
  {%- if message['role'] == 'assistant' -%}
    {%- set body = message.get('content') or '' -%}
    {{- '<|im_start|>assistant\\n' + body -}}
"""
    + _TAGGED_CALLS
    + """
    {{- '<|im_end|>\\n\\n' -}}
  {%- elif message['role'] == 'tool' -%}
    {{- '<|im_start|>tool\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response><|im_end|>\\n\\n' -}}
  {%- else -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n\\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""
)

# Not a shipped family: the template of scenarios/tokenizers/channels (a scenario tokenizer, built by
# ``python -m harness.tokenizer.build --channels DIR``). A channel layout as gpt-oss-style models render a
# turn: every message is ``<|start|>role<|message|>text<|end|>``; an assistant turn is one or more segments
# on named channels (its reasoning on ``analysis``, the answer on ``final``, a preamble and each tool call on
# ``commentary`` / ``call``). It reads a message's reasoning from ``thinking``, as gpt-oss templates do
# (transformers' apply_chat_template fills ``thinking`` from ``reasoning_content``; the bare compiled
# template does not). The reasoning of a tool-call turn is always rendered (the call's analysis); that of a
# final answer only when the answer is the last message and no generation prompt follows (the model's own
# output, for training), so earlier answers lose it and the template is not append-only.
CHANNELS_SPECIAL_TOKENS = ["<|endoftext|>", "<|start|>", "<|end|>", "<|channel|>", "<|message|>"]

CHANNELS_TEMPLATE = _template(
    """
{%- for message in messages -%}
  {%- if message['role'] == 'assistant' -%}
    {%- set calls = message.get('tool_calls') or [] -%}
    {%- set body = message.get('content') or '' -%}
    {%- if message.get('thinking') and (calls or (loop.last and not add_generation_prompt)) -%}
      {{- '<|start|>assistant<|channel|>analysis<|message|>' + message['thinking'] + '<|end|>' -}}
    {%- endif -%}
    {%- if calls -%}
      {%- if body -%}{{- '<|start|>assistant<|channel|>commentary<|message|>' + body + '<|end|>' -}}{%- endif -%}
      {%- for tc in calls -%}
        {%- set fn = tc['function'] if tc.get('function') else tc -%}
        {{- '<|start|>assistant<|channel|>call<|message|>{"name": "' + fn['name'] + '", "arguments": ' -}}
        {%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}
        {%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}
        {{- '}<|end|>' -}}
      {%- endfor -%}
    {%- else -%}
      {{- '<|start|>assistant<|channel|>final<|message|>' + body + '<|end|>' -}}
    {%- endif -%}
  {%- elif message['role'] == 'tool' -%}
    {{- '<|start|>tool<|message|>' + (message['content'] or '') + '<|end|>' -}}
  {%- else -%}
    {{- '<|start|>' + message['role'] + '<|message|>' + (message['content'] or '') + '<|end|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start|>assistant' -}}{%- endif -%}
"""
)

# Not a shipped family: the template of scenarios/tokenizers/harmony (built by ``python -m harness.tokenizer.build
# --harmony DIR``). The channel layout above with one more special token, ``<|return|>``: as in gpt-oss-style
# templates, the final answer of an assistant turn that is the last message (no generation prompt after it:
# the model's own output, where it stopped generating) closes with ``<|return|>``, every earlier one with
# ``<|end|>``. So the model stops on a token the template never renders once more messages follow: a server
# that looks for the last turn's closer in the render with the appended messages cannot find it.
HARMONY_SPECIAL_TOKENS = [*CHANNELS_SPECIAL_TOKENS, "<|return|>"]

HARMONY_TEMPLATE = CHANNELS_TEMPLATE.replace(
    "{{- '<|start|>assistant<|channel|>final<|message|>' + body + '<|end|>' -}}",
    "{{- '<|start|>assistant<|channel|>final<|message|>' + body -}}"
    "{{- '<|return|>' if loop.last and not add_generation_prompt else '<|end|>' -}}",
)

HEADERS_SPECIAL_TOKENS = [
    "<|end_of_text|>",
    "<|begin|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eot|>",
    "<|pad|>",
]


@dataclass(frozen=True)
class Family:
    """One shipped tokenizer: its special tokens (ids 0..n-1, in order) and chat template."""

    name: str
    special_tokens: tuple[str, ...]
    chat_template: str
    eos_token: str
    pad_token: str
    bos_token: str | None = None
    summary: str = ""


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("chatml", tuple(SPECIAL_TOKENS), CHAT_TEMPLATE, "<|im_end|>", "<|endoftext|>", None, "ChatML"),
        Family(
            "reasoning",
            tuple(SPECIAL_TOKENS),
            REASONING_TEMPLATE,
            "<|im_end|>",
            "<|endoftext|>",
            None,
            "think block after the last user query only",
        ),
        Family(
            "tools",
            tuple(SPECIAL_TOKENS),
            TOOLS_TEMPLATE,
            "<|im_end|>",
            "<|endoftext|>",
            None,
            "tagged tool calls, grouped tool results",
        ),
        Family(
            "headers",
            tuple(HEADERS_SPECIAL_TOKENS),
            HEADERS_TEMPLATE,
            "<|end_of_text|>",
            "<|pad|>",
            "<|begin|>",
            "role headers, default system prompt, <|eot|> != EOS",
        ),
        Family(
            "trail",
            tuple(SPECIAL_TOKENS),
            TRAIL_TEMPLATE,
            "<|im_end|>",
            "<|endoftext|>",
            None,
            "turns closed by whitespace the model never generates",
        ),
    )
}


CHANNELS = Family(
    "channels",
    tuple(CHANNELS_SPECIAL_TOKENS),
    CHANNELS_TEMPLATE,
    "<|end|>",
    "<|endoftext|>",
    None,
    "channel segments, reasoning read from `thinking` (scenario tokenizer, not shipped)",
)


# Not a shipped family: scenarios/tokenizers/bos_truncation (a scenario tokenizer, built by
# ``python -m harness.tokenizer.build --bos-truncation DIR``). Two things real checkpoints carry that our
# families do not: (1) the Llama-style begin-of-sequence token written twice over, by the chat template
# (``bos_token`` at the start of every rendering) and by the tokenizer's post-processor (a
# ``TemplateProcessing`` that puts ``<s>`` before every ``encode(text)`` with special tokens on), so a server
# that encodes a rendering with the default ``add_special_tokens=True`` sends a double BOS, and a suffix
# encoded that way carries a BOS in the middle of the conversation (the classic double-BOS bug); (2) a
# ``truncation`` (max_length 16) and a ``padding`` left enabled in tokenizer.json, as training scripts save
# them: the backend applies both, ``tokenizer.encode`` turns them off, and the rendering is what the model
# must see, whole. The template: each message is a ``[role]`` line and its text; an assistant turn ends
# with ``</s>`` (EOS); tool calls are ``call:`` JSON lines after the content, as in tagged_roles.
BOS_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]

_BRACKET_ROLES = """
{%- for message in messages -%}
  {{- '[' + message['role'] + ']\\n' -}}
  {%- set body = message['content'] if message['content'] is string else '' -%}
  {{- body -}}
  {%- for tc in message.get('tool_calls') or [] -%}
    {%- set fn = tc['function'] if tc.get('function') else tc -%}
    {%- if body or loop.index0 > 0 -%}{{- '\\n' -}}{%- endif -%}
    {{- 'call: {"name": "' + fn['name'] + '", "arguments": ' -}}
    {%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}
    {%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}
    {{- '}' -}}
  {%- endfor -%}
  {%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}
  {{- '\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '[assistant]\\n' -}}{%- endif -%}
"""

BOS_TEMPLATE = _template("{{- bos_token -}}" + _BRACKET_ROLES)

BOS_TRUNCATION = Family(
    "bos_truncation",
    tuple(BOS_SPECIAL_TOKENS),
    BOS_TEMPLATE,
    "</s>",
    "<unk>",
    "<s>",
    "BOS written by the template and added by the post-processor; truncation and padding enabled "
    "(scenario tokenizer, not shipped)",
)


def write_bos_truncation(out_dir: Path) -> None:
    """The bos_truncation scenario tokenizer: the family's files, then its post-processor, truncation, padding."""
    write_family(BOS_TRUNCATION, out_dir)
    path = out_dir / "tokenizer.json"
    tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]),
        ]
    )
    tok.enable_truncation(max_length=16)
    tok.enable_padding(pad_id=tok.token_to_id("<unk>"), pad_token="<unk>", length=24)
    path.write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")


# Not a shipped family: scenarios/tokenizers/slow_bytes (``python -m harness.tokenizer.build --slow-bytes DIR``).
# A tokenizer with no Rust ``tokenizers`` backend (``backend_tokenizer`` is None), as checkpoints whose
# tokenizer is Python code ship them: transformers' byte-level ``ByT5Tokenizer``, which needs no vocabulary
# file and, T5-style, appends ``</s>`` to every ``encode(text)`` with special tokens on (the default), while
# the template closes each assistant turn with ``</s>`` itself. The template is bos_truncation's without
# the BOS (this tokenizer has none), and it writes a tool call's ``arguments`` by string concatenation, as
# templates written for OpenAI's string arguments do: an ``arguments`` object is an error there.
SLOW_BYTES_TEMPLATE = _template(
    _BRACKET_ROLES.replace(
        """    {%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}
    {%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}
    {{- '}' -}}""",
        """    {{- fn['arguments'] + '}' -}}""",
    )
)


def write_slow_bytes(out_dir: Path) -> None:
    """The slow_bytes scenario tokenizer: a tokenizer_config.json naming ByT5Tokenizer, with the template."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "chat_template": SLOW_BYTES_TEMPLATE,
        "eos_token": "</s>",
        "extra_ids": 0,
        "model_max_length": 32768,
        "pad_token": "<pad>",
        "tokenizer_class": "ByT5Tokenizer",
        "unk_token": "<unk>",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


HARMONY = Family(
    "harmony",
    tuple(HARMONY_SPECIAL_TOKENS),
    HARMONY_TEMPLATE,
    "<|end|>",
    "<|endoftext|>",
    None,
    "channel segments, the last final answer closed by <|return|> (scenario tokenizer, not shipped)",
)


def _training_lines() -> list[str]:
    corpus = (HERE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    words = (HERE / "words.txt").read_text(encoding="utf-8").split()
    # Words alone and in short deterministic phrases, so common words get whole tokens.
    phrases = [" ".join(words[i : i + 7]) for i in range(0, len(words), 3)]
    return corpus * 4 + phrases * 3 + [" " + w for w in words] * 2


def build_tokenizer(special_tokens: list[str] | tuple[str, ...] = tuple(SPECIAL_TOKENS)) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_training_lines(), trainer=trainer)
    return tok


def _additional(family: Family) -> list[str]:
    named = {family.eos_token, family.pad_token, family.bos_token}
    if family.name == "chatml":  # kept exactly as first shipped (its files are committed baselines' input)
        return list(family.special_tokens[1:])
    return [t for t in family.special_tokens if t not in named]


def tokenizer_config(family: Family | None = None) -> dict[str, object]:
    family = family or FAMILIES["chatml"]
    added = {}
    for i, name in enumerate(family.special_tokens):
        added[str(i)] = {
            "content": name,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": _additional(family),
        "bos_token": family.bos_token,
        "chat_template": family.chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": family.eos_token,
        "pad_token": family.pad_token,
        "unk_token": None,
        "model_max_length": 32768,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map(family: Family) -> dict[str, object]:
    smap: dict[str, object] = {
        "eos_token": family.eos_token,
        "pad_token": family.pad_token,
        "additional_special_tokens": _additional(family),
    }
    if family.bos_token is not None:
        smap["bos_token"] = family.bos_token
    return smap


def write_family(family: Family, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(family.special_tokens)
    (out_dir / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    cfg = json.dumps(tokenizer_config(family), indent=2, sort_keys=True) + "\n"
    (out_dir / "tokenizer_config.json").write_text(cfg, encoding="utf-8")
    smap_text = json.dumps(special_tokens_map(family), indent=2, sort_keys=True) + "\n"
    (out_dir / "special_tokens_map.json").write_text(smap_text, encoding="utf-8")


def write(out_dir: Path, families: list[str] | None = None) -> None:
    """Write each family to ``out_dir/<family>/``."""
    for name in families or list(FAMILIES):
        write_family(FAMILIES[name], out_dir / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: the shipped data/)")
    parser.add_argument(
        "--family", action="append", choices=sorted(FAMILIES), help="build only this family (repeatable)"
    )
    parser.add_argument(
        "--channels", type=Path, default=None, metavar="DIR", help="write the channels scenario tokenizer to DIR"
    )
    parser.add_argument(
        "--bos-truncation",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the bos_truncation scenario tokenizer to DIR",
    )
    parser.add_argument(
        "--slow-bytes", type=Path, default=None, metavar="DIR", help="write the slow_bytes scenario tokenizer to DIR"
    )
    parser.add_argument(
        "--harmony", type=Path, default=None, metavar="DIR", help="write the harmony scenario tokenizer to DIR"
    )
    args = parser.parse_args(argv)
    if args.harmony is not None:
        write_family(HARMONY, args.harmony)
        print(f"wrote harmony to {args.harmony}")
        return 0
    if args.slow_bytes is not None:
        write_slow_bytes(args.slow_bytes)
        print(f"wrote slow_bytes to {args.slow_bytes}")
        return 0
    if args.bos_truncation is not None:
        write_bos_truncation(args.bos_truncation)
        print(f"wrote bos_truncation to {args.bos_truncation}")
        return 0
    if args.channels is not None:
        write_family(CHANNELS, args.channels)
        print(f"wrote channels to {args.channels}")
        return 0
    write(args.out, args.family)
    print(f"wrote {', '.join(args.family or FAMILIES)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
