"""Token-in, token-out: the exact tokens the model saw, never a re-tokenization of text.

Why: RL training needs the tokens and log-probs the model actually produced.
Re-rendering the history as text and tokenizing it again is *not* the same
thing: a BPE merge across a turn boundary, a truncated (``length``) answer, or
a template that renders an assistant turn differently from what the model
generated all change the tokens silently. So the server keeps, per session,
the token ids of the last committed turn (a *checkpoint*) and only ever
appends: the tokens of a new turn are ``checkpoint + tokenize(appended
messages)``, and the answer's completion tokens are taken verbatim from the
backend.

The boundary. The model's completion ends at its end-of-turn token
(``<|im_end|>``); the chat template closes an assistant turn with more text
(``<|im_end|>\\n``). That closing *trail* is computed once, at commit, by
comparing the decoded completion with the template's rendering of the
assistant block, and it is prepended to the suffix of the next turn. A
truncated answer (no end-of-turn token) gets the whole closing as its trail.

The invariant. After a successful answer the new checkpoint is
``prompt_ids + completion_ids``; the checkpoint it was built on must be a
prefix of it, tolerating at most ``max_trim_tokens`` trailing tokens (a
backend that re-tokenizes the boundary, e.g. the template's newline). If not,
the token history is corrupt and the turn fails with a tokenization error
(500) rather than committing garbage.

Retry rollback. An agent that re-runs a tool call re-sends history that
diverges from the stored one. The server rolls back to the last committed
assistant checkpoint inside the matching prefix of messages; discarding more
than one assistant step is refused (400): that is not a retry, it is a
different episode. Rolling back past the first assistant turn means the empty
checkpoint: the whole request is rendered as a first turn.

Everything here is synchronous, pure CPU work over immutable inputs, so the
server can run it in a worker thread (the ``Executor`` seam) while the event
loop keeps serving other sessions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Commit",
    "MessageError",
    "RollbackError",
    "SessionView",
    "Tito",
    "TitoError",
    "TurnPlan",
    "message_key",
    "normalize_messages",
]


class TitoError(Exception):
    """The token history cannot be extended consistently (server-side 500)."""


class RollbackError(ValueError):
    """A diverging request that would discard more than one assistant step (400)."""


class MessageError(ValueError):
    """A malformed ``messages`` field (400)."""


Message = dict[str, Any]


def _content_text(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                raise MessageError(f"{where}.content[{j}] must be an object with a string 'text'")
            parts.append(part["text"])
        return "".join(parts)
    raise MessageError(f"{where}.content must be a string, null or a list of text parts")


def _normalize_tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise MessageError(f"{where}.tool_calls must be a list")
    calls: list[dict[str, Any]] = []
    for j, tc in enumerate(raw):
        if not isinstance(tc, dict):
            raise MessageError(f"{where}.tool_calls[{j}] must be an object")
        fn = tc.get("function", tc)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise MessageError(f"{where}.tool_calls[{j}].function.name must be a string")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str | dict | list):
            raise MessageError(f"{where}.tool_calls[{j}].function.arguments must be a string or an object")
        call: dict[str, Any] = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
        if isinstance(tc.get("id"), str):
            call["id"] = tc["id"]
        calls.append(call)
    return calls


def normalize_messages(raw: Any, *, allow_empty: bool = False) -> list[Message]:
    """Validate ``messages`` and return plain dicts the chat template can render."""
    if not isinstance(raw, list):
        raise MessageError("'messages' must be a list of message objects")
    if not raw and not allow_empty:
        raise MessageError("'messages' must not be empty")
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise MessageError(f"{where} must be an object")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise MessageError(f"{where}.role must be a non-empty string")
        msg: Message = {"role": role, "content": _content_text(m.get("content"), where)}
        if m.get("tool_calls") is not None:
            msg["tool_calls"] = _normalize_tool_calls(m["tool_calls"], where)
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str):
                msg[key] = m[key]
        out.append(msg)
    return out


def _canon_args(args: Any) -> str:
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return str(args)
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def message_key(m: Message) -> tuple[Any, ...]:
    """What makes two messages 'the same turn' (ids and null-vs-empty content are ignored)."""
    calls = tuple(
        (tc["function"]["name"], _canon_args(tc["function"]["arguments"])) for tc in m.get("tool_calls") or ()
    )
    return (m["role"], m.get("content") or "", calls, m.get("tool_call_id"))


@dataclass(frozen=True)
class SessionView:
    """An immutable snapshot of a session's token state, taken under the lock in Phase 1."""

    token_ids: tuple[int, ...] = ()
    messages: tuple[Message, ...] = ()
    keys: tuple[tuple[Any, ...], ...] = ()
    checkpoints: tuple[int, ...] = ()  # token length after each committed assistant turn
    assistant_at: tuple[int, ...] = ()  # message index of each committed assistant turn
    trails: tuple[str, ...] = ()  # template text that closes each committed assistant turn
    rendered: str = ""  # the template's rendering of ``messages`` (cached: one render per turn saved)


@dataclass
class TurnPlan:
    """What Phase 1 decided: the tokens to send and the checkpoint they extend."""

    input_ids: list[int]
    base_len: int  # tokens of the checkpoint this turn extends
    base_assistant: int  # committed assistant turns kept (after rollback)
    discarded: int  # assistant steps rolled back (0 or 1)
    messages: list[Message]  # stored versions of the kept prefix + the appended request messages
    base_ids: tuple[int, ...] = field(default=(), repr=False)
    prompt_text: str = field(default="", repr=False)  # render(messages, generation_prompt=True)


@dataclass
class Commit:
    """What Phase 3 writes into the session when it commits."""

    token_ids: list[int]
    messages: list[Message]
    keys: list[tuple[Any, ...]]
    trail: str
    completion_text: str
    rendered: str


_PROBE: list[Message] = [
    {"role": "system", "content": "probe system"},
    {"role": "user", "content": [{"type": "text", "text": "probe user"}]},
    {
        "role": "assistant",
        "content": "calling",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "probe result"},
    {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "g", "arguments": {"b": [2]}}}]},
    {"role": "tool", "tool_call_id": "c2", "content": ""},
    {"role": "assistant", "content": "done"},
    {"role": "user", "content": "again"},
]


class Tito:
    """Chat-template rendering and tokenization for one tokenizer, and the TITO rules."""

    def __init__(self, tokenizer: Any, max_trim_tokens: int = 2) -> None:
        self.tok = tokenizer
        self.max_trim_tokens = max_trim_tokens
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = backend if backend is not None and hasattr(backend, "encode") else None
        self.eos_text: str = getattr(tokenizer, "eos_token", None) or ""
        self._compiled: Any = None
        self._template_kwargs: dict[str, Any] = {}
        self._enable_fast_render()

    # -- primitives -----------------------------------------------------------------
    def render(self, messages: list[Message] | tuple[Message, ...], *, generation_prompt: bool) -> str:
        if self._compiled is not None:
            return str(
                self._compiled.render(
                    messages=list(messages), add_generation_prompt=generation_prompt, **self._template_kwargs
                )
            )
        return self._render_slow(messages, generation_prompt)

    def _render_slow(self, messages: list[Message] | tuple[Message, ...], generation_prompt: bool) -> str:
        text = self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
        return str(text)

    def _enable_fast_render(self) -> None:
        """Render with the tokenizer's compiled template directly, if that is provably the same.

        ``apply_chat_template`` spends about as long copying and normalizing the
        messages as the template itself takes. Our messages are already plain
        normalized dicts, so the compiled template (transformers' own, same
        sandbox and filters) is called directly, but only after a probe
        conversation renders identically both ways; otherwise the slow path stays.
        """
        template = getattr(self.tok, "chat_template", None)
        if not isinstance(template, str):
            return
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            compiled = _compile_jinja_template(template)
            kwargs = {k: v for k, v in dict(self.tok.special_tokens_map).items() if isinstance(k, str)}
            kwargs.update(tools=None, documents=None)
            probe = normalize_messages(_PROBE)
            for gen in (False, True):
                fast = compiled.render(messages=probe, add_generation_prompt=gen, **kwargs)
                if fast != self._render_slow(probe, gen):
                    return
        except Exception:  # any doubt: keep the reference path
            return
        self._compiled, self._template_kwargs = compiled, kwargs

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=False))

    # -- Phase 1 --------------------------------------------------------------------
    def plan(self, view: SessionView, raw_messages: Any) -> TurnPlan:
        """Build ``input_ids`` for a request: first-turn render, suffix, or rollback + suffix."""
        msgs = normalize_messages(raw_messages)
        try:
            return self._plan(view, msgs)
        except (TitoError, RollbackError):
            raise
        except Exception as exc:  # e.g. a template's raise_exception("roles must alternate"): the client's input
            raise MessageError(f"the chat template cannot render these messages: {exc}") from exc

    def _plan(self, view: SessionView, msgs: list[Message]) -> TurnPlan:
        n = len(view.assistant_at)
        if n == 0:
            return self._first_turn(msgs, 0)
        keys = [message_key(m) for m in msgs]
        p = 0
        for a, b in zip(keys, view.keys, strict=False):
            if a != b:
                break
            p += 1
        extends = p == len(view.keys) and len(msgs) > p
        k = n if extends else sum(1 for idx in view.assistant_at if idx < p)
        discarded = n - k
        if discarded > 1:
            raise RollbackError(
                f"request diverges from the stored history at message {p}: it would discard {discarded} assistant "
                "steps, at most one may be rolled back"
            )
        if k == 0:
            return self._first_turn(msgs, discarded)
        cut = view.assistant_at[k - 1] + 1
        messages = [*view.messages[:cut], *msgs[cut:]]  # the stored versions are what the tokens came from
        base_len = view.checkpoints[k - 1]
        base_ids = view.token_ids[:base_len]
        stored_text = (
            view.rendered if k == n and view.rendered else self.render(messages[:cut], generation_prompt=False)
        )
        full_text = self.render(messages, generation_prompt=True)
        if not full_text.startswith(stored_text):
            raise TitoError("the chat template does not render the stored history as a prefix of the new request")
        suffix = view.trails[k - 1] + full_text[len(stored_text) :]
        return TurnPlan([*base_ids, *self.encode(suffix)], base_len, k, discarded, messages, base_ids, full_text)

    def _first_turn(self, msgs: list[Message], discarded: int) -> TurnPlan:
        text = self.render(msgs, generation_prompt=True)
        return TurnPlan(self.encode(text), 0, 0, discarded, msgs, (), text)

    # -- Phase 3 --------------------------------------------------------------------
    def check_prefix(self, base_ids: tuple[int, ...] | list[int], new_ids: list[int]) -> None:
        """The checkpoint a turn extends must prefix the new one, up to ``max_trim_tokens`` trailing tokens."""
        n = len(base_ids)
        if len(new_ids) >= n and new_ids[:n] == list(base_ids):
            return
        i = 0
        for a, b in zip(base_ids, new_ids, strict=False):
            if a != b:
                break
            i += 1
        if n - i > self.max_trim_tokens:
            raise TitoError(
                f"prefix invariant broken: previous checkpoint ({n} tokens) diverges from the new one at token {i}, "
                f"{n - i} trailing tokens differ (max_trim_tokens={self.max_trim_tokens})"
            )

    def commit(self, plan: TurnPlan, prompt_ids: list[int], completion_ids: list[int], assistant: Any) -> Commit:
        """Check the invariant and compute the state a successful turn commits."""
        new_ids = [*prompt_ids, *completion_ids]
        self.check_prefix(plan.base_ids, new_ids)
        (reply,) = normalize_messages([assistant])
        messages = [*plan.messages, reply]
        completion_text = self.decode(completion_ids)
        opened = plan.prompt_text or self.render(plan.messages, generation_prompt=True)
        closed = self.render(messages, generation_prompt=False)
        trail = self._trail(opened, closed, completion_text)
        return Commit(new_ids, messages, [message_key(m) for m in messages], trail, completion_text, closed)

    def _trail(self, opened: str, closed: str, completion_text: str) -> str:
        """Template text after what the model generated (e.g. the newline after ``<|im_end|>``).

        ``opened`` renders the prompt (ending with the generation prompt), ``closed``
        the same history with the answer appended: the assistant block is their
        difference, and the trail is what of it the model did not generate.
        """
        if closed.startswith(opened):
            block = closed[len(opened) :]
            if block.startswith(completion_text):
                return block[len(completion_text) :]
        idx = closed.rfind(self.eos_text) if self.eos_text else -1
        return closed[idx + len(self.eos_text) :] if idx >= 0 else ""

    # -- GET metadata ---------------------------------------------------------------
    def mismatch(self, messages: list[Message], token_ids: list[int]) -> dict[str, Any] | None:
        """Compare the stored tokens with the canonical tokenization of the stored messages.

        ``None`` when they agree (up to ``max_trim_tokens`` trailing template tokens the
        model did not generate); else where and how they differ. Informational: a
        mismatch is what TITO exists to preserve (the model really saw those tokens).
        """
        if not messages:
            return None
        canonical = self.encode(self.render(messages, generation_prompt=False))
        i = 0
        for a, b in zip(canonical, token_ids, strict=False):
            if a != b:
                break
            i += 1
        if i == len(token_ids) and 0 <= len(canonical) - len(token_ids) <= self.max_trim_tokens:
            return None
        return {
            "index": i,
            "canonical_len": len(canonical),
            "actual_len": len(token_ids),
            "canonical_tokens": canonical[i : i + 8],
            "actual_tokens": token_ids[i : i + 8],
            "canonical_text": self.decode(canonical[i : i + 8]),
            "actual_text": self.decode(token_ids[i : i + 8]),
        }
