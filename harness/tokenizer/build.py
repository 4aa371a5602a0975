"""Build the project's own small tokenizer, deterministically, from files in the repo.

Why ship one: real deployments load a model's tokenizer from disk, but this
project must run on a machine with no network, so it carries a tokenizer of the
same *shape* as the ones our users run (byte-level BPE, ChatML special tokens,
tool and think tags, a ChatML chat template) and small enough to build in a
second. ``python -m harness.tokenizer.build`` rewrites ``data/``; a test
rebuilds into a temporary folder and checks the bytes are identical, so the
committed files never drift from their source (``corpus.txt``, ``words.txt``).
"""

from __future__ import annotations

import argparse
import json
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


def _training_lines() -> list[str]:
    corpus = (HERE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    words = (HERE / "words.txt").read_text(encoding="utf-8").split()
    # Words alone and in short deterministic phrases, so common words get whole tokens.
    phrases = [" ".join(words[i : i + 7]) for i in range(0, len(words), 3)]
    return corpus * 4 + phrases * 3 + [" " + w for w in words] * 2


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_training_lines(), trainer=trainer)
    return tok


def tokenizer_config() -> dict[str, object]:
    added = {}
    for name in SPECIAL_TOKENS:
        added[str(SPECIAL_TOKENS.index(name))] = {
            "content": name,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": SPECIAL_TOKENS[1:],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 32768,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    (out_dir / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    cfg = json.dumps(tokenizer_config(), indent=2, sort_keys=True) + "\n"
    (out_dir / "tokenizer_config.json").write_text(cfg, encoding="utf-8")
    smap = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "additional_special_tokens": SPECIAL_TOKENS[1:]}
    smap_text = json.dumps(smap, indent=2, sort_keys=True) + "\n"
    (out_dir / "special_tokens_map.json").write_text(smap_text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: the shipped data/)")
    args = parser.parse_args(argv)
    write(args.out)
    print(f"wrote tokenizer to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
