"""Property: over any conversation, the ids sent on each turn are the model's view, for every shipped family.

The model's view of turn k+1 is the checkpoint it extends (turn 1's rendered
prompt, then each completion verbatim, each appended suffix) followed by the
suffix of the new messages. The oracle computes that suffix from the *real*
conversation: it renders the whole conversation with the family's template,
finds the end of what the model generated in the last kept assistant turn (its
last content or tool-call arguments, then the family's stop token, which the
test names itself) and takes the text after it; after a truncated answer the
turn's closing starts at the stop token. The server under test (``Tito``)
renders only the appended messages after a stand-in; the two must agree.

Generated conversations: with or without a system message, plain answers,
tool calls answered by one or two tool results, reasoning content, a
``length``-truncated answer, a one-step rollback (the last request re-sent with
its last message changed), a retry of the first turn, and an aborted turn
followed by its retry. Two tests show the property has teeth: the previous
method (render the whole request, cut off the rendering of the stored history)
and a re-tokenizing server both fail it on ``reasoning``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.tokenizer import SHIPPED, load_tokenizer
from reference_impl.sessions import Session
from reference_impl.tito import Message, SessionView, Tito, TitoError, TurnPlan

STOP = {"headers": "<|eot|>"}  # every other shipped family stops on <|im_end|>
KINDS = ("user", "tools", "reason", "length", "rollback", "first_retry", "abort")
Planner = Callable[[SessionView, list[Message]], TurnPlan]


@dataclass
class Turn:
    request: list[Message]
    base: list[int]  # the checkpoint the request was built on
    prompt: list[int]
    reply: Message
    completion: list[int]


@dataclass
class Episode:
    """Drives ``Tito`` + ``Session`` (Phase 1 plan, Phase 3 commit) and checks every plan against the oracle."""

    family: str
    tito: Tito
    planner: Planner
    session: Session = field(default_factory=lambda: Session("s"))
    turns: list[Turn] = field(default_factory=list)  # the committed branch
    n: int = 0

    @property
    def stop(self) -> str:
        return STOP.get(self.family, "<|im_end|>")

    # -- the family's model
    def answer(self, request: list[Message], kind: str, tools: int) -> tuple[Message, list[int]]:
        self.n += 1
        reply: Message = {"role": "assistant", "content": f"answer-{self.n} ok"}
        if kind == "reason":
            reply["reasoning_content"] = f"thought-{self.n}"
        if kind == "tools":
            reply["content"] = f"answer-{self.n} calling" if self.n % 2 else ""
            reply["tool_calls"] = [
                {
                    "id": f"call-{self.n}-{i}",
                    "type": "function",
                    "function": {"name": "search", "arguments": json.dumps({"q": f"answer-{self.n}-{i}"})},
                }
                for i in range(tools)
            ]
        opened = self.tito.render(request, generation_prompt=True)
        closed = self.tito.render([*request, reply], generation_prompt=False)
        assert closed.startswith(opened)  # every shipped template renders the last turn after its prompt
        block = closed[len(opened) :]
        body = block[: block.index(self.stop, block.rindex(f"answer-{self.n}"))]
        ids = self.tito.encode(body)
        if kind != "length":
            return reply, [*ids, *self.tito.encode(self.stop)]
        cut = ids[: max(1, len(ids) - 2)]
        text = self.tito.decode(cut)
        pre = body[: body.index(f"answer-{self.n}")]
        cut_reply: Message = {"role": "assistant", "content": text[len(pre) :] if text.startswith(pre) else text}
        if text.startswith(pre) and "reasoning_content" in reply:
            cut_reply["reasoning_content"] = reply["reasoning_content"]
        return cut_reply, cut

    # -- the oracle
    def expected(self, request: list[Message], base_turn: Turn | None) -> list[int]:
        if base_turn is None:
            return self.tito.encode(self.tito.render(request, generation_prompt=True))
        full = self.tito.render(request, generation_prompt=True)
        last = base_turn.reply
        anchor = last["tool_calls"][-1]["function"]["arguments"] if last.get("tool_calls") else last["content"]
        end = full.rindex(anchor) + len(anchor)
        close = full.index(self.stop, end)
        ended = self.tito.decode(base_turn.completion[-1:]) == self.stop
        suffix = full[close + len(self.stop) :] if ended else full[close:]
        return [*base_turn.prompt, *base_turn.completion, *self.tito.encode(suffix)]

    # -- one request
    def send(self, request: list[Message], base_turn: Turn | None, kind: str, tools: int) -> None:
        plan = self.planner(self.session.view(), request)
        want = self.expected(request, base_turn)
        base = [*base_turn.prompt, *base_turn.completion] if base_turn is not None else []
        assert plan.input_ids[: len(base)] == base, "the new turn does not start with the checkpoint it extends"
        assert plan.input_ids == want, (
            f"not the model's view:\n sent {self.tito.decode(plan.input_ids)!r}\n want {self.tito.decode(want)!r}"
        )
        if kind == "abort":  # the backend aborted: nothing is committed, the agent retries the same turn
            again = self.planner(self.session.view(), request)
            assert again.input_ids == plan.input_ids
            plan = again
        reply, completion = self.answer(request, kind, tools)
        commit = self.tito.commit(plan, plan.input_ids, completion, reply)  # the prefix invariant holds
        self.session.apply(commit, plan.base_assistant)
        kept = self.turns[: plan.base_assistant]
        self.turns = [*kept, Turn(request, base, plan.input_ids, reply, completion)]
        assert self.session.num_assistant == len(self.turns)

    def next_messages(self) -> list[Message]:
        t = self.turns[-1]
        msgs = [*t.request, t.reply]
        calls = t.reply.get("tool_calls") or []
        if calls:
            return msgs + [
                {"role": "tool", "tool_call_id": c["id"], "content": f"result-{self.n}-{c['id']}"} for c in calls
            ]
        return [*msgs, {"role": "user", "content": f"question-{self.n}"}]

    def run(self, system: bool, kinds: list[str], tools: int) -> None:
        first = [{"role": "user", "content": "question-0"}]
        if system:
            first.insert(0, {"role": "system", "content": "system-prompt"})
        self.send(first, None, "user", tools)
        for kind in kinds:
            if kind == "first_retry" and len(self.turns) == 1:
                self.send(first, None, "user", tools)
            elif kind == "rollback":
                last = self.turns[-1]
                changed = [*last.request[:-1], {**last.request[-1], "content": f"{last.request[-1]['content']} again"}]
                self.send(changed, self.turns[-2] if len(self.turns) > 1 else None, "user", tools)
            else:
                self.send(self.next_messages(), self.turns[-1], kind, tools)


def _episode(family: str, planner: Callable[[Tito], Planner] | None = None) -> Episode:
    tito = Tito(load_tokenizer(family))
    return Episode(family, tito, planner(tito) if planner else tito.plan)


@pytest.mark.parametrize("family", SHIPPED)
@settings(max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    system=st.booleans(),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
    tools=st.integers(min_value=1, max_value=2),
)
def test_every_turn_is_the_models_view(family: str, system: bool, kinds: list[str], tools: int) -> None:
    _episode(family).run(system, kinds, tools)


def test_every_kind_of_step_is_exercised_on_every_family() -> None:
    """The generated cases above are bounded; this fixed walk takes every step at least once."""
    for family in SHIPPED:
        _episode(family).run(True, ["tools", "reason", "length", "abort", "rollback", "user", "tools", "rollback"], 2)
        _episode(family).run(False, ["first_retry", "length", "tools", "reason"], 1)


class RenderDiff(Tito):
    """The previous method: render the whole request and cut off the rendering of the stored history."""

    def _plan(self, view: SessionView, msgs: list[Message], kwargs: dict[str, Any]) -> TurnPlan:
        if not view.assistant_at:
            return self._first_turn(msgs, 0, kwargs)
        k, discarded, cut = self._locate(view, msgs)
        if k == 0:
            return self._first_turn(msgs, discarded, kwargs)
        messages = [*view.messages[:cut], *msgs[cut:]]
        stored = self.render(messages[:cut], generation_prompt=False)
        full = self.render(messages, generation_prompt=True)
        if not full.startswith(stored):
            raise TitoError("the chat template does not render the stored history as a prefix of the new request")
        trail = stored[stored.rindex(self.eos_text) + len(self.eos_text) :]
        base = view.token_ids[: view.checkpoints[k - 1]]
        return TurnPlan([*base, *self.encode(trail + full[len(stored) :])], len(base), k, discarded, messages, base)


def test_the_previous_method_holds_on_chatml_and_fails_on_reasoning() -> None:
    _episode("chatml", lambda t: RenderDiff(t.tok).plan).run(True, ["user", "tools", "user"], 1)
    with pytest.raises(TitoError, match="does not render the stored history as a prefix"):
        _episode("reasoning", lambda t: RenderDiff(t.tok).plan).run(True, ["user"], 1)


def test_a_retokenizing_server_fails_the_property_on_reasoning() -> None:
    _episode("chatml", lambda t: t.plan_retokenized).run(True, ["user", "tools"], 1)  # indistinguishable there
    with pytest.raises(AssertionError, match="does not start with the checkpoint"):
        _episode("reasoning", lambda t: t.plan_retokenized).run(True, ["user"], 1)
