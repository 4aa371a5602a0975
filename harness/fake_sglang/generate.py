"""Deterministic answers: text, tool calls, token ids and log-probs from (seed, request identity).

Why it matters: the session server under test checks that the backend's
completion token ids, appended to the prompt ids, are a prefix of what the
chat template renders for the next turn (TITO). So the fake's completion must
be *exactly* the template's rendering of the assistant message body (content,
then the tool-call blocks) followed by the end-of-turn token, encoded by the
same tokenizer. A fake that returned arbitrary ids would make every correct
server look broken.

Each family ends a turn its own way, and the fake answers as that family's
model would; all of it is read from the chat template, not from a name:

- the end-of-turn token is the special token the template puts right after an
  assistant message's content (``<|im_end|>``, ``<|eot|>``, ...), which may
  differ from EOS; the whitespace the template adds after it (the trail) is
  never generated;
- tool calls are in the template's own syntax (the body is rendered by it);
- a template that renders an assistant's ``reasoning_content`` (a reasoning
  model) gets a think block at the start of every answer, inline in the
  message content (``<think>\n...\n</think>\n\ncontent``, as an SGLang without a
  reasoning parser returns it), so the completion ids still decode to the
  content; when the prompt already ends with the template's
  ``enable_thinking=False`` block, the answer has no think block.

With SGLang's ``--reasoning-parser`` (``generation.reasoning_parser``, off by
default) the answer is split as that parser splits it: the message's
``content`` is the answer and ``reasoning_content`` the thought, while the
completion ids still hold the whole generated text, think block included. The
model thinks when the template renders an assistant's reasoning (through
``apply_chat_template``, which also fills ``thinking`` for templates that read
that name): the reasoning family's think block, or any other layout's
reasoning section (the channels scenario tokenizer's ``analysis`` segment),
always as the template itself renders the turn.

Why a pure function: races are found by replaying a seed, so an answer may
depend only on the request's identity (seed, routing key, turn, attempt, a
hash of the prompt ids), never on arrival order or time. Each purpose (answer,
latency, fault draw) gets its own ``random.Random`` seeded from a SHA-256 of
the identity, so changing e.g. the latency model does not change answers.

Speed: the fake must never limit a run. Words of the word list encode to fixed
token ids and the shipped tokenizer's pre-tokenizer splits on word
boundaries, so content ids are concatenated from a cache instead of re-encoding;
this shortcut is verified at start-up for the tokenizer in use and switched
off (falling back to encoding the text) when it does not hold.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.tokenizer import WORDS_FILE

from .plan import TOOL_ARGUMENT_KEYS, GenerationSpec

__all__ = ["Answer", "Identity", "TokenModel"]

TOOL_NAMES = ("search", "read_file", "run_python", "calculator", "list_dir")
_PROBE = "Probe words 123, with punctuation; and a tail"

# Log-probs are a window into a fixed table of exponential draws (mean -0.25):
# one random offset per answer instead of one draw per token.
_LP_TABLE_SIZE = 4096
_lp_rng = random.Random(0)
_LP_TABLE = [round(-_lp_rng.expovariate(4.0), 5) for _ in range(_LP_TABLE_SIZE)]
_LP_TABLE2 = _LP_TABLE + _LP_TABLE


def _logprobs(rng: random.Random, n: int) -> list[float]:
    off = int(rng.random() * _LP_TABLE_SIZE)
    if n <= _LP_TABLE_SIZE:
        return _LP_TABLE2[off : off + n]
    return [_LP_TABLE[(off + i) % _LP_TABLE_SIZE] for i in range(n)]


@dataclass(frozen=True, slots=True)
class Identity:
    """What a request *is*, for determinism: everything its answer may depend on."""

    seed: int
    key: str
    turn: int
    attempt: int
    prompt_sha: str

    def rng(self, purpose: str) -> random.Random:
        raw = f"{self.seed}\x1f{self.key}\x1f{self.turn}\x1f{self.attempt}\x1f{self.prompt_sha}\x1f{purpose}"
        return random.Random(int.from_bytes(hashlib.sha256(raw.encode()).digest()[:16], "big"))


@dataclass(slots=True)
class Answer:
    """One generated answer before truncation. ``body_ids`` exclude the end-of-turn token."""

    content: str
    tool_calls: list[dict[str, Any]]
    body_ids: list[int]
    logprobs: list[float]  # one per completion token, the end-of-turn token included
    end_id: int
    body_text: str = field(default="", repr=False)  # content + tool-call blocks, as the template renders them
    reasoning: str | None = None  # the thought, split from the content (reasoning-parser mode only)

    def completion_ids(self, complete: bool) -> list[int]:
        return [*self.body_ids, self.end_id] if complete else list(self.body_ids)


def _plain_backend(backend: Any) -> Any:
    """The Rust backend as ``tokenizer.encode`` (what SGLang calls) uses it: no truncation, no padding.

    A tokenizer.json may enable both, and the backend applies them. ``tok.encode``
    switches them off on the backend it shares with everyone else in the process,
    which would make a server's encoding right or wrong by who encoded first; a
    backend with either set is copied and the copy switched off, the shared one
    left as loaded.
    """
    if backend is None or (backend.truncation is None and backend.padding is None):
        return backend
    plain = type(backend).from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


class TokenModel:
    """The tokenizer-facing half of the fake: prompts in, answer token ids out."""

    def __init__(self, tokenizer: Any, words: Sequence[str] | None = None) -> None:
        self.tok = tokenizer
        self._raw = _plain_backend(getattr(tokenizer, "_tokenizer", None))  # the Rust tokenizer, when there is one
        words = list(words) if words is not None else WORDS_FILE.read_text(encoding="utf-8").split()
        self.words = words
        # The assistant header the template emits for add_generation_prompt, as ids.
        base = [{"role": "user", "content": "x"}]
        with_gen = self.render_text(base, add_generation_prompt=True)
        without = self.render_text(base, add_generation_prompt=False)
        if not with_gen.startswith(without):
            raise ValueError("chat template: add_generation_prompt does not append a suffix; cannot derive turns")
        self.header_ids = self.encode(with_gen[len(without) :])
        self._header_bytes = array("I", self.header_ids).tobytes()
        self._gen_prefix = with_gen
        self._segment_start = self._message_start_if_segmented(base, with_gen[len(without) :])
        self.end_id = self._end_id()
        self._end_text = self.tok.convert_ids_to_tokens(self.end_id)
        self.thinks = self._renders_reasoning()
        self._no_think_text = self._no_think_tail(base, with_gen) if self.thinks else ""
        self._no_think_ids = self.encode(self._no_think_text) if self._no_think_text else []
        self._first = [self.encode(w) for w in words]
        self._rest = [self.encode(" " + w) for w in words]
        self._plain_body = self._render_body_slow(_PROBE, []) == _PROBE
        self._concat_ok = self._plain_body and self._check_concat()

    # -- tokenizer primitives

    def _end_id(self) -> int:
        """The special token the template closes an assistant turn with: the first after the content.

        Templates may put whitespace between the content and that token (a newline before the end of turn that
        the model never generates, CONTEXT.md); the model stops right after its content, with that token."""
        probe = "Probe end"
        full = self.render_text(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}], add_generation_prompt=False
        )
        cut = full.rfind(probe)
        after = full[cut + len(probe) :] if cut >= 0 else ""
        added = {str(t): int(i) for t, i in (self.tok.get_added_vocab() or {}).items()}
        after = after.lstrip()
        closing = [t for t in added if t and after.startswith(t)]
        if closing:
            return added[max(closing, key=len)]
        vocab = self.tok.get_vocab()
        if "<|im_end|>" in vocab:
            return int(vocab["<|im_end|>"])
        if self.tok.eos_token_id is None:
            raise ValueError("tokenizer has neither an end-of-turn token nor an eos token; cannot end a turn")
        return int(self.tok.eos_token_id)

    def _renders_reasoning(self) -> bool:
        """Whether the template renders an assistant's ``reasoning_content``: then the model thinks first."""
        vocab = self.tok.get_vocab()
        if "<think>" not in vocab or "</think>" not in vocab:
            return False
        msg = {"role": "assistant", "content": "Probe answer", "reasoning_content": "Probe thought"}
        try:
            text = self.render_text([{"role": "user", "content": "x"}, msg], add_generation_prompt=False)
        except Exception:  # a template that refuses the extra key is not a reasoning template
            return False
        return "Probe thought" in text

    @functools.cached_property
    def renders_thought(self) -> bool:
        """Whether the template renders a last assistant turn's reasoning (``reasoning_content``, or
        ``thinking`` as apply_chat_template aliases it): a reasoning model, whatever its layout."""
        msg = {"role": "assistant", "content": "Probe answer", "reasoning_content": "Probe thought"}
        try:
            text = self.render_text([{"role": "user", "content": "x"}, msg], add_generation_prompt=False)
        except Exception:  # a template that refuses the extra key is not a reasoning template
            return False
        return "Probe thought" in text

    def _no_think_tail(self, base: list[dict[str, Any]], with_gen: str) -> str:
        """What the generation prompt gains with ``enable_thinking=False`` (a prompt ending so gets no thoughts)."""
        off = str(self.tok.apply_chat_template(base, tokenize=False, add_generation_prompt=True, enable_thinking=False))
        return off[len(with_gen) :] if off.startswith(with_gen) else ""

    def wants_thoughts(self, prompt_ids: Sequence[int]) -> bool:
        """A reasoning model thinks, unless the prompt already closed an empty think block."""
        if not self.thinks:
            return False
        tail = self._no_think_ids
        return not (tail and len(prompt_ids) >= len(tail) and list(prompt_ids[-len(tail) :]) == tail)

    def encode(self, text: str) -> list[int]:
        if self._raw is not None:
            return list(self._raw.encode(text, add_special_tokens=False).ids)
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=skip_special))

    def render_text(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
        return str(self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))

    def render_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        return self.encode(self.render_text(messages, add_generation_prompt=True))

    def _message_start_if_segmented(self, base: list[dict[str, Any]], header: str) -> bytes | None:
        """The ids every message starts with (``<|start|>``), as bytes, when the template renders one assistant
        message as several segments that each open with the assistant header (a channel layout: analysis,
        commentary, one call segment per tool call, final); None for a template that opens a message once."""
        calls = [
            {"id": f"call_{i}", "type": "function", "function": {"name": "search", "arguments": '{"query": "x"}'}}
            for i in (1, 2)
        ]
        shapes: list[dict[str, Any]] = [
            {"role": "assistant", "content": "Probe answer", "tool_calls": calls},
            {"role": "assistant", "content": "Probe answer", "reasoning_content": "Probe thought"},
        ]
        segmented = False
        for msg in shapes:
            try:
                text = self.render_text([*base, msg], add_generation_prompt=False)
            except Exception:  # a template that refuses this shape (e.g. content and reasoning with calls)
                continue
            body = text[len(self._gen_prefix) :] if text.startswith(self._gen_prefix) else ""
            segmented = segmented or header in body
        if not segmented:
            return None
        try:  # what a user message opens with after an assistant turn, in common with the assistant header
            answered = [*base, {"role": "assistant", "content": "Probe answer"}]
            before = self.render_text(answered, add_generation_prompt=False)
            after = self.render_text([*answered, {"role": "user", "content": "y"}], add_generation_prompt=False)
        except Exception:
            return None
        if after.startswith(before):
            opened = after[len(before) :].lstrip()
        else:  # the last turn's closer differs from a followed one's (harmony: <|return|>, <|end|>): skip that
            at = after.rfind("Probe answer") + len("Probe answer")
            added = [str(t) for t in (self.tok.get_added_vocab() or {}) if t and after.startswith(str(t), at)]
            if at < len("Probe answer") or not added or before[:at] != after[:at]:
                return None
            opened = after[at + len(max(added, key=len)) :].lstrip()
        n = 0
        while n < min(len(opened), len(header)) and opened[n] == header[n]:
            n += 1
        start = self.encode(opened[:n]) if n else []
        if not start or self.header_ids[: len(start)] != start or len(start) >= len(self.header_ids):
            return None
        return array("I", start).tobytes()

    @staticmethod
    def _positions(data: bytes, needle: bytes) -> list[int]:
        """Where ``needle`` occurs in ``data`` at a token boundary (ids are 4-byte items)."""
        out, pos = [], data.find(needle)
        while pos >= 0:
            if pos % 4 == 0:
                out.append(pos)
            pos = data.find(needle, pos + 1)
        return out

    def count_turns(self, ids: array[int]) -> int:
        """Prior assistant messages in a prompt: assistant headers, less the generation prompt's own.

        On a channel layout one message is several segments, each opening with
        the header: a header counts only when another message (a user, tool or
        system one: the template's message-start ids) opened since the previous
        header. Consecutive assistant messages are then one turn there; their
        ids cannot be told from one message's segments.
        """
        hb = self._header_bytes
        if not hb:
            return 0
        data = ids.tobytes()
        heads = self._positions(data, hb)
        if heads and data.endswith(hb):
            heads.pop()  # the generation prompt's own header
        if self._segment_start is None or not heads:
            return len(heads)
        starts = self._positions(data, self._segment_start)
        n, prev = 0, -1
        for pos in heads:
            if prev < 0 or bisect.bisect_right(starts, prev) < bisect.bisect_left(starts, pos):
                n += 1
            prev = pos
        return n

    # -- the assistant body, exactly as the template renders it

    def _render_body_slow(self, content: str, tool_calls: list[dict[str, Any]], reasoning: str | None = None) -> str:
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            msg["tool_calls"] = tool_calls
        if reasoning is not None:
            msg["reasoning_content"] = reasoning
        full = self.render_text([{"role": "user", "content": "x"}, msg], add_generation_prompt=False)
        if not full.startswith(self._gen_prefix):
            raise ValueError("chat template renders an assistant turn that does not extend the generation prompt")
        body = full[len(self._gen_prefix) :]
        cut = body.rfind(self._end_text)
        if cut < 0 and tool_calls:  # a tool-call turn the template closes with another token (see end_for)
            cut = body.rfind(self.tok.convert_ids_to_tokens(self.end_for(tool_calls)))
        return body[:cut] if cut >= 0 else body

    def end_for(self, tool_calls: list[dict[str, Any]]) -> int:
        """The token the model stops on after this turn: ``end_id``, unless the template closes a tool-call
        turn rendered last without it (a harmony-style template closes only the last final answer with
        ``<|return|>``, a tool call with ``<|end|>``): then the last special token of that turn's rendering."""
        if not tool_calls:
            return self.end_id
        return self._call_end_id

    @functools.cached_property
    def _call_end_id(self) -> int:
        call = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"query": "x"}'}}
        msg = {"role": "assistant", "content": "Probe answer", "tool_calls": [call]}
        try:
            full = self.render_text([{"role": "user", "content": "x"}, msg], add_generation_prompt=False)
        except Exception:  # a template that refuses the probe call: keep the one end token
            return self.end_id
        tail = full[full.rfind('"x"}') + len('"x"}') :] if '"x"}' in full else ""
        if not tail or self._end_text in tail:
            return self.end_id
        added = {str(t): int(i) for t, i in (self.tok.get_added_vocab() or {}).items() if t}
        found = [(tail.rfind(t), len(t), t) for t in added if t in tail]
        return added[max(found)[2]] if found else self.end_id

    def body_text(self, content: str, tool_calls: list[dict[str, Any]]) -> str:
        if not tool_calls and self._plain_body:
            return content
        return self._render_body_slow(content, tool_calls)

    def _check_concat(self) -> bool:
        rng = random.Random(0)
        n = len(self.words)
        for k in (1, 2, 5, 17, 40):
            idx = [rng.randrange(n) for _ in range(k)]
            text = " ".join(self.words[i] for i in idx)
            if self.encode(text) != self._ids_for(idx):
                return False
        return True

    def _ids_for(self, idx: Sequence[int]) -> list[int]:
        out = list(self._first[idx[0]])
        rest = self._rest
        for i in idx[1:]:
            out += rest[i]
        return out

    # -- answers

    def answer(
        self,
        ident: Identity,
        gen: GenerationSpec,
        *,
        tool_calls: int | None = None,
        thinking: bool | None = None,
        parser: bool = False,
    ) -> Answer:
        """The full answer for this identity. ``tool_calls`` forces that many calls (the fault).

        With a reasoning template the answer starts with a think block, in the
        content itself, unless ``thinking=False`` (the prompt switched it off).
        ``parser`` (SGLang's ``--reasoning-parser``): the thought is returned
        apart (``Answer.reasoning``) and the content is the answer alone; the
        token ids are the same whole generated text.
        """
        if parser and (self.thinks or self.renders_thought):
            return self._parsed_answer(ident, gen, tool_calls, thinking)
        rng, idx, content, calls = self._draw(ident, gen, tool_calls)
        if self.thinks:
            thinking = True if thinking is None else thinking
            if thinking:
                content = self._think(ident) + content
            body = self._render_body_slow(content, calls)
            if not thinking and self._no_think_text and body.startswith(self._no_think_text):
                body = body[len(self._no_think_text) :]  # the prompt already holds the empty block
            if not calls:
                content = body  # exactly what the ids decode to, whatever the template did to the block
            body_ids = self.encode(body)
        elif not calls and self._concat_ok:
            body_ids = self._ids_for(idx) if idx else []
            body = content
        else:
            body = self.body_text(content, calls)
            body_ids = self.encode(body)
        return Answer(content, calls, body_ids, _logprobs(rng, len(body_ids) + 1), self.end_for(calls), body)

    def _parsed_answer(
        self, ident: Identity, gen: GenerationSpec, tool_calls: int | None, thinking: bool | None
    ) -> Answer:
        """What a reasoning parser returns: the same generation as without one, its thought split out."""
        if self.thinks:  # the think-block family: the very ids of the inline answer, so digests agree
            a = self.answer(ident, gen, tool_calls=tool_calls, thinking=thinking)
            if thinking is False:
                return a
            content = self._draw(ident, gen, tool_calls)[2]  # the same words, without the think block
            inline = self._think(ident)[len("<think>\n") : -len("\n</think>\n\n")]
            return Answer(content, a.tool_calls, a.body_ids, a.logprobs, a.end_id, a.body_text, inline)
        rng, _, content, calls = self._draw(ident, gen, tool_calls)
        thought: str | None = None
        if thinking is not False:
            thought = self._think(ident)[len("<think>\n") : -len("\n</think>\n\n")]
        body = self._render_body_slow(content, calls, thought)
        body_ids = self.encode(body)
        return Answer(content, calls, body_ids, _logprobs(rng, len(body_ids) + 1), self.end_for(calls), body, thought)

    def split(self, answer: Answer, text: str) -> tuple[str, str | None]:
        """(content, reasoning) a reasoning parser makes of ``text``, a prefix of ``answer.body_text``."""
        body, thought = answer.body_text, answer.reasoning
        if not thought:
            return text, None
        at = body.find(thought)
        if at < 0:
            return text, None
        reasoning = text[at : at + len(thought)] if len(text) > at else ""
        c_at = body.find(answer.content, at + len(thought)) if answer.content else -1
        content = text[c_at:] if c_at >= 0 and len(text) > c_at else ""
        return content, reasoning or None

    def _draw(
        self, ident: Identity, gen: GenerationSpec, tool_calls: int | None
    ) -> tuple[random.Random, list[int], str, list[dict[str, Any]]]:
        """An answer's draws from its own stream, in their fixed order: the word count, the words, whether to
        call tools, how many (unless ``tool_calls`` forces it), the calls. Returns the stream (the log-probs
        are drawn from it next), the word indices, the content and the calls.

        Every answer path draws through here, so a path cannot reorder the draws and move the digests.
        """
        rng = ident.rng("answer")
        n = len(self.words)
        k = rng.randint(gen.min_words, gen.max_words)
        idx = [int(rng.random() * n) for _ in range(k)]
        content = " ".join([self.words[i] for i in idx])
        want_tools = rng.random() < gen.tool_call_probability
        count = tool_calls if tool_calls is not None else (1 + (rng.random() < 0.25) if want_tools else 0)
        calls = [self._tool_call(rng, gen.tool_argument_keys) for _ in range(count)]
        return rng, idx, content, calls

    def _think(self, ident: Identity) -> str:
        rng = ident.rng("think")  # its own stream: the answer's words do not move
        n = len(self.words)
        thought = " ".join(self.words[int(rng.random() * n)] for _ in range(rng.randint(3, 12)))
        return f"<think>\n{thought}\n</think>\n\n"

    def _tool_call(self, rng: random.Random, keys: int = 1) -> dict[str, Any]:
        name = TOOL_NAMES[int(rng.random() * len(TOOL_NAMES))]
        query = " ".join(self.words[int(rng.random() * len(self.words))] for _ in range(3))
        args: dict[str, Any] = {"query": query, **dict(TOOL_ARGUMENT_KEYS[1:keys])}
        return {
            "id": f"call_{rng.getrandbits(64):016x}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
