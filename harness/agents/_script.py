"""A scripted agent: replays one session's requests at the times a script gives (``[[workload.script]]``).

Why a second agent: the episode agent (``_episode``) *generates* a rollout
(turns, retries, chaos) from a seed; an incident (harness.incident) is the
opposite, a fixed sequence of requests reconstructed from production log
lines, and its race lives in their timing. So each step runs at its own
``at_s`` (seconds since the run start), in a task of its own: a duplicate
sent 8 ms after the first copy overlaps it exactly as in the log, however
long the first copy takes. Causality is kept too: a step waits for the steps
of its session that had ended (``done_s``) before it started in the original,
then for the same gap, so a turn never overtakes the answer it followed when
the replay's backend or server is slower than production was. Nothing is
retried or invented: a step that failed in the original is replayed as a
step, and its retry is the next step.

Message contents are not in the logs. The agent keeps its own copy of the
conversation: a fixed user message per turn and the answers it received, and
sends the history up to the step's turn plus that turn's user message, so
retries and duplicates of one turn send the same body. It never reads the
history back from the server (not every server returns its stored messages).
When several copies of one turn were answered (a duplicate the server skipped
still gets its answer), a later turn must extend the one the server
committed: the agent then asks which of its own answers the newest record
holds (``GET``: a record holds the backend's answer, a protocol promise) and
keeps the first-arrived one when no record says.

Per-request backend behaviour travels with the request as ``x-fake-fault``
(``step.fault``): the session id is the server's choice at run time, so a
backend rule keyed on it could not be written down in advance. An abort that
must land at a given moment (a weight update ``abort_after_ms`` into the
generation) is sent as SGLang gets it: ``POST /abort_request`` with the
request's ``rid``, which the agent puts in the chat body and the session
server passes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from harness.agents._episode import _SYSTEM, Agent, ChatOutcome, committed_choice
from harness.scenario import ScriptStep

__all__ = ["ScriptedAgent"]


class ScriptedAgent(Agent):
    """Runs ``plan.script``: create, chats and deletes of one session, each at its ``at_s``."""

    async def _episode(self) -> None:
        steps = self.plan.script
        self.answers: dict[int, list[dict[str, Any]]] = {}  # turn -> our good answers, in arrival order
        self.chosen: dict[int, dict[str, Any]] = {}  # turn -> the answer a later turn extends
        created = asyncio.Event()
        if not any(s.kind == "create" for s in steps):
            # Never created in the window: the label is the id (a 404 incident, or a session born earlier
            # on a server that auto-creates).
            self.session = steps[0].session
            created.set()
        ended = [asyncio.Event() for _ in steps]
        ended_at = [0.0] * len(steps)

        async def one(i: int) -> None:
            try:
                await self._after(i, steps, ended, ended_at)
                await self._step(steps[i], created)
            finally:
                ended_at[i] = self.history.now()
                ended[i].set()

        await asyncio.gather(*(one(i) for i in range(len(steps))))
        self.end_reason = self.end_reason or "done"

    async def _after(
        self, i: int, steps: tuple[ScriptStep, ...], ended: list[asyncio.Event], ended_at: list[float]
    ) -> None:
        """Wait for the steps that ended before step ``i`` started in the original, then for the same gap."""
        me = steps[i]
        start = me.at_s
        for j, other in enumerate(steps):
            if j == i or other.done_s is None or other.at_s >= me.at_s or other.done_s > me.at_s:
                continue
            await ended[j].wait()
            start = max(start, ended_at[j] + (me.at_s - other.done_s))
        await self._until(start)

    async def _until(self, at_s: float) -> None:
        delay = at_s - self.history.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def _use_process(self, step: ScriptStep) -> None:
        # Read synchronously by the request methods before their first await: safe across step tasks.
        self.server_index = min(step.process, len(self.servers) - 1)
        self.server = self.servers[self.server_index]

    async def _step(self, step: ScriptStep, created: asyncio.Event) -> None:
        await self._until(step.at_s)
        self._use_process(step)
        if step.kind == "create":
            self.session = await self._create_once(step.at_s)
            created.set()
            if self.session is None:
                self.end_reason = "create_failed"
            return
        await created.wait()
        sid = self.session
        if sid is None:
            return
        if step.kind == "delete":
            await self.delete(sid, reason="script")
            return
        messages = await self._messages_for(sid, step)
        self._use_process(step)
        outcome = await self._chat_step(sid, step, {"model": self.model, "messages": messages})
        if outcome.good and outcome.message is not None:
            self.answers.setdefault(step.turn, []).append(outcome.message)

    async def _messages_for(self, sid: str, step: ScriptStep) -> list[dict[str, Any]]:
        """Our own history up to ``step.turn``, then that turn's user message.

        With fewer answered turns than the script expects (the replay diverged),
        it sends what exists, ending on the last user message, and lets the
        outcome say so rather than inventing history.
        """
        kept: list[dict[str, Any]] = [{"role": "system", "content": _SYSTEM}, self._user(0, 0)]
        for k in range(step.turn):
            answer = await self._answer_of(sid, k)
            if answer is None:
                return kept
            kept += [dict(answer), self._user(k + 1, 0)]
        return kept

    async def _answer_of(self, sid: str, turn: int) -> dict[str, Any] | None:
        """The answer of ``turn`` a later turn extends: ours, and when several copies were answered, the
        one a server record holds (asked once; the first-arrived one when no record says)."""
        if turn in self.chosen:
            return self.chosen[turn]
        got = self.answers.get(turn) or []
        if not got:
            return None
        if len(got) == 1:
            return got[0]
        r = await self.get(sid, reason="script")
        records = r.body.get("records") if r is not None and isinstance(r.body, dict) else None
        self.chosen[turn] = committed_choice(records, got) or got[0]
        return self.chosen[turn]

    async def _chat_step(self, sid: str, step: ScriptStep, body: dict[str, Any]) -> ChatOutcome:
        rid = step.request_id or self.ids.caller_request_id()
        headers = self._headers(rid, step.turn, step.attempt)
        if step.fault:
            headers["x-fake-fault"] = step.fault
        op = self.history.invoke(
            process=self.plan.process,
            f="chat",
            session=sid,
            server=self.server,
            turn=step.turn,
            attempt=step.attempt,
            request_id=rid,
            intended=step.at_s,
            turn_intended=round(step.at_s, 6),
            client=self.client.kind,
            messages=len(body["messages"]),
            stream=False,
            forced_fault=step.fault,
            script_session=step.session,
        )
        aborter: asyncio.Task[None] | None = None
        if step.abort_after_ms is not None and self.nemesis.backend_url:
            body = {**body, "rid": f"script-{rid}"}
            aborter = asyncio.create_task(self._abort_later(sid, body["rid"], step.abort_after_ms / 1000.0))
        try:
            r = await self._call(op, self.client.chat(self.server, sid, body, headers))
        finally:
            if aborter is not None:
                aborter.cancel()  # the answer came first: nothing left to abort
                await asyncio.gather(aborter, return_exceptions=True)
        if isinstance(r, ChatOutcome):
            return r
        return self._chat_reply(op, r)

    async def _abort_later(self, sid: str, rid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        backend = self.nemesis.backend_url
        value = {"action": "backend_abort", "rid": rid}
        self.history.event(process="nemesis", f="chaos", session=sid, server=backend or "", value=value)
        await self.nemesis.request("POST", f"{backend}/abort_request", {"rid": rid})
