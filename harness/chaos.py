"""The nemesis: client chaos and infrastructure faults, triggered by events where possible.

The races a session server must survive open in narrow windows: a DELETE
that lands while a chat is in its proxy phase (Phase 2, no lock held), a
client that vanishes mid-request and then deletes its session, two copies of
one turn in flight at once, a request routed to a process that does not own
the session, a server process that dies and comes back empty, a backend that
goes away for a while. Firing chaos on a timer mostly misses those windows,
so the request-level actions are tied to events: the agent tells the nemesis
"this chat was just sent" and the nemesis acts a seeded few milliseconds
later, while the backend (whose latency the scenario sets) is still working.
Only process kills and backend outages are time-triggered, because they model
incidents that are themselves time-shaped.

Which session gets which chaos is decided up front from the seed
(:func:`plan_session_chaos`), so a run's chaos is part of its replayable
plan, not of its timing. Every action is recorded in the history as
``f: "chaos"`` with a ``value`` naming it; the HTTP requests chaos sends are
ordinary history operations of the process ``"nemesis"``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.history import History
from harness.scenario import ChaosSpec

__all__ = [
    "Nemesis",
    "NoNemesis",
    "ProcessControl",
    "SessionChaos",
    "plan_session_chaos",
]


@dataclass(frozen=True)
class SessionChaos:
    """The chaos one session will meet (turn indices; None = not this session)."""

    delete_during_proxy_turn: int | None = None
    delete_delay_s: float = 0.0
    disconnect_turn: int | None = None
    disconnect_after_s: float = 0.0
    duplicate_turns: frozenset[int] = frozenset()
    duplicate_delay_s: float = 0.0
    wrong_process_turn: int | None = None
    wrong_process: int = 0  # offset (1..n-1) from the owner's index
    forced_faults: tuple[tuple[int, str], ...] = ()  # (turn, x-fake-fault value)

    def forced_fault(self, turn: int) -> str | None:
        for t, f in self.forced_faults:
            if t == turn:
                return f
        return None


def plan_session_chaos(spec: ChaosSpec, turns: int, n_servers: int, rng: random.Random) -> SessionChaos:
    """Seeded chaos for one session. Draw order is fixed, so adding a knob never reshuffles the others."""
    draws = [rng.random() for _ in range(4)]
    dtd = rng.randrange(turns)
    dct = rng.randrange(turns)
    wpt = rng.randrange(turns)
    delete_delay = rng.uniform(*spec.delete_delay_ms) / 1000.0
    disconnect_after = rng.uniform(*spec.disconnect_after_ms) / 1000.0
    dup_delay = rng.uniform(*spec.duplicate_delay_ms) / 1000.0
    dup_turns = frozenset(t for t in range(turns) if rng.random() < spec.duplicate_inflight)
    wrong = rng.randrange(1, n_servers) if n_servers > 1 else 0
    forced: list[tuple[int, str]] = []
    for t in range(turns):
        for name in sorted(spec.forced_faults):
            if rng.random() < spec.forced_faults[name]:
                forced.append((t, name))
                break
    delete_turn = dtd if draws[0] < spec.delete_during_proxy else None
    disconnect_turn = dct if draws[1] < spec.disconnect and delete_turn is None else None
    return SessionChaos(
        delete_during_proxy_turn=delete_turn,
        delete_delay_s=delete_delay,
        disconnect_turn=disconnect_turn,
        disconnect_after_s=disconnect_after,
        duplicate_turns=dup_turns,
        duplicate_delay_s=dup_delay,
        wrong_process_turn=wpt if draws[2] < spec.wrong_process_probes and n_servers > 1 else None,
        wrong_process=wrong,
        forced_faults=tuple(forced),
    )


class ProcessControl(Protocol):
    """What the runner lets the nemesis do to server processes (reference target only)."""

    async def kill(self, index: int) -> None: ...

    async def restart(self, index: int) -> None: ...


# An async callable: (method, url, json body | None) -> (status | None, error | None).
Requester = Callable[[str, str, Any], Awaitable[tuple[int | None, str | None]]]


class Nemesis:
    """Performs chaos against ``servers`` (session-server URLs) and the backend.

    ``request`` sends one HTTP request and returns (status, error); the
    runner gives it an httpx client over sockets, simulation an ASGI one.
    """

    process = "nemesis"

    def __init__(
        self,
        spec: ChaosSpec,
        history: History,
        servers: Sequence[str],
        request: Requester,
        *,
        backend_url: str | None = None,
        base_plan: dict[str, Any] | None = None,
        processes: ProcessControl | None = None,
    ) -> None:
        self.spec = spec
        self.history = history
        self.servers = list(servers)
        self.request = request
        self.backend_url = backend_url
        self.base_plan = base_plan or {}
        self.processes = processes
        self._tasks: set[asyncio.Task[None]] = set()
        self.deleted: dict[str, str] = {}  # session -> server the nemesis deleted it on

    # -- event-triggered, called by agents --------------------------------------

    def chat_sent(self, *, session: str, server: str, turn: int, chaos: SessionChaos) -> None:
        """An agent just sent a chat: maybe DELETE its session while the chat is in the proxy phase."""
        if chaos.delete_during_proxy_turn != turn:
            return
        self._spawn(self._delete_during_proxy(session, server, turn, chaos.delete_delay_s))

    async def _delete_during_proxy(self, session: str, server: str, turn: int, delay: float) -> None:
        await asyncio.sleep(delay)
        self.history.event(
            process=self.process,
            f="chaos",
            session=session,
            server=server,
            value={"action": "delete_during_proxy", "turn": turn, "delay_s": round(delay, 6)},
        )
        await self.delete(session, server, reason="delete_during_proxy")

    async def _traced(self, method: str, url: str, body: Any) -> tuple[int | None, str | None, dict[str, bool]]:
        """``self.request`` with the request's progress (``sent``) as the agents record it: a requester that
        can tell sets it (control_request's httpx trace), so the checkers' rules for a request the client gave
        up on before it left (liveness's for a DELETE) apply to the nemesis's requests too."""
        from harness.agents._clients import REQUEST_PROGRESS

        progress: dict[str, bool] = {}
        token = REQUEST_PROGRESS.set(progress)
        try:
            status, err = await self.request(method, url, body)
        finally:
            REQUEST_PROGRESS.reset(token)
        return status, err, progress

    async def delete(self, session: str, server: str, *, reason: str) -> int | None:
        op = self.history.invoke(process=self.process, f="delete", session=session, server=server, reason=reason)
        status, err, progress = await self._traced("DELETE", f"{server}/sessions/{session}", None)
        if status is None:
            self.history.info(op, error=err, **progress)
        elif 200 <= status < 300:
            self.history.ok(op, status=status)
            self.deleted[session] = server
        else:
            self.history.fail(op, status=status)
        return status

    async def probe_wrong_process(self, session: str, owner: int, offset: int, turn: int) -> None:
        """GET, then chat, for a session on a process that does not own it: both must answer 404.

        A server that auto-creates unknown sessions answers the chat with 200 and
        starts a second, divergent copy of the episode on the wrong process.
        """
        if len(self.servers) < 2 or offset == 0:
            return
        other = self.servers[(owner + offset) % len(self.servers)]
        self.history.event(
            process=self.process,
            f="chaos",
            session=session,
            server=other,
            value={"action": "wrong_process_probe", "turn": turn, "owner": self.servers[owner]},
        )
        probe_chat = {"model": "fake-sglang", "messages": [{"role": "user", "content": "wrong-process probe"}]}
        for method, url, body in (
            ("GET", f"{other}/sessions/{session}", None),
            ("POST", f"{other}/sessions/{session}/v1/chat/completions", probe_chat),
        ):
            op = self.history.invoke(
                process=self.process, f="probe", session=session, server=other, value="wrong_process", method=method
            )
            status, err, progress = await self._traced(method, url, body)
            if status is None:
                self.history.info(op, error=err, value="wrong_process", **progress)
            else:
                self.history.complete(op, "ok" if status == 404 else "fail", status=status, value="wrong_process")

    # -- time-triggered ------------------------------------------------------

    async def timeline(self) -> None:
        """Process kills and backend outages at their scheduled times (seconds since run start)."""
        jobs: list[Awaitable[None]] = []
        for k in self.spec.kill_restart:
            jobs.append(self._kill_restart(k.process, k.at_s, k.restart_after_s))
        for o in self.spec.backend_outage:
            jobs.append(self._outage(o.at_s, o.duration_s, o.fault))
        if jobs:
            await asyncio.gather(*jobs)

    async def _sleep_until(self, at_s: float) -> None:
        d = at_s - self.history.now()
        if d > 0:
            await asyncio.sleep(d)

    async def _kill_restart(self, index: int, at_s: float, after_s: float) -> None:
        if self.processes is None:
            return
        await self._sleep_until(at_s)
        url = self.servers[index]
        op = self.history.invoke(
            process=self.process, f="chaos", server=url, value={"action": "kill", "process": index}
        )
        await self.processes.kill(index)
        self.history.ok(op, value={"action": "kill", "process": index})
        await asyncio.sleep(after_s)
        op = self.history.invoke(
            process=self.process, f="chaos", server=url, value={"action": "restart", "process": index}
        )
        try:
            await self.processes.restart(index)
        except Exception as exc:
            self.history.fail(op, value={"action": "restart", "process": index}, error=str(exc))
            return
        self.history.ok(op, value={"action": "restart", "process": index})

    async def _outage(self, at_s: float, duration_s: float, fault: str) -> None:
        if self.backend_url is None:
            return
        await self._sleep_until(at_s)
        outage_plan = dict(self.base_plan)
        outage_plan["rules"] = [{"name": "outage", "fault": fault}, *self.base_plan.get("rules", [])]
        value = {"action": "backend_outage_start", "fault": fault, "duration_s": duration_s}
        await self._set_plan(outage_plan, value)
        try:
            await asyncio.sleep(duration_s)
        finally:
            await self._set_plan(self.base_plan, {"action": "backend_outage_end", "fault": fault})

    async def _set_plan(self, plan: dict[str, Any], value: dict[str, Any]) -> None:
        op = self.history.invoke(process=self.process, f="chaos", server=self.backend_url or "", value=value)
        status, err, progress = await self._traced("PUT", f"{self.backend_url}/admin/plan", plan)
        if status is not None and 200 <= status < 300:
            self.history.ok(op, value=value, status=status)
        else:
            self.history.fail(op, value=value, status=status, error=err, **progress)

    # -- bookkeeping --------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every spawned chaos action to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class NoNemesis(Nemesis):
    """The noop nemesis: no chaos, for tests and baselines."""

    def __init__(self, history: History) -> None:
        super().__init__(ChaosSpec(), history, [], _no_request)


async def _no_request(method: str, url: str, body: Any) -> tuple[int | None, str | None]:
    return None, "no nemesis"
