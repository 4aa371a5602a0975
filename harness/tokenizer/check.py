"""``harness tokenizer check NAME|DIR``: will token-in/token-out hold with this chat template?

Users run this before they train a new model. A session server that keeps the
model's exact tokens tokenizes only the messages a request appends: it renders
them after a fixed stand-in prefix (a stand-in system message, user message
and an assistant turn shaped like the stored one, tool calls included), takes
the text after the stand-in assistant's end-of-turn token, encodes it and joins
it to the stored ids (which end with the end-of-turn token the model
generated).

Where an assistant turn ends: at the *last* special token of its rendering
(what follows it is the boundary trail), not at the first special token after
its content. A template may put text between the content and that token (a
newline before ``<|im_end|>``, tool-call blocks), and a channel layout renders
one assistant message as several segments, each closed by the same token
(``analysis``, ``commentary``, one ``call`` segment per tool call, ``final``):
the model generates all of them in one completion and stops on the last. The
template's own rendering of the appended messages is the text after that
token, and that is what the server's suffix must equal. The check runs exactly the reference server's method
(``reference_impl.tito.Tito.suffix``), so its verdict is what that server will
do. The method is right for any template whose rendering of the appended
messages does not depend on *what* came before them, only on the shape of the
turn they follow. Templates that are not append-only (a think block dropped
from earlier turns, grouped tool results, an injected system prompt, a
whitespace trail) are fine; a template that numbers turns, or renders a new
message differently depending on earlier content, is not.

What the check reports, from renders of small probe conversations:

- the end-of-turn token that closes an assistant turn, and whether it is EOS;
- the boundary trail: template text after it that the model never generates;
- per role, whether the template is append-only (the render of a history that
  ends with an assistant turn is a prefix of the render with one more message
  of that role), and which roles may follow an assistant turn at all;
- per role, whether generation prompt + completion + rendered suffix reproduce
  the template's own full render (informational: where not, a server that
  re-renders history would send the model other tokens than it saw);
- the verdict. Exit 0: TITO will hold. Exit 1: it will not, with a minimal
  example diff (the shortest probe whose suffix differs from the template's own
  rendering of the same messages in the real history). Exit 2: bad input (an
  unknown name, a folder without a tokenizer or chat template).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.tokenizer import TokenizerError, load_tokenizer, resolve_tokenizer

__all__ = ["CheckResult", "check_tokenizer", "main", "suffix_after"]

Message = dict[str, Any]
Render = Callable[[list[Message], bool], str]

STAND_IN_MARK = "stand-in answer"
_CALL = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"query": "cats"}'}}
_FOLLOWERS: dict[str, list[Message]] = {
    "user": [{"role": "user", "content": "and the next question"}],
    "tool": [{"role": "tool", "tool_call_id": "call_1", "content": "tool result one"}],
    "tool+tool": [
        {"role": "tool", "tool_call_id": "call_1", "content": "tool result one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "tool result two"},
    ],
    "system": [{"role": "system", "content": "a late system note"}],
    "assistant": [{"role": "assistant", "content": "an assistant prefill"}],
}


def _answer(i: int, calls: bool = False) -> Message:
    msg: Message = {"role": "assistant", "content": f"answer number {i}"}
    if calls:
        msg["tool_calls"] = [_CALL]
    return msg


def _probes() -> list[tuple[str, list[Message]]]:
    """Histories that end with an assistant turn, shortest first (so the first failure is the minimal one)."""
    user = {"role": "user", "content": "the first question"}
    system = {"role": "system", "content": "the real system prompt"}
    thought = {**_answer(1), "reasoning_content": "a stored thought"}  # a reasoning parser's answer, as stored
    return [
        ("user, assistant", [user, _answer(1)]),
        ("system, user, assistant", [system, user, _answer(1)]),
        ("user, assistant+tool_call", [user, _answer(1, calls=True)]),
        ("user, assistant+reasoning", [user, thought]),
        (
            "user, assistant+tool_call, tool, assistant",
            [user, _answer(1, calls=True), {"role": "tool", "content": "found it"}, _answer(2)],
        ),
        (
            "system, user, assistant, user, assistant, user, assistant",
            [
                system,
                user,
                _answer(1),
                {"role": "user", "content": "a second question"},
                _answer(2),
                {"role": "user", "content": "a third question"},
                _answer(3),
            ],
        ),
    ]


def _marks(msg: Message) -> list[str]:
    """The generated parts of an assistant message as a template renders them verbatim: content, arguments."""
    marks = [str(msg["content"])] if msg.get("content") else []
    for tc in msg.get("tool_calls") or ():
        args = tc["function"]["arguments"]
        marks.append(args if isinstance(args, str) else json.dumps(args))
    return marks


def _closing(block: str, specials: frozenset[str]) -> str:
    """The special token that ends a rendered assistant turn: the last one in it ('' when there is none).

    The turn's tool-call blocks, a channel layout's several segments and any
    text before the token are the model's; only what follows the last special
    token (the trail) is the template's alone.
    """
    best: tuple[int, int, str] | None = None
    for special in specials:
        at = block.rfind(special)
        if at >= 0 and (best is None or (at, len(special)) > best[:2]):
            best = (at, len(special), special)
    return best[2] if best is not None else ""


def _tail(
    full: str, model_view: str, stored: Message, closer: str, specials: frozenset[str], before: str = ""
) -> str | None:
    """The template's own text after the stored assistant turn, in ``full`` (the render with the appended
    messages and the generation prompt); None when the turn or its closing token cannot be found there.

    ``model_view`` is the prompt the model saw plus its completion. When the
    template is append-only for this history ``full`` starts with it; when not
    (a think block or analysis segment dropped once messages follow), the turn
    ends at the first ``closer`` after its last generated part. A template whose
    closer depends on ``loop.last`` (gpt-oss: ``<|return|>`` closes the last
    answer, ``<|end|>`` an earlier one) renders another special token in that
    place, after the same text: the model's stop token stands for it, and the
    template's own text is what follows it.
    """
    if full.startswith(model_view):
        return full[len(model_view) :]
    marks = _marks(stored)
    if not marks:
        return None
    end = -1
    for mark in marks:
        at = full.rfind(mark)
        if at < 0:
            return None
        end = max(end, at + len(mark))
    at = full.find(closer, end)
    if at >= 0:
        return full[at + len(closer) :]
    view_end = max(model_view.rfind(mark) + len(mark) for mark in marks)
    lead = model_view[view_end : len(model_view) - len(closer)]
    if not full.startswith(lead, end):
        return None
    # the token in that place must close the messages before the turn too (``before``: their render), not open
    # the next message (a template that writes nothing between turns)
    found = [s for s in specials if full.startswith(s, end + len(lead)) and before.rstrip().endswith(s)]
    return full[end + len(lead) + max(map(len, found)) :] if found else None


def suffix_after(tito: Any, history: list[Message], appended: list[Message], stop_id: int) -> str:
    """Trail + the appended messages + the generation prompt, as the reference server encodes them.

    ``history`` ends with the stored assistant turn, whose tokens end with
    ``stop_id`` (the model's stop token). Raises ``TitoError`` when the method
    cannot serve the template.
    """
    system = bool(history) and history[0].get("role") == "system"
    return str(tito.suffix(history[-1], appended, stop_id, system))


@dataclass
class RoleRow:
    role: str
    follows: bool  # the template renders this role right after an assistant turn
    append_only: bool | None = None
    reproduces: bool | None = None  # gen prompt + completion + suffix == the template's own full render
    error: str = ""


@dataclass
class CheckResult:
    tokenizer: str
    verdict: str  # "holds" | "fails"
    end_of_turn: str = ""
    end_of_turn_is_eos: bool = False
    trail: str = ""
    trail_tokens: int = 0
    roles: list[RoleRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    example: str = ""  # the minimal failing example, as a diff
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "holds" else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        yn = {True: "yes", False: "no", None: "-"}
        lines = [f"tokenizer {self.tokenizer}"]
        eos = " (the EOS token)" if self.end_of_turn_is_eos else " (not EOS)"
        lines.append(f"  end of turn:    {self.end_of_turn or '(none found)'}{eos if self.end_of_turn else ''}")
        lines.append(f"  boundary trail: {self.trail!r} ({self.trail_tokens} tokens the model does not generate)")
        follows = [r.role for r in self.roles if r.follows]
        lines.append(f"  may follow an assistant turn: {', '.join(follows) or '(none)'}")
        lines.append("  role         follows  append-only  full render reproduced")
        for r in self.roles:
            extra = f"  ({r.error})" if r.error else ""
            lines.append(f"  {r.role:<12} {yn[r.follows]:<8} {yn[r.append_only]:<12} {yn[r.reproduces]}{extra}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.verdict == "holds":
            lines.append("verdict: TITO will hold (exit 0)")
        else:
            lines.extend(f"  problem: {p}" for p in self.problems)
            if self.example:
                lines.append("  minimal example (--- the template's own render, +++ the appended-suffix method):")
                lines.extend("    " + ln for ln in self.example.splitlines())
            lines.append("verdict: TITO will NOT hold (exit 1)")
        return "\n".join(lines)


def _diff(expected: str, got: str) -> str:
    exp = [json.dumps(x)[1:-1] for x in expected.splitlines(keepends=True)]
    new = [json.dumps(x)[1:-1] for x in got.splitlines(keepends=True)]
    return "\n".join(difflib.unified_diff(exp, new, "template", "suffix", lineterm="", n=1))


def _end_of_turn(render: Render, specials: frozenset[str]) -> tuple[str, str, str]:
    """(end-of-turn token, text between an assistant's content and it, the trail after it), as rendered."""
    text = render([{"role": "user", "content": "q"}, {"role": "assistant", "content": STAND_IN_MARK}], False)
    at = text.rfind(STAND_IN_MARK)
    after = text[at + len(STAND_IN_MARK) :] if at >= 0 else ""
    eot = _closing(after, specials)
    if not eot:
        return "", "", ""
    cut = after.rfind(eot)
    return eot, after[:cut], after[cut + len(eot) :]


def check_tokenizer(tok: Any, label: str = "") -> CheckResult:
    """Run every probe against ``tok``'s chat template, with the reference server's suffix method."""
    from reference_impl.tito import Tito

    def r(messages: list[Message], gen: bool) -> str:
        return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen))

    res = CheckResult(tokenizer=label, verdict="holds")

    def encode(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False))

    try:
        r([{"role": "user", "content": "q"}], True)
    except Exception as exc:
        res.verdict = "fails"
        res.problems.append(f"the template cannot render a single user message: {exc}")
        return res
    tito = Tito(tok)
    specials = tito.special_texts
    eot, gap, trail = _end_of_turn(r, specials)
    res.end_of_turn = eot
    res.end_of_turn_is_eos = bool(eot) and eot == getattr(tok, "eos_token", None)
    if not eot:
        res.verdict = "fails"
        res.problems.append(
            "no special token closes an assistant turn after its content: the model's completion "
            "cannot be joined to the next turn's suffix at a token boundary"
        )
        return res
    res.trail, res.trail_tokens = trail, len(encode(trail)) if trail else 0
    if gap:
        res.notes.append(
            f"the template puts {gap!r} between an assistant's content and {eot}: the model's completion ends "
            "with the end-of-turn token whether or not it generates that text, and TITO keeps what it generated"
        )
    probes = _probes()
    # (probe index, role index, headline, the template's text, the method's text): the shortest probe wins
    failures: list[tuple[int, int, str, str, str]] = []
    re_render_differs: list[str] = []
    for ri, (role, appended) in enumerate(_FOLLOWERS.items()):
        row = RoleRow(role, follows=True)
        res.roles.append(row)
        for pi, (name, history) in enumerate(probes):
            where = f"after [{name}], appending {role}"
            stored = history[-1]
            if role.startswith("tool") and not stored.get("tool_calls"):
                continue  # tool results follow the turn that called the tools (strict templates refuse the rest)
            try:
                closed = r(history, False)
                head = r(history[:-1], True)
            except Exception:  # the template refuses this history shape (e.g. strict role alternation)
                continue
            try:
                full = r([*history, *appended], True)
            except Exception as exc:
                row.follows, row.error = False, f"the template refuses it: {str(exc)[:80]}"
                break
            # append-only: the stored history's render is a prefix of the render with this message
            grows = full.startswith(closed)
            row.append_only = grows if row.append_only is None else row.append_only and grows
            block = closed[len(head) :] if closed.startswith(head) else None
            if block is None:
                failures.append(
                    (
                        pi,
                        ri,
                        f"{where}: the generation prompt is not a prefix of the rendered assistant turn, so the "
                        "model's completion does not start where the prompt ends",
                        closed,
                        head,
                    )
                )
                continue
            # the model generates the whole turn, every segment of it, and stops on its closing token
            closer = _closing(block, specials)
            completion = block[: block.rfind(closer) + len(closer)] if closer else block
            before = r(history[:-1], False)
            tail = _tail(full, head + completion, stored, closer, specials, before) if closer else None
            try:
                mine = suffix_after(tito, history, appended, int(tok.convert_tokens_to_ids(closer or eot)))
            except Exception as exc:  # TitoError: the server refuses it; or the template raised on the stand-in
                failures.append((pi, ri, f"{where}: the server refuses it: {exc}", tail or full, ""))
                continue
            if tail is None:
                failures.append((pi, ri, f"{where}: no end-of-turn token after the assistant turn", full, mine))
                continue
            if mine != tail:
                failures.append(
                    (
                        pi,
                        ri,
                        f"{where}: the suffix rendered after the stand-in prefix differs from the template's own "
                        "rendering of the same messages after the real history",
                        tail,
                        mine,
                    )
                )
            same = head + completion + mine == full
            row.reproduces = same if row.reproduces is None else row.reproduces and same
            if not same and mine == tail and not re_render_differs:
                re_render_differs.append(f"{name} + {role}")
        if row.follows and row.append_only is None:
            row.error = row.error or "not probed: the template renders none of the probe histories"
    if failures:
        failures.sort(key=lambda f: (f[0], f[1]))
        res.verdict = "fails"
        seen: set[str] = set()
        for _, _, headline, _, _ in failures:  # one line per distinct reason, the minimal example's first
            reason = headline.split(": ", 1)[1]
            if reason not in seen:
                seen.add(reason)
                res.problems.append(headline)
        _, _, _, expected, got = failures[0]
        res.example = _diff(expected, got)
    if not any(row.follows for row in res.roles if row.role == "user"):
        res.verdict = "fails"
        res.problems.append("a user message cannot follow an assistant turn: no multi-turn episode can be served")
    if re_render_differs:
        res.notes.append(
            "stored turns re-render differently once messages follow (first: "
            f"{re_render_differs[0]}): TITO keeps the tokens the model saw; a server that re-renders history "
            "would send other ones"
        )
    if any(row.append_only is False for row in res.roles):
        res.notes.append("not append-only: re-rendering the stored history is never right for this template")
    return res


def check_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="harness tokenizer check",
        description="Will token-in/token-out hold with this tokenizer's chat template? 0 yes, 1 no, 2 bad input.",
    )
    p.add_argument("tokenizer", metavar="NAME|DIR", help="a shipped tokenizer name or a local tokenizer folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(list(argv))
    try:
        resolve_tokenizer(args.tokenizer)
        tok = load_tokenizer(args.tokenizer)
    except TokenizerError as exc:
        print(f"harness tokenizer check: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # a folder transformers cannot read
        print(f"harness tokenizer check: --tokenizer {args.tokenizer}: cannot load it: {exc}", file=sys.stderr)
        return 2
    res = check_tokenizer(tok, args.tokenizer)
    print(json.dumps(res.to_dict(), indent=1) if args.json else res.text())
    return res.exit_code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check",):
        wants_help = bool(args) and args[0] in ("-h", "--help")
        print("usage: harness tokenizer check NAME|DIR [--json]", file=sys.stdout if wants_help else sys.stderr)
        return 0 if wants_help else 2
    return check_main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
