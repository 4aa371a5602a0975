"""Token-in, token-out: the exact tokens the model saw, never a re-tokenization of text.

Why: RL training needs the tokens and log-probs the model actually produced.
Re-rendering the history as text and tokenizing it again is *not* the same
thing: a reasoning template drops the ``<think>`` block of earlier assistant
turns, a template re-formats tool-call arguments, a truncated (``length``)
answer is closed differently, a BPE merge crosses a turn boundary. So the
server keeps, per session, the token ids of the last committed turn (a
*checkpoint*) and only ever appends: the tokens of a new turn are
``checkpoint + encode(suffix)``, and the answer's completion tokens are taken
verbatim from the backend.

The suffix, without assuming the template is append-only. Real chat templates
render a message differently depending on what follows it (CONTEXT.md, "What
real servers and real models do"), so "render the whole request, cut off the
rendering of the stored history" breaks on them. Instead only the appended
messages are rendered, after a small fixed *stand-in* conversation: a stand-in
system message (when the stored history has one), a stand-in user message and
a stand-in assistant turn shaped like the stored last assistant turn (its tool
calls' names and ids, the type of their arguments, whether it has content or
reasoning), whose content and arguments are unique markers. In that render the
text after the last marker is what closes the stand-in's turn plus the
appended messages plus the generation prompt. The model generated its turn up
to and including its stop token (the last completion token); the suffix is
the text after that token's first occurrence there. A completion that did not
end on such a token (``length``) gets the template's whole closing: from the
template's end-of-turn token (the last special token after the markers when
the stand-in turn is rendered last) on. A template whose closer depends on
``loop.last`` (gpt-oss-style: ``<|return|>`` closes the last final answer,
``<|end|>`` an earlier one) has another special token in that place once
messages follow: the model's stop token (the last turn's closer) stands for
it, and the suffix starts after it. Stored history is never re-rendered.

What the method assumes, and refuses (docs/reference_server.md, "TITO"): the
rendering of the appended messages depends on the stored history only through
the shape of the last assistant turn and whether a system message leads; the
template renders an assistant turn's content and tool-call arguments verbatim
and closes the turn with a special token. When a template breaks one of these,
the turn fails with a ``TitoError`` naming the reason (500), never with
silently different tokens.

The invariant. After a successful answer the new checkpoint is
``prompt_ids + completion_ids``; the checkpoint it was built on must be a
prefix of it, tolerating at most ``max_trim_tokens`` trailing tokens (a
backend that re-tokenizes the boundary). If not, the token history is corrupt
and the turn fails with a tokenization error (500) rather than committing
garbage.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "STAND_IN",
    "Commit",
    "MessageError",
    "RollbackError",
    "SessionView",
    "Tito",
    "TitoError",
    "TurnPlan",
    "message_key",
    "normalize_messages",
    "template_kwargs",
]


class TitoError(Exception):
    """The token history cannot be extended consistently (server-side 500)."""


class RollbackError(ValueError):
    """A diverging request that would discard more than one assistant step (400)."""


class MessageError(ValueError):
    """A malformed ``messages`` field (400)."""


Message = dict[str, Any]

STAND_IN = "tito-stand-in"  # every stand-in text carries it; a suffix that does is refused
_SYSTEM: Message = {"role": "system", "content": f"{STAND_IN} system"}
_USER: Message = {"role": "user", "content": f"{STAND_IN} user"}
_CONTENT_MARK = f"{STAND_IN}-content"
_REASONING = f"{STAND_IN} reasoning"


def _arg_mark(i: int) -> str:
    return f"{STAND_IN}-argument-{i}"


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
        for key in ("tool_call_id", "name", "reasoning_content"):
            if isinstance(m.get(key), str):
                msg[key] = m[key]
        out.append(msg)
    return out


# the render's own arguments, and apply_chat_template's: a request may not switch tokenization or rendering mode
_RESERVED_KWARGS = frozenset(
    {
        "messages",
        "add_generation_prompt",
        "conversation",
        "chat_template",
        "continue_final_message",
        "tokenize",
        "return_dict",
        "return_tensors",
        "return_assistant_tokens_mask",
        "padding",
        "truncation",
        "max_length",
        "tokenizer_kwargs",
    }
)


def template_kwargs(raw: Any) -> dict[str, Any]:
    """A request's ``chat_template_kwargs`` (e.g. ``{"enable_thinking": false}``), validated."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and k.isidentifier() for k in raw):
        raise MessageError("'chat_template_kwargs' must be an object whose keys are identifiers")
    reserved = sorted(_RESERVED_KWARGS & raw.keys())
    if reserved:
        raise MessageError(f"'chat_template_kwargs' must not set {', '.join(reserved)}")
    return dict(raw)


def _canon_args(args: Any) -> str:
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return str(args)
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def message_key(m: Message) -> tuple[Any, ...]:
    """What makes two messages 'the same turn' (ids, reasoning and null-vs-empty content are ignored).

    Reasoning is left out because agents commonly drop ``reasoning_content``
    when they send an assistant turn back; the stored version is what counts.
    """
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


@dataclass
class TurnPlan:
    """What Phase 1 decided: the tokens to send and the checkpoint they extend."""

    input_ids: list[int]
    base_len: int  # tokens of the checkpoint this turn extends
    base_assistant: int  # committed assistant turns kept (after rollback)
    discarded: int  # assistant steps rolled back (0 or 1)
    messages: list[Message]  # stored versions of the kept prefix + the appended request messages
    base_ids: tuple[int, ...] = field(default=(), repr=False)
    suffix_text: str = field(default="", repr=False)  # the text encoded after the checkpoint (all of it on turn 1)


@dataclass
class Commit:
    """What Phase 3 writes into the session when it commits."""

    token_ids: list[int]
    messages: list[Message]
    keys: list[tuple[Any, ...]]


_PROBE: list[Message] = [
    {"role": "system", "content": "probe system"},
    {"role": "user", "content": [{"type": "text", "text": "probe user"}]},
    {
        "role": "assistant",
        "content": "calling",
        "reasoning_content": "probe thought",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "probe result"},
    {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "g", "arguments": {"b": [2]}}}]},
    {"role": "tool", "tool_call_id": "c2", "content": ""},
    {"role": "tool", "tool_call_id": "c3", "content": "second result"},
    {"role": "assistant", "content": "done"},
    {"role": "user", "content": "again"},
]


def _stand_in(last: Message) -> tuple[Message, tuple[str, ...]]:
    """A stand-in assistant turn shaped like ``last``, and the markers that end its generated parts."""
    msg: Message = {"role": "assistant", "content": _CONTENT_MARK if last.get("content") else last.get("content")}
    marks = [_CONTENT_MARK] if last.get("content") else []
    if last.get("reasoning_content"):
        msg["reasoning_content"] = _REASONING
    calls = []
    for i, tc in enumerate(last.get("tool_calls") or ()):
        args: Any = {"tito": _arg_mark(i)}
        if isinstance(tc["function"]["arguments"], str):
            args = json.dumps(args)
        call: dict[str, Any] = {"type": "function", "function": {"name": tc["function"]["name"], "arguments": args}}
        if "id" in tc:
            call["id"] = tc["id"]
        calls.append(call)
        marks.append(_arg_mark(i))
    if calls:
        msg["tool_calls"] = calls
    if not marks:  # neither content nor tool calls: mark the (empty) content so the turn can be found
        msg["content"] = _CONTENT_MARK
        marks.append(_CONTENT_MARK)
    return msg, tuple(marks)


def _freeze(kwargs: Mapping[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True, default=repr)


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
        # special token id -> text: a checkpoint that ends on one ended on the model's stop token
        self.special_ids: dict[int, str] = {
            int(tid): str(added.content)
            for tid, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
            if getattr(added, "special", False) and added.content
        }
        for text in getattr(tokenizer, "all_special_tokens", ()) or ():
            tid = tokenizer.convert_tokens_to_ids(text)
            if isinstance(tid, int) and text:
                self.special_ids.setdefault(tid, str(text))
        self.special_texts: frozenset[str] = frozenset(self.special_ids.values())
        self._closers: dict[tuple[Any, ...], str] = {}
        self._enable_fast_render()

    # -- primitives -----------------------------------------------------------------
    def render(
        self,
        messages: list[Message] | tuple[Message, ...],
        *,
        generation_prompt: bool,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        if self._compiled is not None:
            return str(
                self._compiled.render(
                    messages=list(messages),
                    add_generation_prompt=generation_prompt,
                    **{**self._template_kwargs, **(kwargs or {})},
                )
            )
        return self._render_slow(messages, generation_prompt, kwargs or {})

    def _render_slow(
        self, messages: list[Message] | tuple[Message, ...], generation_prompt: bool, kwargs: Mapping[str, Any]
    ) -> str:
        text = self.tok.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt, **kwargs
        )
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
                if fast != self._render_slow(probe, gen, {}):
                    return
        except Exception:  # any doubt: keep the reference path
            return
        self._compiled, self._template_kwargs = compiled, kwargs

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        fast = self._fast
        # the backend applies the truncation / padding a tokenizer.json may enable; ``tok.encode`` turns both
        # off (and leaves them off on the shared backend), so only a backend with neither set is the same encoding
        if fast is not None and fast.truncation is None and fast.padding is None:
            return list(fast.encode(text, add_special_tokens=False).ids)
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=False))

    # -- Phase 1 --------------------------------------------------------------------
    def plan(self, view: SessionView, raw_messages: Any, kwargs: Mapping[str, Any] | None = None) -> TurnPlan:
        """Build ``input_ids`` for a request: first-turn render, suffix, or rollback + suffix."""
        msgs = normalize_messages(raw_messages)
        try:
            return self._plan(view, msgs, dict(kwargs or {}))
        except (TitoError, RollbackError):
            raise
        except Exception as exc:  # e.g. a template's raise_exception("roles must alternate"): the client's input
            raise MessageError(f"the chat template cannot render these messages: {exc}") from exc

    def plan_retokenized(
        self, view: SessionView, raw_messages: Any, kwargs: Mapping[str, Any] | None = None
    ) -> TurnPlan:
        """BAD (variant ``retokenize_history``): re-render and re-encode the whole request every turn.

        The classic data-corruption bug: the prompt is the template's rendering of
        the text, not the tokens the model saw, and there is no checkpoint for a
        prefix check to protect. Rollback bookkeeping is kept so only the tokens differ.
        """
        msgs = normalize_messages(raw_messages)
        try:
            k, discarded, _ = self._locate(view, msgs)
            text = self.render(msgs, generation_prompt=True, kwargs=kwargs)
        except RollbackError:
            raise
        except Exception as exc:
            raise MessageError(f"the chat template cannot render these messages: {exc}") from exc
        return TurnPlan(self.encode(text), 0, k, discarded, msgs, (), text)

    def _locate(self, view: SessionView, msgs: list[Message]) -> tuple[int, int, int]:
        """(assistant checkpoints kept, steps discarded, message index the new turn appends at)."""
        n = len(view.assistant_at)
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
        return k, discarded, view.assistant_at[k - 1] + 1 if k else 0

    def _plan(self, view: SessionView, msgs: list[Message], kwargs: dict[str, Any]) -> TurnPlan:
        if not view.assistant_at:
            return self._first_turn(msgs, 0, kwargs)
        k, discarded, cut = self._locate(view, msgs)
        if k == 0:
            return self._first_turn(msgs, discarded, kwargs)
        messages = [*view.messages[:cut], *msgs[cut:]]  # the stored versions are what the tokens came from
        base_len = view.checkpoints[k - 1]
        base_ids = view.token_ids[:base_len]
        system = messages[0]["role"] == "system"
        suffix = self.suffix(messages[cut - 1], msgs[cut:], base_ids[-1] if base_ids else None, system, kwargs)
        return TurnPlan([*base_ids, *self.encode(suffix)], base_len, k, discarded, messages, base_ids, suffix)

    def _first_turn(self, msgs: list[Message], discarded: int, kwargs: dict[str, Any]) -> TurnPlan:
        text = self.render(msgs, generation_prompt=True, kwargs=kwargs)
        return TurnPlan(self.encode(text), 0, 0, discarded, msgs, (), text)

    # -- the suffix after a stored assistant turn ------------------------------------
    def suffix(
        self,
        last_assistant: Message,
        appended: list[Message],
        last_token: int | None,
        system: bool = True,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The text to encode after a checkpoint that ends with the turn ``last_assistant``.

        ``last_token`` is the checkpoint's last token (the model's stop token, or
        the last token of a truncated answer); ``system`` whether the stored
        history starts with a system message. Raises ``TitoError`` naming the
        reason when this template cannot be served by the stand-in method.
        """
        head = [_SYSTEM, _USER] if system else [_USER]
        stand_in, marks = _stand_in(last_assistant)
        full = self.render([*head, stand_in, *appended], generation_prompt=True, kwargs=kwargs)
        head_text = self.render(head, generation_prompt=False, kwargs=kwargs)
        if not full.startswith(head_text):
            raise TitoError(
                "the chat template renders the messages before an assistant turn differently when more messages "
                "follow; TITO cannot join new messages to stored tokens for this template"
            )
        after = self._after_marks(full, len(head_text), marks)
        closer = self._closer(stand_in, marks, head, kwargs)
        close_at = full.find(closer, after)
        last_closer = None
        # a template whose closer depends on loop.last closes it with another token when more messages follow
        # (gpt-oss-style: <|return|> ends the last final answer, <|end|> an earlier one)
        if close_at < 0:
            last_closer = closer
            close_at, closer = self._followed_closer(full, after, closer, stand_in, marks, head, head_text, kwargs)
        start = close_at
        stop = self.special_ids.get(last_token) if last_token is not None else None
        if stop is not None:
            at = full.find(stop, after, close_at + len(closer))
            if at >= 0:  # the model generated the template's text up to and including its stop token
                start = at + len(stop)
            elif stop == last_closer:  # it stopped on the last turn's closer, which stands for this one's
                start = close_at + len(closer)
        text = full[start:]
        if STAND_IN in text:
            raise TitoError(
                "the chat template renders earlier messages after the appended ones; "
                "TITO cannot render the new messages on their own"
            )
        return text

    def _after_marks(self, text: str, start: int, marks: tuple[str, ...]) -> int:
        end = -1
        for mark in marks:
            at = text.find(mark, start)
            if at < 0:
                raise TitoError(
                    "the chat template does not render an assistant turn's content and tool-call arguments verbatim "
                    "when more messages follow; TITO cannot find where the stored tokens end"
                )
            end = max(end, at + len(mark))
        return end

    def _closer(
        self, stand_in: Message, marks: tuple[str, ...], head: list[Message], kwargs: Mapping[str, Any] | None
    ) -> str:
        """The template's end-of-turn token: the last special token after the markers when the turn is last."""
        calls = tuple(isinstance(tc["function"]["arguments"], str) for tc in stand_in.get("tool_calls") or ())
        key = (len(head), marks[0] == _CONTENT_MARK, "reasoning_content" in stand_in, calls, _freeze(kwargs or {}))
        cached = self._closers.get(key)
        if cached is not None:
            return cached
        if len(self._closers) >= 256:  # shapes are few; per-request template kwargs must not grow it forever
            self._closers.clear()
        text = self.render([*head, stand_in], generation_prompt=False, kwargs=kwargs)
        tail = text[self._after_marks(text, len(self.render(head, generation_prompt=False, kwargs=kwargs)), marks) :]
        best: tuple[int, int, str] | None = None
        for special in self.special_texts:
            at = tail.rfind(special)
            if at >= 0 and (best is None or (at, len(special)) > best[:2]):
                best = (at, len(special), special)
        if best is None:
            raise TitoError(
                "the chat template closes an assistant turn without a special token; TITO cannot tell the model's "
                "tokens from the template's closing"
            )
        self._closers[key] = best[2]
        return best[2]

    def _followed_closer(
        self,
        full: str,
        after: int,
        closer: str,
        stand_in: Message,
        marks: tuple[str, ...],
        head: list[Message],
        before: str,
        kwargs: Mapping[str, Any] | None,
    ) -> tuple[int, str]:
        """Where, and with which special token, ``full`` closes the stand-in turn that more messages follow.

        For a template whose closer depends on ``loop.last``: the turn rendered last
        closes with ``closer`` and an earlier one with another special token at the
        same place, after the same text. The stored tokens end with the model's
        stop token (the last turn's closer) and are kept as they are; the suffix
        starts after the earlier turn's closer. ``before`` is ``head`` rendered on
        its own (the caller has it already).
        """
        text = self.render([*head, stand_in], generation_prompt=False, kwargs=kwargs)
        tail = text[self._after_marks(text, len(before), marks) :]
        lead = tail[: tail.rfind(closer)]
        at = after + len(lead)
        if full.startswith(lead, after):
            # a token that closes the messages before the turn too: not the next message's opener (a template
            # that writes no closer between turns would otherwise have the opener taken for one and dropped)
            ended = before.rstrip()
            found = [s for s in self.special_texts if full.startswith(s, at) and ended.endswith(s)]
            if found:
                return at, max(found, key=len)
        raise TitoError(
            f"the chat template does not close an assistant turn with {closer!r} or another special token in its "
            "place when more messages follow (it does when the turn is last); TITO cannot find where the stored "
            "tokens end"
        )

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
        return Commit(new_ids, messages, [message_key(m) for m in messages])

    def commit_retokenized(
        self, plan: TurnPlan, prompt_ids: list[int], completion_ids: list[int], assistant: Any
    ) -> Commit:
        """BAD (variant ``retokenize_history``): the stored tokens are the re-encoded rendering of the messages.

        What a server that keeps text and re-tokenizes hands to training: the
        template's rendering of the whole conversation (trailing template text
        the model never generated included), not the prompt and completion the
        model saw. No prefix check: there is no checkpoint to protect.
        """
        (reply,) = normalize_messages([assistant])
        messages = [*plan.messages, reply]
        ids = self.encode(self.render(messages, generation_prompt=False))
        return Commit(ids, messages, [message_key(m) for m in messages])

    # -- GET metadata ---------------------------------------------------------------
    def mismatch(self, messages: list[Message], token_ids: list[int]) -> dict[str, Any] | None:
        """Compare the stored tokens with the canonical tokenization of the stored messages.

        ``None`` when they agree (up to ``max_trim_tokens`` trailing template tokens the
        model did not generate); else where and how they differ. Informational: a
        mismatch is what TITO exists to preserve (the model really saw those tokens),
        and on a template that is not append-only (a reasoning template) it is the rule.
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
