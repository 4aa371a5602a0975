"""One RL agent episode, as a rollout worker runs it against a session server.

create -> turns -> collect -> delete. Each turn sends the whole message
history; the server must recognise the stored prefix (TITO) and tokenize only
what was appended. The behaviours that stress the server are the ones real
rollout code has:

- **abort retry**: SGLang aborted the generation (header
  ``x-sglang-aborted: 1``; or ``finish_reason == "abort"`` unless the agent
  runs behind litellm, which remaps it to ``stop`` so only the header tells);
  the agent resends the same messages, ``x-attempt`` + 1, up to
  ``max_retries``. If the retries run out the episode ends, and the server's
  provisional record is the honest final ABORTED turn.
- **timeouts**: the agent gives up on a request after ``timeout_s`` and
  retries it; the abandoned request may still run server-side, so the retry
  is a duplicate in flight. Its outcome is unknown (``info``).
- **tool-call retry**: the tool step is redone with a different tool result:
  the history is resent without the last assistant + tool messages, which
  forces the server to roll back one assistant checkpoint; the first turn can
  be redone the same way with a different user message.
- **slow upload** (``agent.upload_chunks`` > 1): the body goes in pieces over
  ``upload_ms``, as from a rollout worker on a slow or congested link; the
  history records how much was sent and when the last piece went
  (``upload_done``): a request whose body is still on its way has not
  arrived, so a DELETE answered meanwhile must win (no_resurrection).
- **chaos** hooks (see harness.chaos): duplicate in-flight copies, a
  disconnect followed by DELETE, a DELETE fired by the nemesis while the chat
  is in its proxy phase, a probe of a process that does not own the session.

Every HTTP call is one history operation. The agent never reads a clock or a
global random generator: times come from the history's clock, ids and draws
from the agent's own seeded :class:`IdSource`, waits from ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.agents._clients import REQUEST_PROGRESS, ClientFailure, HttpClient, Reply, Upload, chat_url
from harness.agents._h1 import json_bytes
from harness.chaos import Nemesis
from harness.history import History
from harness.scenario import AgentSpec, WorkloadSpec
from harness.seams import IdSource
from harness.workload import SessionPlan

__all__ = [
    "Agent",
    "ChatOutcome",
    "committed_choice",
    "framing_facts",
    "message_probe",
    "sse_completion",
    "sse_problems",
]

_RECORDED_HEADERS = frozenset({"x-sglang-aborted", "x-req-id", "server", "date", "content-length", "transfer-encoding"})
_RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
_SYSTEM = "You are a careful assistant in a reinforcement-learning rollout."


def _record_answer(rec: Any) -> dict[str, Any] | None:
    """The assistant message of a record's stored backend answer, unless it is an aborted one."""
    resp = rec.get("response") if isinstance(rec, dict) else None
    choices = resp.get("choices") if isinstance(resp, dict) else None
    c0 = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if c0 is None or c0.get("finish_reason") == "abort":
        return None
    msg = c0.get("message")
    return msg if isinstance(msg, dict) else None


def committed_choice(records: Any, candidates: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Which of the agent's own candidate answers a record holds, newest record first (None: none of them)."""
    if not isinstance(records, list):
        return None
    for rec in reversed(records):
        stored = _record_answer(rec)
        if stored is None:
            continue
        for c in candidates:
            if c.get("content") == stored.get("content"):
                return c
    return None


def _respelled(args: Any) -> Any:
    """``args`` (a JSON string) as the same value written compact with sorted keys; else unchanged."""
    if not isinstance(args, str):
        return args
    try:
        value = json.loads(args)
    except ValueError:
        return args
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def reserialized(m: dict[str, Any]) -> dict[str, Any]:
    """An assistant message with its tool calls' arguments re-serialized (``agent.reserialize_tool_arguments``)."""
    calls = m.get("tool_calls")
    if m.get("role") != "assistant" or not isinstance(calls, list) or not calls:
        return m
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict) and "arguments" in fn:
            c = {**c, "function": {**fn, "arguments": _respelled(fn["arguments"])}}
        out.append(c)
    return {**m, "tool_calls": out}


def message_probe(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What token_state needs to see that a turn's tokens are the appended messages only (CONTEXT.md, TITO).

    ``first``: the first message's text and ``first_n`` how many messages of the request carry it (the
    stored history must not be rendered again after the stored tokens); ``last``: the text of the message
    this turn appends (a user message or a tool result: it must reach the model).
    """
    out: dict[str, Any] = {}
    if not messages:
        return out
    first = messages[0].get("content")
    if isinstance(first, str) and first:
        out["first"] = first
        n = 0
        for m in messages:  # one pass, one lookup per message: this runs on every chat (#15)
            t = m.get("content")
            if isinstance(t, str) and first in t:
                n += 1
        out["first_n"] = n
    last = messages[-1].get("content")
    if isinstance(last, str) and last and messages[-1].get("role") in ("user", "tool"):
        out["last"] = last
    return out


def framing_facts(reply: Reply) -> dict[str, Any]:
    """The headers that matter to checkers (repeated ones as lists) and the wire framing.

    ``framing`` is what the http_framing checker reads: how often each header
    appeared, the declared ``content-length`` and the body length received.
    """
    seen: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for k, v in reply.header_pairs:
        counts[k] = counts.get(k, 0) + 1
        if k in _RECORDED_HEADERS:
            seen.setdefault(k, []).append(v)
    headers: dict[str, Any] = {k: (vs[0] if len(vs) == 1 else vs) for k, vs in seen.items()}
    cls = seen.get("content-length") or []
    try:
        content_length: int | None = int(cls[0]) if len(cls) == 1 else None
    except ValueError:
        content_length = None
    return {
        "headers": headers,
        "framing": {"header_counts": counts, "content_length": content_length, "body_bytes": reply.body_bytes},
    }


def sse_completion(text: str) -> dict[str, Any] | None:
    """A ``stream=true`` answer (``data: {chunk}`` events, then ``data: [DONE]``) folded into one completion."""
    content: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    finish: Any = None
    usage: Any = None
    seen = False
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        try:
            chunk = json.loads(payload)
        except ValueError:
            return None
        seen = True
        usage = chunk.get("usage") or usage
        for ch in chunk.get("choices") or []:
            delta = ch.get("delta") or {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                tool_calls.append({k: v for k, v in tc.items() if k != "index"})
            finish = ch.get("finish_reason") or finish
    if not seen:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage, "streamed": True}


def sse_problems(text: str) -> list[str]:
    """What an OpenAI streaming client would refuse in a ``stream=true`` answer (empty: well formed).

    Events are separated by blank lines; every ``data:`` payload but the last is
    a JSON ``chat.completion.chunk`` whose ``choices`` each carry a ``delta``
    object; the stream ends with ``data: [DONE]`` and nothing after it. SSE
    comments (``:``) and ``event:`` / ``id:`` / ``retry:`` fields are allowed.
    """
    problems: list[str] = []
    chunks = 0
    done = False
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(":"):
            continue
        if done:
            problems.append(f"line {n}: data after the [DONE] terminator")
            break
        field_name = line.split(":", 1)[0]
        if field_name in ("event", "id", "retry"):
            continue
        if field_name != "data":
            problems.append(f"line {n}: not an SSE field: {line[:60]!r}")
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(payload)
        except ValueError:
            problems.append(f"line {n}: data is not JSON: {payload[:60]!r}")
            continue
        chunks += 1
        if not isinstance(chunk, dict) or chunk.get("object") != "chat.completion.chunk":
            obj = chunk.get("object") if isinstance(chunk, dict) else type(chunk).__name__
            problems.append(f"line {n}: chunk object is {obj!r}, not 'chat.completion.chunk'")
            continue
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not all(
            isinstance(c, dict) and isinstance(c.get("delta"), dict) for c in choices
        ):
            problems.append(f"line {n}: chunk choices without a delta object")
    if chunks == 0:
        problems.append("no chat.completion.chunk event")
    if not done:
        problems.append("missing the data: [DONE] terminator")
    return problems


@dataclass
class ChatOutcome:
    op: int
    type: str  # "ok" | "fail" | "info"
    status: int | None = None
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    aborted: bool = False
    error: str | None = None
    kind: str | None = None  # ClientFailure kind

    @property
    def good(self) -> bool:
        return self.type == "ok" and not self.aborted and self.message is not None


class Agent:
    """Runs one :class:`SessionPlan`. ``servers`` are session-server base URLs."""

    def __init__(
        self,
        plan: SessionPlan,
        *,
        servers: Sequence[str],
        client: HttpClient,
        history: History,
        spec: AgentSpec,
        workload: WorkloadSpec,
        nemesis: Nemesis,
        model: str = "fake-sglang",
    ) -> None:
        self.plan = plan
        self.servers = list(servers)
        self.server_index = plan.server
        self.server = self.servers[plan.server]
        self.client = client
        self.history = history
        self.spec = spec
        self.workload = workload
        self.nemesis = nemesis
        self.model = model
        self.ids = IdSource(plan.seed)
        self.session: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.turns_done = 0
        self.end_reason = ""
        self._last_create_kind: str | None = None  # ClientFailure kind of the last create
        self._attempts_used = 0  # attempts of the last turn run: a redo of it continues the count
        self._hedged: list[dict[str, Any]] = []  # the good answers of the last hedged request, in arrival order
        self._respelled = False  # the last body resent earlier tool calls with re-serialized arguments

    # -- the episode -------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._episode()
        finally:
            if not self.end_reason:
                self.end_reason = "cancelled"

    async def _episode(self) -> None:
        p = self.plan
        sid = await self.create(intended=p.intended_start)
        if sid is None:
            self.end_reason = "create_failed"
            return
        self.messages = [{"role": "system", "content": _SYSTEM}, *self._demonstration(), self._user(0, 0)]
        intended = self.history.now()
        turn = 0
        redo_first = p.first_turn_retry
        next_attempt = 0
        kind = "first"
        while turn < p.turns:
            if turn > 0:
                # Intended start: the previous turn's end plus the think time, whatever the sleep overshoots.
                think = p.think_times[turn]
                intended = self.history.now() + think
                if think > 0:
                    await asyncio.sleep(think)
            if p.chaos.wrong_process_turn == turn:
                await self.nemesis.probe_wrong_process(sid, self.server_index, p.chaos.wrong_process, turn)
            result = await self.run_turn(sid, turn, intended, first_attempt=next_attempt, kind=kind)
            next_attempt = 0
            kind = "next"
            if result is None:
                return await self._finish(sid)
            self.messages.append(result)
            self.turns_done = turn + 1
            if turn == 0 and redo_first:
                # Redo turn 0 with another user message: the server rolls back past its only checkpoint.
                redo_first = False
                self.messages = [self.messages[0], *self._demonstration(), self._user(0, 1)]
                next_attempt = self._attempts_used
                kind = "first_turn_retry"
                intended = self.history.now()
                continue
            tool_calls = result.get("tool_calls") or []
            if tool_calls and self._draw() < self.workload.tool_retry_probability and turn + 1 < p.turns:
                # Take the tool step again after the next answer: remember to roll back.
                self.messages.extend(self._tool_results(tool_calls, turn, 0))
                answer = await self.run_turn(sid, turn + 1, self.history.now(), first_attempt=0, kind="next")
                if answer is None:
                    return await self._finish(sid)
                self.messages.append(answer)
                # Rollback: drop that answer and the tool results, send a different tool result.
                del self.messages[-1 - len(tool_calls) :]
                self.messages.extend(self._tool_results(tool_calls, turn, 1))
                next_attempt = self._attempts_used
                kind = "tool_retry"
                turn += 1
                intended = self.history.now()
                continue
            if tool_calls:
                self.messages.extend(self._tool_results(tool_calls, turn, 0))
            else:
                self.messages.append(self._user(turn + 1, 0))
            turn += 1
        await self._finish(sid)

    async def _finish(self, sid: str) -> None:
        if self.end_reason in ("session_gone", "disconnected"):
            return
        await self.get(sid, reason="collect")
        if self.workload.delete_at_end:
            await self.delete(sid, reason="episode_end")
        if not self.end_reason:
            self.end_reason = "done"

    # -- one turn ------------------------------------------------------------------

    async def run_turn(
        self, sid: str, turn: int, intended: float, *, first_attempt: int = 0, kind: str = "next"
    ) -> dict[str, Any] | None:
        """Send the current messages until an unaborted answer (returned) or a reason to stop (None).

        ``kind`` says what the first request of the turn is (``first``, ``next``,
        ``first_turn_retry``, ``tool_retry``); every later one is a ``retry`` of
        the same messages, recorded with why (``retry_after``): the history's
        ``request_kind`` lets the refused_legal checker judge a 4xx.
        """
        chaos = self.plan.chaos
        attempt = first_attempt
        retries = 0
        timeouts = 0
        why: str | None = None
        while True:
            body = self._body()
            how: dict[str, Any] = {"request_kind": kind if why is None else "retry", "retry_after": why}
            if self._respelled:  # the request resends earlier tool calls with their arguments re-serialized
                how["reserialized_tool_arguments"] = True
            if chaos.disconnect_turn == turn and attempt == first_attempt:
                await self._disconnect(sid, turn, attempt, body, intended, how)
                return None
            if turn in chaos.duplicate_turns and attempt == first_attempt:
                outcome = await self._duplicate(sid, turn, attempt, body, intended, how)
                attempt += 2
                if outcome.good:
                    outcome.message = await self._reconcile(sid, outcome.message, self._hedged)
            else:
                outcome = await self.chat(sid, turn, attempt, body, intended, how=how)
                attempt += 1
            self._attempts_used = attempt
            if outcome.good:
                return outcome.message
            why = (
                "abort"
                if outcome.aborted
                else "timeout"
                if outcome.type == "info"
                else f"status_{outcome.status}"
                if outcome.status is not None
                else str(outcome.kind)
            )
            if outcome.type == "info":
                timeouts += 1
                if timeouts > self.spec.timeout_retries:
                    self.end_reason = "timeouts_exhausted"
                    return None
                continue
            if outcome.status == 404:
                self.end_reason = "session_gone"
                return None
            if outcome.aborted or outcome.status in _RETRY_STATUSES or outcome.kind == "refused":
                retries += 1
                if retries > self.spec.max_retries:
                    self.end_reason = "aborts_exhausted" if outcome.aborted else "retries_exhausted"
                    return None
                if outcome.kind == "refused":
                    await asyncio.sleep(0.05 * retries)
                continue
            self.end_reason = f"status_{outcome.status}"
            return None

    def _chaos(self, sid: str, **value: Any) -> None:
        """A chaos action this agent performs on its own session, recorded as the nemesis's."""
        self.history.event(process="nemesis", f="chaos", session=sid, server=self.server, value=value)

    async def _duplicate(
        self, sid: str, turn: int, attempt: int, body: dict[str, Any], intended: float, how: dict[str, Any]
    ) -> ChatOutcome:
        """Two copies of one turn in flight (a hedged retry): the second is sent before the first returned."""
        delay = self.plan.chaos.duplicate_delay_s
        self._chaos(sid, action="duplicate_inflight", turn=turn, attempts=[attempt, attempt + 1], delay_s=delay)

        async def second() -> ChatOutcome:
            await asyncio.sleep(delay)
            return await self.chat(sid, turn, attempt + 1, body, intended, how={**how, "request_kind": "duplicate"})

        tasks = [
            asyncio.create_task(self.chat(sid, turn, attempt, body, intended, how=how)),
            asyncio.create_task(second()),
        ]
        # A hedging client takes the first good answer to arrive. When the server saw both copies at
        # once, that is the one that reached Phase 3 first, i.e. the one it committed.
        winner: ChatOutcome | None = None
        last: ChatOutcome | None = None
        self._hedged = []
        for fut in asyncio.as_completed(tasks):
            o = await fut
            last = o
            if o.good and o.message is not None:
                self._hedged.append(o.message)
            if winner is None and o.good:
                winner = o
        assert last is not None
        return winner or last

    async def _reconcile(
        self, sid: str, answer: dict[str, Any] | None, candidates: Sequence[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """After a hedged request, continue from whichever of our own copies the server committed.

        Which copy committed depends on the server's design (split lock: first to
        Phase 3; lock held across the call: the last one), so a careful rollout
        worker asks instead of guessing. It asks only *which of its own answers*
        was kept: the newest record's backend answer (the protocol promises a
        record holds it) is compared with the copies it received. The
        conversation itself stays the agent's own; nothing is read back from the
        server's stored messages (which not every server returns). Keeps
        ``answer`` when no record matches one of ours (the session is gone, or
        the kept copy is one whose answer never reached us).
        """
        r = await self.get(sid, reason="reconcile")
        records = r.body.get("records") if r is not None and isinstance(r.body, dict) else None
        return committed_choice(records, candidates) or answer

    async def _disconnect(
        self, sid: str, turn: int, attempt: int, body: dict[str, Any], intended: float, how: dict[str, Any]
    ) -> None:
        """The agent's process 'dies' mid-request (the connection drops), then the session is deleted."""
        after = self.plan.chaos.disconnect_after_s
        self._chaos(sid, action="disconnect", turn=turn, after_s=after)
        await self.chat(sid, turn, attempt, body, intended, cancel_after=after, how=how)
        self.end_reason = "disconnected"
        await self.delete(sid, reason="after_disconnect")

    # -- HTTP operations -----------------------------------------------------------

    def _headers(self, rid: str, turn: int | None, attempt: int | None) -> dict[str, str]:
        h = {"x-request-id": rid}
        if turn is not None:
            h["x-turn"] = str(turn)
        if attempt is not None:
            h["x-attempt"] = str(attempt)
        return h

    async def _call(
        self, op: int, coro: Any, cancel_after: float | None = None, up: Upload | None = None
    ) -> Reply | ChatOutcome:
        limit = self.spec.timeout_s if cancel_after is None else min(cancel_after, self.spec.timeout_s)
        progress: dict[str, bool] = {}  # the client's "sent" (REQUEST_PROGRESS), recorded when it gave up
        token = REQUEST_PROGRESS.set(progress)
        try:
            async with asyncio.timeout(limit):
                reply: Reply = await coro
        except TimeoutError:
            err = "client disconnected (chaos)" if cancel_after is not None else f"timeout after {limit:g} s"
            self.history.info(op, error=err, **progress, **(up.facts() if up is not None else {}))
            return ChatOutcome(op, "info", error=err, kind="disconnected" if cancel_after is not None else "timeout")
        except ClientFailure as exc:
            facts = up.facts() if up is not None else {}
            self.history.complete(op, "fail" if exc.outcome == "fail" else "info", error=str(exc), **facts)
            return ChatOutcome(op, exc.outcome, error=str(exc), kind=exc.kind)
        except asyncio.CancelledError:
            self.history.info(op, error="cancelled (run ended)")
            raise
        finally:
            REQUEST_PROGRESS.reset(token)
        return reply

    async def create(self, intended: float | None = None) -> str | None:
        """POST /sessions on the chosen process; if it refuses connections (dead), fail over to the next.

        The process that answers owns the session from then on.
        """
        for _ in range(len(self.servers)):
            sid = await self._create_once(intended)
            if sid is not None or self._last_create_kind != "refused":
                return sid
            self.server_index = (self.server_index + 1) % len(self.servers)
            self.server = self.servers[self.server_index]
            intended = None
        return None

    async def _create_once(self, intended: float | None) -> str | None:
        self._last_create_kind = None
        rid = self.ids.caller_request_id()
        op = self.history.invoke(
            process=self.plan.process,
            f="create",
            server=self.server,
            request_id=rid,
            intended=intended,
            client=self.client.kind,
        )
        r = await self._call(
            op, self.client.send("POST", f"{self.server}/sessions", headers=self._headers(rid, None, None))
        )
        if isinstance(r, ChatOutcome):
            self._last_create_kind = r.kind
            return None
        sid = r.body.get("session_id") if isinstance(r.body, dict) else None
        facts = framing_facts(r)
        if 200 <= r.status < 300 and isinstance(sid, str):
            self.history.ok(op, status=r.status, session=sid, **facts)
            self.session = sid
            return sid
        self.history.fail(op, status=r.status, error=r.text[:500], **facts)
        return None

    async def chat(
        self,
        sid: str,
        turn: int,
        attempt: int,
        body: dict[str, Any],
        intended: float,
        *,
        cancel_after: float | None = None,
        how: dict[str, Any] | None = None,
    ) -> ChatOutcome:
        rid = self.ids.caller_request_id()
        headers = self._headers(rid, turn, attempt)
        forced = self.plan.chaos.forced_fault(turn) if attempt == 0 else None
        if forced:
            headers["x-fake-fault"] = forced
        up = self._upload(body)
        now = self.history.now()
        op = self.history.invoke(
            process=self.plan.process,
            f="chat",
            session=sid,
            server=self.server,
            turn=turn,
            attempt=attempt,
            request_id=rid,
            intended=now if attempt > 0 else max(intended, 0.0),
            turn_intended=round(intended, 6),
            client=self.client.kind,
            messages=len(body["messages"]),
            probe=message_probe(body["messages"]),
            stream=bool(body.get("stream")),
            **({"template_kwargs": body["chat_template_kwargs"]} if "chat_template_kwargs" in body else {}),
            forced_fault=forced,
            **(how or {}),
            **({} if up is None else {"upload_chunks": len(up.chunks), "upload_bytes": up.size}),
        )
        self.nemesis.chat_sent(session=sid, server=self.server, turn=turn, chaos=self.plan.chaos)
        if up is None:
            sending = self.client.chat(self.server, sid, body, headers)
        else:
            sending = self.client.upload("POST", chat_url(self.server, sid), up, headers)
        r = await self._call(op, sending, cancel_after, up)
        if isinstance(r, ChatOutcome):
            return r
        return self._chat_reply(op, r, stream=bool(body.get("stream")), up=up)

    def _upload(self, body: dict[str, Any]) -> Upload | None:
        """This chat's body as a slow link sends it (``agent.upload_chunks``), or None: all at once.

        No draw is made unless the scenario asks for slow uploads, so every other scenario's stream of
        draws (and its history) is what it was.
        """
        spec = self.spec
        if spec.upload_chunks <= 1:
            return None
        if spec.upload_probability < 1.0 and self._draw() >= spec.upload_probability:
            return None
        lo, hi = spec.upload_ms
        span = (lo + (hi - lo) * self._draw()) / 1000.0
        return Upload.split(json_bytes(body), spec.upload_chunks, span, self.history.now)

    def _chat_reply(self, op: int, r: Reply, *, stream: bool = False, up: Upload | None = None) -> ChatOutcome:
        facts = framing_facts(r)
        if up is not None:
            facts.update(up.facts())
        if stream and r.status == 200:
            # Strict like a real streaming client: the OpenAI SSE rules, the terminator required.
            json_body = ["stream=true answered with a JSON body, not an event stream"]
            sse = r.extra.get("sse_errors")  # a client that read the stream itself judged it (the SDK's)
            facts["framing"]["sse_errors"] = (
                sse if sse is not None else json_body if r.body is not None else sse_problems(r.text)
            )
        if r.status != 200:
            err = r.body.get("error") if isinstance(r.body, dict) else None
            self.history.fail(op, status=r.status, error=err if err is not None else r.text[:500], **facts)
            return ChatOutcome(op, "fail", status=r.status)
        data = r.body if r.body is not None else r.extra.get("completion") or sse_completion(r.text)
        choice: dict[str, Any] = {}
        if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
            choice = data["choices"][0]
        msg = choice.get("message") if isinstance(choice.get("message"), dict) else None
        finish = choice.get("finish_reason")
        if self.spec.litellm_remap and finish == "abort":
            finish = "stop"
        header_abort = r.header("x-sglang-aborted") == "1"
        aborted = header_abort or finish == "abort"
        usage = data.get("usage") if isinstance(data, dict) else None
        content = msg.get("content") if msg else None
        fields: dict[str, Any] = {
            "status": r.status,
            "finish_reason": finish,
            "aborted": aborted,
            "prompt_tokens": usage.get("prompt_tokens") if isinstance(usage, dict) else None,
            "completion_tokens": usage.get("completion_tokens") if isinstance(usage, dict) else None,
            "content_sha": hashlib.sha1(content.encode()).hexdigest() if isinstance(content, str) else None,
            "tool_calls": len(msg.get("tool_calls") or []) if msg else 0,
            **facts,
        }
        if r.error or msg is None:
            # The server answered 200 but the client cannot use it: the outcome is unknown to the agent.
            err = r.error or "200 without choices[0].message"
            self.history.info(op, error=err, **fields)
            return ChatOutcome(op, "info", status=r.status, error=err, kind="protocol")
        self.history.ok(op, **fields)
        assistant = {"role": "assistant", "content": content}
        if self.spec.send_reasoning and isinstance(msg.get("reasoning_content"), str):
            assistant["reasoning_content"] = msg["reasoning_content"]
        if msg.get("tool_calls"):
            assistant["tool_calls"] = msg["tool_calls"]
        return ChatOutcome(op, "ok", status=r.status, message=assistant, finish_reason=finish, aborted=aborted)

    async def _session_request(self, method: str, f: str, sid: str, reason: str) -> tuple[int, Reply | None]:
        """One GET or DELETE of a session, invoked in the history; (op, reply or None if it never answered)."""
        rid = self.ids.caller_request_id()
        op = self.history.invoke(
            process=self.plan.process,
            f=f,
            session=sid,
            server=self.server,
            request_id=rid,
            reason=reason,
            client=self.client.kind,
        )
        r = await self._call(
            op, self.client.send(method, f"{self.server}/sessions/{sid}", headers=self._headers(rid, None, None))
        )
        return op, (None if isinstance(r, ChatOutcome) else r)

    async def get(self, sid: str, *, reason: str) -> Reply | None:
        op, r = await self._session_request("GET", "get", sid, reason)
        if r is None:
            return None
        facts = framing_facts(r)
        if r.status == 200:
            self.history.ok(op, status=r.status, body=r.body, **facts)
        else:
            self.history.fail(op, status=r.status, **facts)
        return r

    async def delete(self, sid: str, *, reason: str) -> int | None:
        op, r = await self._session_request("DELETE", "delete", sid, reason)
        if r is None:
            return None
        self.history.complete(op, "ok" if 200 <= r.status < 300 else "fail", status=r.status, **framing_facts(r))
        return r.status

    # -- message content -----------------------------------------------------------

    def _draw(self) -> float:
        return self.ids.rng.random()

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in self.messages]}
        if self.spec.stream_probability > 0 and self._draw() < self.spec.stream_probability:
            body["stream"] = True
        self._respelled = False
        if self.spec.reserialize_tool_arguments > 0 and self._draw() < self.spec.reserialize_tool_arguments:
            sent = [reserialized(m) for m in body["messages"]]
            self._respelled = sent != body["messages"]
            body["messages"] = sent
        kw = self.spec.chat_template_kwargs
        if kw and (
            self.spec.template_kwargs_probability >= 1.0 or self._draw() < self.spec.template_kwargs_probability
        ):
            body["chat_template_kwargs"] = dict(kw)
        return body

    def _user(self, turn: int, variant: int) -> dict[str, Any]:
        words = ("plan", "step", "check", "reward", "rollout", "state", "action", "policy", "value", "token")
        pick = " ".join(words[(self.plan.index + turn * 3 + variant + i) % len(words)] for i in range(4))
        alt = " (rephrased)" if variant else ""
        return {"role": "user", "content": f"Turn {turn}{alt}: {pick}."}

    def _demonstration(self) -> list[dict[str, Any]]:
        """A worked example exchange before the episode's first question (``agent.demonstration``), as few-shot
        prompts and resumed trajectories carry: a question, a tool call with its reasoning, the tool's result,
        the final answer. The first turn renders it whole, reasoning included where the template renders it."""
        if not self.spec.demonstration:
            return []
        call = {
            "id": "call_example0",
            "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": "17 * 3"})},
        }
        think = {"reasoning_content": "The product needs the calculator tool"} if self.spec.send_reasoning else {}
        return [
            {"role": "user", "content": "Example question: what is seventeen times three?"},
            {"role": "assistant", "content": "", "tool_calls": [call], **think},
            {"role": "tool", "tool_call_id": "call_example0", "content": "51"},
            {"role": "assistant", "content": "Example answer: fifty one."},
        ]

    def _tool_results(self, calls: list[dict[str, Any]], turn: int, variant: int) -> list[dict[str, Any]]:
        out = []
        for i, c in enumerate(calls):
            name = (c.get("function") or {}).get("name", "tool")
            result = f"{name} result {turn}.{i}" + (" (retried, different)" if variant else "")
            out.append({"role": "tool", "tool_call_id": c.get("id", f"call_{i}"), "content": result})
        return out
