"""token_state: the stored token ids are exactly what the model saw and produced.

Token-in, token-out is the whole point of the session server: training reads
``metadata.token_ids`` and must get the real prompt and completion tokens, not a
re-tokenization. Per session snapshot:

1. ``metadata.token_ids`` == the last committed record's ``request.input_ids``
   + its completion ids (``meta_info.output_token_logprobs`` [logprob, id]);
   ``[]`` (or absent) when nothing was committed;
2. walking the committed records in order, each record's prompt extends the
   current checkpoint (prompt + completion of the previous commit), allowing
   ``max_trim_tokens`` trailing tokens of it to be dropped; otherwise it must be
   a one-step *rollback* (the protocol discards at most one assistant step): it
   extends the checkpoint before the last (or starts afresh on turn 0 when there
   is one) and its turn is not after the previous record's turn. Anything else
   is a corrupted history: a stale writer's tokens, a wrong rollback, or, when
   the first difference lies inside an earlier completion, a *re-tokenized*
   history (``retokenized``): the server re-rendered the conversation and the
   tokens the model generated were replaced by the template's rendering of
   their text (a reasoning template drops earlier think blocks, a template
   re-formats tool-call arguments). This is the model's view, read from what
   the protocol promises (records' ``input_ids`` and completion ids), never
   from a server's internals;
3. the committed records are the current branch: their number equals
   ``metadata.num_assistant`` (a server that keeps rolled-back steps in
   ``records`` sets ``checks.options.records_keep_rollbacks``);
4. ``metadata.num_assistant`` equals the depth of that checkpoint chain
   (commits minus rolled-back steps) and ``metadata.checkpoints`` (lengths),
   when present, equals the chain's lengths. A stale writer that commits on top
   of a state it never read (``no_num_assistant_guard``) bumps ``num_assistant``
   without a checkpoint to show for it.

5. the tokens a turn adds after the checkpoint it extends are the rendering of the messages it appends,
   never the stored history again (CONTEXT.md: "Only the appended messages are tokenized ... Re-rendering
   the stored history is never right"): decoded with the run's tokenizer, they contain the text of the
   message the agent appended (``appended_missing``: a retried tool result that never reached the model)
   and the first message's text no more often than the appended messages carry it, nor the text of an
   earlier answer of the chain (its completion without special tokens, 16 characters or more, unless
   something the request carries quotes it: any of the messages it appends, its system text, its tool
   definitions and other fields) (``history_resent``: the conversation rendered twice), and end with the
   template's generation prompt
   (``no_generation_prompt``: CONTEXT.md renders with ``add_generation_prompt=True``). The agent records
   both texts on the request (``probe``); the appended messages are read from the record's request
   (``messages``, the body the server forwarded) and their number from the request's message count; when
   several messages were appended and their texts are not known, the earlier-answer check is not judged
   for that turn. A request without the probe, or a run whose tokenizer cannot be loaded (an external
   server's own tokenizer folder that is not given), is not judged by this rule. A probe marked
   ``content_parts`` (the appended message's content was OpenAI content parts) is judged for "the text
   reached the model" only when the chat template renders list content (probed on the template: a user
   message with one ``text`` part); else that part is unknown with the reason: a template that drops list
   content leaves it to the server whether the text reaches the model, which CONTEXT.md does not fix.

6. the join closes the stored turn once (``join_doubled``): the special tokens around the checkpoint's end in
   the new prompt (the checkpoint's trailing special / whitespace tokens, the model's stop token among
   them, and the added tokens' leading ones, up to the appended message's first text) hold no closing
   special token more often than the chat template itself renders it between an assistant turn's
   generated text and the next message (probed on the template: a plain and a tool-call turn, then a
   user or tool message, empty or not). A server that joins at the wrong place (its closer or stop
   search, the stop token it reads) renders the turn's closing again after the model's own, a prompt
   no template renders (CONTEXT.md: "take the text after that prefix, and join it to the stored tokens
   at the boundary"). Not judged when the template cannot be probed or the tokenizer is not loadable.

7. a turn rendered from scratch (the first committed record, or a first-turn retry that starts afresh) is the
   chat template's rendering of the request's messages (``first_turn_render``; CONTEXT.md: "First turn (no
   stored tokens): render the messages with the tokenizer's chat template (add_generation_prompt=True)"):
   its prompt, decoded with the run's tokenizer, equals ``apply_chat_template(messages,
   add_generation_prompt=True)`` of the messages the record's request carries, with or without the request's
   ``chat_template_kwargs`` and ``tools`` (CONTEXT.md fixes neither; on our reference server, whose docs say a
   request's ``chat_template_kwargs`` reach the template on every render of the turn, only the rendering with
   the kwargs the client sent counts, here and for rule 5's generation prompt: ``ops.reference_target``),
   compared after NFC normalization (the tokenizer's own). That rendering is the template's, as Hugging Face
   defines it: e.g. it fills ``thinking`` from ``reasoning_content`` for templates that read that name, so a
   server that renders through the bare compiled template loses an earlier turn's reasoning. Not judged when
   the record carries no messages, a message's content is not a string (content parts: how a server flattens
   them is its choice), the template cannot render them, or the tokenizer is not loadable.

A record without ``input_ids`` or without ``output_token_logprobs`` makes the
session unknown (the server did not keep what TITO needs). The protocol fixes
that ``metadata`` holds the accumulated token ids, not the key's name: it is
``target.protocol.token_ids_key`` or detected (``ops.find_token_key``); when no
key is recognizably the token ids, rule 1 is unknown with the reason. A
record's turn is the turn of the request it is linked to (``ops.Links``).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import (
    Op,
    Snapshot,
    by_session,
    max_trim_tokens,
    option,
    pair_ops,
    record_checkpoint,
    record_input_ids,
    record_kind,
    record_reported_prompt,
    record_rid,
    record_turn,
    reference_target,
    server_max_trim,
    snapshots,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, joins_whole, merge_violations
from harness.rundata import RunData

# the most trailing tokens a server whose max_trim_tokens the run does not know may drop before a broken prefix is
# a violation rather than unknown: CONTEXT.md says "a few"; a server configured beyond it must declare its value
A_FEW = 16


def _tokenizer(run: RunData) -> Any:
    """The run's tokenizer (the scenario's ``target.tokenizer``), or None when it cannot be loaded here."""
    target = run.scenario.get("target")
    name = target.get("tokenizer") if isinstance(target, dict) else None
    try:
        from harness.tokenizer import load_tokenizer

        return load_tokenizer(name if isinstance(name, str) else None)
    except Exception:
        return None


def _decoder(run: RunData) -> Callable[[list[int]], str | None] | None:
    """Token ids -> text with the run's tokenizer (the scenario's ``target.tokenizer``), or None."""
    target = run.scenario.get("target")
    name = target.get("tokenizer") if isinstance(target, dict) else None
    try:
        from harness.tokenizer import load_tokenizer

        tok = load_tokenizer(name if isinstance(name, str) else None)
    except Exception:  # not loadable here (another box's folder): rule 5 is not judged
        return None

    def decode(ids: list[int]) -> str | None:
        try:
            return str(tok.decode(ids, skip_special_tokens=False))
        except Exception:  # an id outside the vocabulary: other rules say what is wrong
            return None

    return decode


def generation_prompt(run: RunData, template_kwargs: dict[str, Any] | None = None) -> str | None:
    """The text the chat template appends for ``add_generation_prompt=True`` (None: not separable).

    ``template_kwargs`` are the request's ``chat_template_kwargs``: they may change it (the reasoning
    family's ``enable_thinking=False`` closes an empty think block after the assistant header).
    """
    target = run.scenario.get("target")
    name = target.get("tokenizer") if isinstance(target, dict) else None
    try:
        from harness.tokenizer import load_tokenizer

        tok = load_tokenizer(name if isinstance(name, str) else None)
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        kw = dict(template_kwargs or {})
        bare = str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False, **kw))
        full = str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kw))
    except Exception:
        return None
    tail = full[len(bare) :] if full.startswith(bare) else ""
    return tail if tail.strip() else None


def extends(prefix: list[int], ids: list[int], trim: int) -> bool:
    """``prefix`` minus up to ``trim`` trailing tokens is a prefix of ``ids``."""
    for k in range(0, min(trim, len(prefix)) + 1):
        p = prefix[: len(prefix) - k]
        if ids[: len(p)] == p:
            return True
    return False


def renders_content_parts(run: RunData) -> bool | None:
    """Can the run's chat template take a user message's OpenAI content parts and lose their text?

    Rendered a user message with one ``text`` part: True when the text appears (the template renders list
    content) or the template raises (it cannot take list content, so a server that commits such a turn
    built the text itself, and the parts' text is the message); False when it renders without raising and
    without the text (it drops list content: a server that passes the list to the template renders what
    the template says, one that flattens it renders the text; CONTEXT.md does not choose). None: the
    tokenizer cannot be loaded.
    """
    target = run.scenario.get("target")
    name = target.get("tokenizer") if isinstance(target, dict) else None
    try:
        from harness.tokenizer import load_tokenizer

        tok = load_tokenizer(name if isinstance(name, str) else None)
    except Exception:
        return None
    mark = "Pangolin parts probe"
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": mark}]},
    ]
    try:
        return mark in str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    except Exception:  # a template that refuses list content: no server can pass the list to it
        return True


def _strings(v: Any, out: list[str]) -> list[str]:
    """Every string inside a JSON value (message contents, content parts, tool definitions, arguments)."""
    if isinstance(v, str):
        out.append(v)
    elif isinstance(v, dict):
        for x in v.values():
            _strings(x, out)
    elif isinstance(v, list):
        for x in v:
            _strings(x, out)
    return out


def _request_messages(r: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The record's request ``messages`` (the forwarded body), None when absent or empty."""
    req = r.get("request")
    msgs = req.get("messages") if isinstance(req, dict) else None
    if isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs):
        return msgs
    return None


def _message_count(r: dict[str, Any], op: Op | None) -> int | None:
    """How many messages the committed request carried: from its record, else from the agent's op."""
    msgs = _request_messages(r)
    if msgs is not None:
        return len(msgs)
    n = op.invoke.get("messages") if op is not None else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


_PROBE_SYSTEM, _PROBE_USER, _PROBE_CONTENT, _PROBE_ARG, _PROBE_NEXT = (
    "Aardvark",
    "Bison",
    "Xylophone",
    "Quokka",
    "Zebra",
)


class _Joins:
    """Rule 6's view of one tokenizer: its special tokens and the closing runs its template renders."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        specials: dict[int, str] = {
            int(i): str(a.content)
            for i, a in (getattr(tok, "added_tokens_decoder", None) or {}).items()
            if getattr(a, "special", False) and a.content
        }
        self.special_ids = specials
        self.texts = sorted(set(specials.values()), key=len, reverse=True)
        self._sep: dict[int, bool] = {}
        self.limits: dict[str, int] | None = self._probe()

    def _run(self, text: str) -> list[str]:
        """The special tokens of ``text``'s leading run of special tokens and whitespace."""
        out: list[str] = []
        p = 0
        while p < len(text):
            hit = next((t for t in self.texts if text.startswith(t, p)), None)
            if hit is not None:
                out.append(hit)
                p += len(hit)
            elif text[p].isspace():
                p += 1
            else:
                break
        return out

    def _probe(self) -> dict[str, int] | None:
        """Per closing special token, the most times the template renders it between a turn and the next."""
        fn = {"name": "search", "arguments": json.dumps({"query": _PROBE_ARG})}
        call: dict[str, Any] = {"id": "call_probe1", "type": "function", "function": fn}
        shapes = [
            ({"role": "assistant", "content": _PROBE_CONTENT}, False),
            ({"role": "assistant", "content": _PROBE_CONTENT, "tool_calls": [call]}, True),
            ({"role": "assistant", "content": "", "tool_calls": [call]}, True),
        ]
        limits: dict[str, int] = {}
        judged = 0
        for msg, calls in shapes:
            nexts = [{"role": "user", "content": c} for c in (_PROBE_NEXT, "")]
            if calls:
                nexts += [{"role": "tool", "tool_call_id": "call_probe1", "content": c} for c in (_PROBE_NEXT, "")]
            for nxt in nexts:
                head = [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}]
                try:
                    text = str(
                        self.tok.apply_chat_template([*head, msg, nxt], tokenize=False, add_generation_prompt=True)
                    )
                except Exception:  # a template that refuses this shape: the others still say
                    continue
                a = max(text.rfind(_PROBE_CONTENT) + len(_PROBE_CONTENT), text.rfind(_PROBE_ARG) + len(_PROBE_ARG))
                if a < len(_PROBE_ARG):
                    continue
                u = text.find(_PROBE_NEXT, a) if nxt["content"] else len(text)
                seg = text[a : u if u >= 0 else len(text)]
                first = min((i for i in (seg.find(t) for t in self.texts) if i >= 0), default=-1)
                if first < 0:
                    continue
                counts: dict[str, int] = {}
                for t in self._run(seg[first:]):
                    counts[t] = counts.get(t, 0) + 1
                for t, n in counts.items():
                    limits[t] = max(limits.get(t, 0), n)
                judged += 1
        return limits if judged else None

    def is_sep(self, tid: int) -> bool:
        got = self._sep.get(tid)
        if got is None:
            try:
                got = tid in self.special_ids or not str(self.tok.decode([tid])).strip()
            except Exception:
                got = False
            self._sep[tid] = got
        return got

    def doubled(self, ids: list[int], start: int, b: int) -> list[str]:
        """The closing specials the join at ``b`` renders more often than the template (empty: none)."""
        if self.limits is None:
            return []
        lo = b
        while lo > start and self.is_sep(ids[lo - 1]):
            lo -= 1
        hi = b
        while hi < len(ids) and self.is_sep(ids[hi]):
            hi += 1
        counts: dict[str, int] = {}
        for t in ids[lo:hi]:
            text = self.special_ids.get(t)
            if text is not None and text in self.limits:
                counts[text] = counts.get(text, 0) + 1
        return [t for t, n in counts.items() if n > self.limits[t]]


def _load_joins(run: RunData) -> _Joins | None:
    target = run.scenario.get("target")
    name = target.get("tokenizer") if isinstance(target, dict) else None
    try:
        from harness.tokenizer import load_tokenizer

        return _Joins(load_tokenizer(name if isinstance(name, str) else None))
    except Exception:  # not loadable here: rule 6 is not judged
        return None


class TokenState:
    name = "token_state"
    _joins: _Joins | None = None
    _decode: Callable[[list[int]], str | None] | None = None
    _tok: Any = None
    _gen: str | None = None
    _gens: dict[str, str | None]
    _parts: bool | None = None
    _undecided: dict[str, str]
    _trim_known: bool
    _run: RunData

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    whole_when = staticmethod(joins_whole)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # The token key is the run's (ops.find_token_key): the spill decides it over every session's snapshot.

    def part(self, part: Part) -> dict[str, Any]:
        try:
            return self._part(part)
        finally:  # the registered instance is shared by every run checked: it keeps nothing of this one
            self._decode = self._gen = self._joins = self._parts = self._tok = None
            self.__dict__.pop("_run", None)
            self.__dict__.pop("_gens", None)
            self.__dict__.pop("_undecided", None)

    def _part(self, part: Part) -> dict[str, Any]:
        run = part.run
        keep_rollbacks = bool(option(run, "records_keep_rollbacks", False))
        ops = pair_ops(run.history)
        snaps, _ = snapshots(run, ops, part.context.token_key)
        chats = by_session(ops, "chat")
        trim = max_trim_tokens(run)
        # a server whose tolerance the run does not know may drop more than the assumed 2 ("a few", CONTEXT.md)
        self._trim_known = server_max_trim(run)[0] is not None
        self._decode = _decoder(run)
        self._tok = _tokenizer(run) if self._decode is not None else None
        self._gen = generation_prompt(run) if self._decode is not None else None
        self._joins = _load_joins(run) if self._decode is not None else None
        self._run, self._gens, self._undecided = run, {}, {}
        # docs/reference_server.md: our server applies a request's chat_template_kwargs on every render of the turn
        self._kwargs_promised = reference_target(run)
        self._parts = renders_content_parts(run) if self._decode is not None else None
        out: list[Keyed] = []
        unknown: list[tuple[str, str]] = []
        n = 0
        for sid, snap in sorted(snaps.items()):
            if not part.mine(sid):
                continue
            n += 1
            by_rid = {o.request_id: o for o in chats.get(sid, []) if o.request_id}
            found: list[Violation] = []
            problem = self._check_one(snap, trim, found, by_rid, keep_rollbacks)
            out.extend(((sid, k), v) for k, v in enumerate(found))
            if problem and len(unknown) < 5:
                unknown.append((sid, problem))
        for why, sid in sorted(self._undecided.items(), key=lambda kv: kv[1]):
            if len(unknown) < 5:
                unknown.append((sid, why))
        key = next(iter(snaps.values())).token_key if snaps else None
        return {"out": out, "unknown": unknown, "n": n, "key": key, "trim": trim}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        trim = max_trim_tokens(RunData(scenario=context.scenario, history=[]))
        n = sum(p["n"] for p in parts)
        key = next((p["key"] for p in parts if p["n"]), None)
        unknown = [why for _, why in sorted(kv for p in parts for kv in p["unknown"])][:5]
        where = f", token ids under metadata.{key}" if key else ""
        return verdict(
            self.name,
            merge_violations(p["out"] for p in parts),
            unknown=unknown,
            notes=f"{n} session states checked, max_trim_tokens={trim}{where}",
        )

    def _check_one(
        self, snap: Snapshot, trim: int, out: list[Violation], by_rid: dict[str, Op], keep_rollbacks: bool
    ) -> str:
        sid = snap.session
        committed = [r for r in snap.records if record_kind(r) == "committed"]
        cps: list[list[int]] = []
        for r in committed:
            cp = record_checkpoint(r)
            if cp is None or record_input_ids(r) is None:
                return f"a committed record of {sid} lacks input_ids or output_token_logprobs"
            cps.append(cp)
        loose = None if self._trim_known else A_FEW
        if self._reported_tails(committed, cps, snap.token_ids, trim, loose):
            why = (
                f"the server stored the backend's reported prompt, which drops up to {A_FEW} trailing tokens of the "
                f"previous checkpoint, more than {trim}: a server with a larger max_trim_tokens may (CONTEXT.md: a "
                "few); set checks.options.max_trim_tokens to judge it"
            )
            self._undecided.setdefault(why, sid)

        def idx(r: dict[str, Any]) -> list[int]:
            o = by_rid.get(record_rid(r) or "")
            return snap.indices + (list(o.indices) if o is not None else [])

        meta = snap.metadata
        token_ids = snap.token_ids
        expect = cps[-1] if cps else []
        unknown_tokens = ""
        if snap.token_key is None:
            if cps:
                unknown_tokens = f"token ids of {sid} not checked: {snap.token_reason}"
        elif token_ids is None and not cps:
            pass
        elif not isinstance(token_ids, list) or [int(x) for x in token_ids] != expect:
            got = len(token_ids) if isinstance(token_ids, list) else token_ids
            where = ""
            if isinstance(token_ids, list):
                ids = [int(x) for x in token_ids]
                at = next((i for i, (a, b) in enumerate(zip(expect, ids, strict=False)) if a != b), None)
                if at is None:
                    where = ": the stored tokens end differently (template text the model did not generate?)"
                elif any(len(record_input_ids(r) or []) <= at < len(cp) for r, cp in zip(committed, cps, strict=True)):
                    where = f": first difference at token {at}, inside a completion (a re-tokenized history)"
                else:
                    where = f": first difference at token {at}"
            out.append(
                Violation(
                    f"metadata.{snap.token_key} ({got} tokens) != last committed prompt + completion "
                    f"({len(expect)} tokens)" + where,
                    idx(committed[-1]) if committed else snap.indices,
                    sid,
                    "token_ids_mismatch",
                )
            )
        # the checkpoint chain: each prompt extends the last checkpoint, or rolls back exactly one step
        chain: list[list[int]] = []
        starts: list[int] = []  # where each checkpoint's completion (the model's own tokens) begins
        counts: list[int | None] = []  # messages the session holds after each checkpoint (its request + answer)
        prev_turn: int | None = None
        for r, cp in zip(committed, cps, strict=True):
            ids = record_input_ids(r) or []
            turn = record_turn(r)
            if chain and not extends(chain[-1], ids, trim):
                later_turn = turn is not None and prev_turn is not None and turn > prev_turn
                if len(chain) > 1 and extends(chain[-2], ids, trim) and not later_turn:
                    del chain[-1:], starts[-1:], counts[-1:]  # a retry that discards the last assistant step
                elif len(chain) == 1 and turn in (0, None):
                    del chain[:], starts[:], counts[:]  # a first-turn retry starts from the empty checkpoint
                elif not self._trim_known and self._within_a_few(chain[-1], ids):
                    why = (
                        f"turn {turn}'s prompt drops up to {A_FEW} trailing tokens of the previous checkpoint, more "
                        f"than {trim}: a server with a larger max_trim_tokens may (CONTEXT.md: a few); set "
                        "checks.options.max_trim_tokens to judge it"
                    )
                    self._undecided.setdefault(why, sid)
                else:
                    out.append(self._diverged(chain, starts, ids, turn, trim, idx(r), sid))
            if not chain and self._decode is not None:
                self._first_turn_rule(r, ids, by_rid.get(record_rid(r) or ""), turn, idx(r), sid, out)
            if chain and extends(chain[-1], ids, trim):
                self._suffix_rule(chain[-1], ids, trim, by_rid.get(record_rid(r) or ""), turn, idx(r), sid, out)
                op = by_rid.get(record_rid(r) or "")
                quotes = self._quotes(r, op, counts[-1])
                self._resent_rule(chain, starts, ids, op, quotes, turn, idx(r), sid, out)
                base = chain[-1]
                if self._joins is not None and ids[: len(base)] == base:
                    doubled = self._joins.doubled(ids, starts[-1], len(base))
                    if doubled:
                        out.append(
                            Violation(
                                f"committed record of turn {turn}: the prompt closes the stored turn twice at the "
                                f"checkpoint's end (token {len(base)}): {doubled} more often than the chat template "
                                "renders between a turn and the next message (the join is not at the stored "
                                "tokens' end)",
                                idx(r),
                                sid,
                                "join_doubled",
                            )
                        )
            chain.append(cp)
            starts.append(len(ids))
            n_msgs = _message_count(r, by_rid.get(record_rid(r) or ""))
            counts.append(n_msgs + 1 if n_msgs is not None else None)
            prev_turn = turn
        na = meta.get("num_assistant")
        if isinstance(na, int) and na != len(chain):
            out.append(
                Violation(
                    f"metadata.num_assistant={na} but the committed records form {len(chain)} checkpoints "
                    f"({len(committed)} committed records)",
                    snap.indices + [i for r in committed[-2:] for i in idx(r)[len(snap.indices) :]],
                    sid,
                    "num_assistant_mismatch",
                )
            )
        if isinstance(na, int) and na != len(committed) and not keep_rollbacks:
            out.append(
                Violation(
                    f"{len(committed)} committed records but num_assistant={na}: the records are not the "
                    "current branch (a stale writer's extra record, or a rolled-back step kept)",
                    snap.indices + [i for r in committed[-2:] for i in idx(r)[len(snap.indices) :]],
                    sid,
                    "records_not_branch",
                )
            )
        cpl = meta.get("checkpoints")
        if isinstance(cpl, list) and all(isinstance(x, int) for x in cpl) and cpl != [len(c) for c in chain]:
            out.append(
                Violation(
                    f"metadata.checkpoints {cpl} != lengths of the committed chain {[len(c) for c in chain]}",
                    snap.indices,
                    sid,
                    "checkpoints_mismatch",
                )
            )
        return unknown_tokens

    @staticmethod
    def _reported_tails(
        committed: list[dict[str, Any]], cps: list[list[int]], token_ids: Any, trim: int, loose: int | None = None
    ) -> bool:
        """Where a server stored the backend's reported prompt, take that as the record's checkpoint.

        CONTEXT.md: the new checkpoint is ``prompt_token_ids + completion_token_ids`` and the previous one
        must prefix it "tolerating a few trailing tokens". A backend may report prompt ids other than the
        input_ids it was sent (``meta_info.prompt_token_ids``); within that tolerated tail a server commits
        them. So a record's checkpoint is its reported prompt + completion instead of its input_ids +
        completion when (1) the reported prompt still extends, up to ``trim`` trailing tokens, the checkpoint
        the sent ids extend (the last or the one before: a rollback), and (2) what follows shows the server
        kept it: the next committed record's input_ids extend it and not the sent one (or, for the last
        record, ``metadata.token_ids`` equals it). Otherwise the input_ids stand, as before.

        ``loose`` (a server whose tolerance the run does not know): also up to that many trailing tokens; True
        when some record was taken only by it (the caller reports unknown, not a verdict on those tokens).
        """
        beyond = False
        for k, r in enumerate(committed):
            reported, sent = record_reported_prompt(r), record_input_ids(r) or []
            if k == 0 or reported is None or reported == sent:
                continue
            alt = reported + cps[k][len(sent) :]
            prev = next((cps[j] for j in (k - 1, k - 2) if j >= 0 and sent[: len(cps[j])] == cps[j]), None)
            if prev is None:
                continue
            tol = trim
            if not extends(prev, reported, trim):
                if loose is None or not extends(prev, reported, loose):
                    continue
                tol = loose
            if k + 1 < len(committed):
                nxt = record_input_ids(committed[k + 1]) or []
                kept = extends(alt, nxt, tol) and not extends(cps[k], nxt, tol)
            else:
                kept = isinstance(token_ids, list) and [int(x) for x in token_ids] == alt
            if kept:
                cps[k] = alt
                beyond = beyond or tol != trim
        return beyond

    def _suffix_rule(
        self,
        base: list[int],
        ids: list[int],
        trim: int,
        op: Op | None,
        turn: int | None,
        ops: list[int],
        sid: str,
        out: list[Violation],
    ) -> None:
        """Rule 5: the tokens after ``base`` render the appended messages, not the history again."""
        probe = op.invoke.get("probe") if op is not None else None
        if self._decode is None or not isinstance(probe, dict):
            return
        text = self._decode(ids[max(0, len(base) - trim) :])
        if text is None:
            return
        last, first, first_n = probe.get("last"), probe.get("first"), probe.get("first_n")
        # with chat_template_kwargs either rendering is the server's right: CONTEXT.md does not say it must apply them;
        # our reference server documents that it does (docs/reference_server.md), so on it only theirs counts
        kw = op.invoke.get("template_kwargs") if op is not None else None
        with_kw = self._gen_for(kw)
        promised = self._kwargs_promised and isinstance(kw, dict) and bool(kw) and bool(with_kw)
        gens = [g for g in ((with_kw,) if promised else (self._gen, with_kw)) if g]
        if gens and not any(text.endswith(g) for g in gens):
            why = f" with the request's chat_template_kwargs {kw!r} (our server applies them)" if promised else ""
            out.append(
                Violation(
                    f"committed record of turn {turn}: the prompt does not end with the template's generation "
                    f"prompt{why} {gens[-1]!r} (ends {text[-40:]!r}): the model was not asked to answer",
                    ops,
                    sid,
                    "no_generation_prompt",
                )
            )
        parts_undecided = bool(probe.get("content_parts")) and not self._parts
        if parts_undecided and isinstance(last, str) and last.strip():
            why = (
                "the chat template does not render a user message's content parts (list content): whether a "
                "content-parts turn's text reached the model is the server's choice, not judged"
            )
            self._undecided.setdefault(why, sid)
        elif isinstance(last, str) and last.strip() and last.strip() not in text:
            out.append(
                Violation(
                    f"committed record of turn {turn}: the {len(ids) - len(base)} tokens it adds after the checkpoint "
                    f"do not contain the message the agent appended ({last[:60]!r}): it never reached the model",
                    ops,
                    sid,
                    "appended_missing",
                )
            )
        if isinstance(first, str) and len(first) >= 8 and isinstance(first_n, int):
            seen = text.count(first)
            if seen > max(0, first_n - 1):
                out.append(
                    Violation(
                        f"committed record of turn {turn}: the tokens it adds after the checkpoint render the "
                        f"conversation's first message again ({first[:60]!r}, {seen}x): the stored history was "
                        "tokenized twice",
                        ops,
                        sid,
                        "history_resent",
                    )
                )

    def _first_turn_rule(
        self,
        r: dict[str, Any],
        ids: list[int],
        op: Op | None,
        turn: int | None,
        ops: list[int],
        sid: str,
        out: list[Violation],
    ) -> None:
        """Rule 7: a prompt rendered from scratch is the template's rendering of the request's messages."""
        msgs = _request_messages(r)
        if msgs is None or self._tok is None or any(not isinstance(m.get("content"), str | None) for m in msgs):
            return
        text = self._decode(ids) if self._decode is not None else None
        if text is None:
            return
        raw_req = r.get("request")
        req: dict[str, Any] = raw_req if isinstance(raw_req, dict) else {}
        kw_sets: list[dict[str, Any]] = [{}]
        for kw in (req.get("chat_template_kwargs"), op.invoke.get("template_kwargs") if op is not None else None):
            if isinstance(kw, dict) and kw and kw not in kw_sets:
                kw_sets.append(kw)
        sent = op.invoke.get("template_kwargs") if op is not None else req.get("chat_template_kwargs")
        if self._kwargs_promised and isinstance(sent, dict) and sent:
            kw_sets = [sent]  # our server applies the kwargs the client sent (docs/reference_server.md)
        tools = req.get("tools") if isinstance(req.get("tools"), list) and req.get("tools") else None
        renders: list[str] = []
        for kw in kw_sets:
            for tl in (None, tools) if tools is not None else (None,):
                try:
                    want = str(
                        self._tok.apply_chat_template(msgs, tools=tl, tokenize=False, add_generation_prompt=True, **kw)
                    )
                except Exception:  # a rendering the template refuses is not one the server could have made
                    continue
                renders.append(unicodedata.normalize("NFC", want))
        got = unicodedata.normalize("NFC", text)
        if not renders or got in renders:
            return
        want = renders[0]
        at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
        out.append(
            Violation(
                f"committed record of turn {turn}: the prompt rendered from scratch is not the chat template's "
                f"rendering of the request's {len(msgs)} messages (first difference at character {at}: the "
                f"template renders {want[at : at + 60]!r}, the prompt has {got[at : at + 60]!r})",
                ops,
                sid,
                "first_turn_render",
            )
        )

    def _resent_rule(
        self,
        chain: list[list[int]],
        starts: list[int],
        ids: list[int],
        op: Op | None,
        quotes: list[str] | None,
        turn: int | None,
        ops: list[int],
        sid: str,
        out: list[Violation],
    ) -> None:
        """Rule 5, the stored turns: the added tokens do not render an earlier answer of the chain again."""
        if self._decode is None or op is None or not isinstance(op.invoke.get("probe"), dict) or quotes is None:
            return
        added = self._decode(ids[len(chain[-1]) :])
        if added is None:
            return
        for j, (cp, start) in enumerate(zip(chain, starts, strict=True)):
            body = self._plain(cp[start:])
            if body is None or len(body) < 16 or any(body in q for q in quotes):
                continue
            if body in added:
                out.append(
                    Violation(
                        f"committed record of turn {turn}: the tokens it adds after the checkpoint render the "
                        f"answer of checkpoint {j + 1} of {len(chain)} again ({body[:60]!r}): stored turns were "
                        "tokenized twice",
                        ops,
                        sid,
                        "history_resent",
                    )
                )
                return

    @staticmethod
    def _quotes(r: dict[str, Any], op: Op | None, stored: int | None) -> list[str] | None:
        """The texts a correct rendering of this turn may carry: what the request itself sends to be rendered.

        Every message it appends (after the ``stored`` messages of the checkpoint it extends), its system
        messages, and every other field (tool definitions, ...), as strings. None when several messages
        were appended and their texts are not known (the record does not carry the request's messages).
        """
        probe = op.invoke.get("probe") if op is not None else None
        out: list[str] = []
        req = r.get("request")
        if isinstance(req, dict):
            for k, v in req.items():
                if k not in ("messages", "input_ids"):
                    _strings(v, out)
        if isinstance(probe, dict):
            out.extend(t for t in (probe.get("first"), probe.get("last")) if isinstance(t, str))
        msgs = _request_messages(r)
        n = _message_count(r, op)
        appended = n - stored if n is not None and stored is not None else None
        if msgs is None:
            return out if appended is None or appended <= 1 else None
        if appended is None or appended < 1:  # not known which are appended: every message but the answers
            picked = [m for m in msgs if m.get("role") != "assistant"]
        else:
            picked = [m for m in msgs if m.get("role") == "system"] + msgs[len(msgs) - appended :]
        for m in picked:
            _strings(m, out)
        return out

    def _plain(self, ids: list[int]) -> str | None:
        """The text of a completion without special tokens (its content as the template would render it)."""
        if self._joins is None or self._decode is None:
            return None
        text = self._decode([t for t in ids if t not in self._joins.special_ids])
        return text.strip() if text is not None else None

    def _gen_for(self, template_kwargs: Any) -> str | None:
        """The generation prompt for a request that sent these ``chat_template_kwargs`` (cached per value)."""
        if not isinstance(template_kwargs, dict) or not template_kwargs or self._gen is None:
            return self._gen
        key = json.dumps(template_kwargs, sort_keys=True, default=str)
        if key not in self._gens:
            self._gens[key] = generation_prompt(self._run, template_kwargs)
        return self._gens[key]

    @staticmethod
    def _within_a_few(last: list[int], ids: list[int]) -> bool:
        """``last`` minus at most ``A_FEW`` trailing tokens is a prefix of ``ids``."""
        at = next((i for i, (a, b) in enumerate(zip(last, ids, strict=False)) if a != b), min(len(last), len(ids)))
        return len(last) - at <= A_FEW

    @staticmethod
    def _diverged(
        chain: list[list[int]], starts: list[int], ids: list[int], turn: int | None, trim: int, ops: list[int], sid: str
    ) -> Violation:
        """Say where the prompt left the model's view; inside a completion means the history was re-tokenized."""
        last = chain[-1]
        at = next((i for i, (a, b) in enumerate(zip(last, ids, strict=False)) if a != b), min(len(last), len(ids)))
        for j, (start, cp) in enumerate(zip(starts, chain, strict=True)):
            if start <= at < min(len(cp), len(ids)):  # a token the model generated was replaced
                return Violation(
                    f"committed record of turn {turn} replaces tokens the model generated in checkpoint {j + 1} of "
                    f"{len(chain)} (token {at}: {last[at : at + 4]} became {ids[at : at + 4]}): the history was "
                    "re-tokenized, not extended",
                    ops,
                    sid,
                    "retokenized",
                )
        return Violation(
            f"committed record of turn {turn} does not extend the previous checkpoint ({len(last)} tokens, trim "
            f"{trim}, first difference at token {at}) nor roll back one step to the one before",
            ops,
            sid,
            "prefix_broken",
        )
