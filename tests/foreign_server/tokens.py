"""Token bookkeeping for the foreign server, written from CONTEXT.md alone.

The stored history is never rendered again. A later turn renders only the
messages it appends, after a fixed stand-in prefix (a stand-in system message
and a copy of the stored last assistant turn), keeps the text after that
prefix, and joins it to the stored tokens at the boundary: the model's
completion stops at its end-of-turn token, the template closes the turn with
more (a newline, say); whatever of that closing the completion did not
generate is put in front of the suffix text before it is encoded.

A checkpoint is ``(end, ids, tail)``: the stored messages up to ``end`` (its
assistant included), the token ids the model saw and produced up to there, and
the decoded completion text (the boundary's left side).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STANDIN_SYSTEM = {"role": "system", "content": "stand-in"}
MARKER = "stand-in answer"


class BadMessages(ValueError):
    """The request's ``messages`` cannot be used (400)."""


class RollbackTooFar(ValueError):
    """The request diverges more than one assistant step back (400)."""


class PrefixBroken(RuntimeError):
    """The new token ids do not extend the checkpoint they were built on (500)."""


@dataclass(frozen=True)
class Checkpoint:
    end: int  # number of stored messages covered (the assistant included)
    ids: tuple[int, ...]
    tail: str  # decoded completion text of this checkpoint's assistant turn


@dataclass(frozen=True)
class Prepared:
    base: int  # index of the checkpoint built on, -1 = the empty one
    dropped: int  # assistant steps rolled back
    input_ids: list[int]
    messages: list[dict[str, Any]]  # the request's messages, cleaned


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type", "text") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise BadMessages(f"{where}.content[{j}]: only text parts {{type: text, text: str}} are accepted")
            out.append(part["text"])
        return "".join(out)
    raise BadMessages(f"{where}.content: a string, null or a list of text parts")


ROLES = ("system", "user", "assistant", "tool", "developer")


def clean_messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise BadMessages("messages: a list of message objects is required")
    if not raw:
        raise BadMessages("messages: empty")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadMessages(f"{where}: not an object")
        role = m.get("role")
        if role not in ROLES:
            raise BadMessages(f"{where}.role: one of {', '.join(ROLES)}")
        msg: dict[str, Any] = {"role": role, "content": _text(m.get("content"), where)}
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise BadMessages(f"{where}.tool_calls: a list")
            msg["tool_calls"] = [_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        for k in ("tool_call_id", "name", "reasoning_content"):  # the template renders what it reads of them
            v = m.get(k)
            if v is not None:
                if not isinstance(v, str):
                    raise BadMessages(f"{where}.{k}: a string")
                msg[k] = v
        out.append(msg)
    return out


def _call(c: Any, where: str) -> dict[str, Any]:
    if not isinstance(c, dict):
        raise BadMessages(f"{where}: not an object")
    fn = c.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadMessages(f"{where}.function.name: a string")
    args = fn.get("arguments", "{}")
    if not isinstance(args, str | dict | list):
        raise BadMessages(f"{where}.function.arguments: a string or an object")
    out: dict[str, Any] = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(c.get("id"), str):
        out["id"] = c["id"]
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal as a conversation step (ids of tool calls and argument spelling aside)."""

    def key(m: dict[str, Any]) -> str:
        calls = [(c["function"]["name"], _args(c["function"]["arguments"])) for c in m.get("tool_calls") or []]
        return json.dumps([m["role"], m["content"], calls, m.get("tool_call_id")], sort_keys=True, default=str)

    return key(a) == key(b)


def _args(a: Any) -> Any:
    if isinstance(a, str):
        try:
            return json.loads(a) if a.strip() else {}
        except ValueError:
            return a
    return a


class Tokens:
    """Renders, encodes and checks against one Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any, max_trim_tokens: int = 2) -> None:
        self.tok = tokenizer
        self.max_trim_tokens = max_trim_tokens

    def _render(self, messages: list[dict[str, Any]], gen: bool) -> str:
        try:
            return str(self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen))
        except Exception as exc:  # a template's raise_exception ("roles must alternate"): the client's input, 400
            raise BadMessages(f"the chat template refuses these messages: {exc}") from exc

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=False))

    def prepare(self, stored: list[dict[str, Any]], checkpoints: list[Checkpoint], raw: Any) -> Prepared:
        """Phase 1's token work: rollback choice and ``input_ids``."""
        msgs = clean_messages(raw)
        common = 0
        while common < min(len(msgs), len(stored)) and same(msgs[common], stored[common]):
            common += 1
        base = -1
        for k, cp in enumerate(checkpoints):
            if cp.end <= common:
                base = k
        dropped = len(checkpoints) - 1 - base
        if dropped > 1:
            raise RollbackTooFar(f"the request diverges {dropped} assistant steps back (at most one is rolled back)")
        if base < 0:
            return Prepared(-1, dropped, self.encode(self._render(msgs, True)), msgs)
        cp = checkpoints[base]
        appended = msgs[cp.end :]
        if not appended:
            raise BadMessages("messages: nothing after the last assistant turn to answer")
        return Prepared(base, dropped, [*cp.ids, *self._suffix(stored[cp.end - 1], cp.tail, appended)], msgs)

    def _suffix(self, last_assistant: dict[str, Any], tail: str, appended: list[dict[str, Any]]) -> list[int]:
        """Tokens of ``appended`` (+ the generation prompt) as they follow the stored assistant turn."""
        full = self._render([STANDIN_SYSTEM, last_assistant, *appended], True)
        prefix = self._render([STANDIN_SYSTEM, last_assistant], False)
        if full.startswith(prefix):  # the stand-in renders the same whatever follows it
            opened = self._render([STANDIN_SYSTEM], True)
            block = prefix[len(opened) :] if prefix.startswith(opened) else ""
            return self.encode(_closing(block, tail, last_assistant.get("content") or "") + full[len(prefix) :])
        # The template renders an assistant turn differently once a user turn follows it (a reasoning
        # template drops its think block): find the end of the stand-in's turn inside the full rendering,
        # by a marker content, and keep what follows it.
        standin = {**last_assistant, "content": MARKER}
        full = self._render([STANDIN_SYSTEM, standin, *appended], True)
        prefix = self._render([STANDIN_SYSTEM, standin], False)
        at_p, at_f = prefix.rfind(MARKER), full.find(MARKER)
        close = prefix[at_p + len(MARKER) :] if at_p >= 0 else ""
        end = at_f + len(MARKER) + len(close)
        if at_p < 0 or at_f < 0:
            raise BadMessages("the chat template renders the appended messages in a way this server cannot join")
        if full[at_f + len(MARKER) : end] != close:
            return self.encode(full[self._closed_otherwise(close, tail, full, at_f + len(MARKER)) :])
        return self.encode(_not_generated(close, tail) + full[end:])

    def _closed_otherwise(self, close: str, tail: str, full: str, at: int) -> int:
        """Where the turn ends in ``full`` when the template closes a last turn with one special token and a
        turn that more messages follow with another (harmony-style: ``<|return|>`` ends generation, ``<|end|>``
        only the turn). The model stopped on the last turn's token, which stands for the other one: the
        stored tokens stay as they are and the suffix is what follows the other token."""
        specials = sorted({str(t) for t in self.tok.all_special_tokens if t}, key=len, reverse=True)
        ends = [(close.rfind(t), t) for t in specials if t in close]
        if ends:
            cut, last = max(ends, key=lambda e: e[0])
            lead = close[:cut]
            if tail.endswith(last) and full.startswith(lead, at):
                other = next((t for t in specials if full.startswith(t, at + len(lead))), None)
                if other is not None:
                    return at + len(lead) + len(other)
        raise BadMessages("the chat template renders the appended messages in a way this server cannot join")

    def check(self, base: tuple[int, ...], new_ids: list[int]) -> None:
        n = min(len(base), len(new_ids))
        i = 0
        while i < n and base[i] == new_ids[i]:
            i += 1
        if len(base) - i > self.max_trim_tokens:
            raise PrefixBroken(
                f"checkpoint of {len(base)} tokens is not a prefix of the new {len(new_ids)} "
                f"(first difference at {i}, max_trim_tokens={self.max_trim_tokens})"
            )


def _closing(block: str, tail: str, content: str) -> str:
    """What of the template's rendering of the assistant turn follows what the model generated."""
    if tail and block.startswith(tail):
        return block[len(tail) :]
    at = block.rfind(content) if content else -1
    return _not_generated(block[at + len(content) :] if at >= 0 else "", tail)


def _not_generated(close: str, tail: str) -> str:
    """The part of the turn's closing text that the completion (``tail``) does not already end with."""
    for k in range(len(close), 0, -1):
        if tail.endswith(close[:k]):
            return close[k:]
    return close
