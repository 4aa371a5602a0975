"""The workload: which sessions run, when each should start, and the concurrency that carries them.

Open loop, on purpose. A closed-loop generator (start the next session when
one finishes) slows down with the server it measures: a server that stalls
for two seconds simply receives fewer requests, and the stall vanishes from
the latency figures (coordinated omission). Here every session gets an
*intended* start time up front, drawn from a seeded Poisson process; a
session that could not start on time (concurrency slots full, server slow)
still counts its latency from the intended time. Turns inside a session are
necessarily sequential: a turn's intended start is the previous turn's end
plus its think time, and retries are measured from the turn's intended start.

Every draw comes from a generator derived from (scenario seed, purpose,
session index), so a session's plan does not depend on how many other
sessions exist or in which order they were planned.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from harness.chaos import SessionChaos, plan_session_chaos
from harness.scenario import Scenario, ScriptStep

__all__ = ["SessionPlan", "WorkloadResult", "derive_rng", "derive_seed", "plan_sessions", "run_workload"]


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the scenario seed and a purpose path: independent streams, stable across runs."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def derive_rng(seed: int, *parts: object) -> random.Random:
    return random.Random(derive_seed(seed, *parts))


@dataclass(frozen=True)
class SessionPlan:
    index: int
    process: str  # history process name, "agent-<index>"
    intended_start: float  # seconds since run start
    turns: int
    think_times: tuple[float, ...]  # before each turn after the first
    client: str  # "httpx" | "openai" | "aiohttp"
    server: int  # index into the target's server list
    seed: int  # the agent's own IdSource seed
    first_turn_retry: bool
    chaos: SessionChaos = field(default_factory=SessionChaos)
    script: tuple[ScriptStep, ...] = ()  # a scripted session (workload.script): these steps, nothing else


def plan_sessions(sc: Scenario, n_servers: int) -> list[SessionPlan]:
    w = sc.workload
    if w.script:
        return _script_plans(sc, n_servers)
    arrivals = derive_rng(sc.seed, "arrivals")
    t = 0.0
    kinds = sorted(k for k, v in sc.agent.clients.items() if v > 0)
    weights = [sc.agent.clients[k] for k in kinds]
    plans = []
    for i in range(w.sessions):
        if w.arrival_rate > 0 and i > 0:
            t += arrivals.expovariate(w.arrival_rate)
        rng = derive_rng(sc.seed, "session", i)
        turns = rng.randint(*w.turns)
        plans.append(
            SessionPlan(
                index=i,
                process=f"agent-{i}",
                intended_start=round(t, 6),
                turns=turns,
                think_times=tuple(rng.uniform(*w.think_time_s) for _ in range(turns)),
                client=rng.choices(kinds, weights)[0],
                server=rng.randrange(n_servers),
                seed=derive_seed(sc.seed, "agent", i),
                first_turn_retry=rng.random() < w.first_turn_retry_probability,
                chaos=plan_session_chaos(sc.chaos, turns, n_servers, derive_rng(sc.seed, "chaos", i)),
            )
        )
    return plans


def _script_plans(sc: Scenario, n_servers: int) -> list[SessionPlan]:
    """One plan per scripted session (first-appearance order), starting at its first step."""
    by_session: dict[str, list[ScriptStep]] = {}
    for step in sc.workload.script:
        by_session.setdefault(step.session, []).append(step)
    kinds = sorted(k for k, v in sc.agent.clients.items() if v > 0)
    plans = []
    for i, steps in enumerate(by_session.values()):
        owner = next((s for s in steps if s.kind == "create"), steps[0])
        plans.append(
            SessionPlan(
                index=i,
                process=f"agent-{i}",
                intended_start=round(min(s.at_s for s in steps), 6),
                turns=len({s.turn for s in steps if s.kind == "chat"}),
                think_times=(),
                client=kinds[0] if kinds else "httpx",
                server=min(owner.process, n_servers - 1),
                seed=derive_seed(sc.seed, "agent", i),
                first_turn_retry=False,
                script=tuple(steps),
            )
        )
    return plans


@dataclass
class WorkloadResult:
    started: int = 0
    finished: int = 0
    not_started: int = 0
    cut_by_bound: int = 0
    errors: list[str] = field(default_factory=list)


async def run_workload(
    plans: Sequence[SessionPlan],
    run_session: Callable[[SessionPlan], Awaitable[None]],
    *,
    now: Callable[[], float],
    concurrency: int,
    duration_s: float,
    on_done: Callable[[SessionPlan], None] | None = None,
    lazy: bool = False,
) -> WorkloadResult:
    """Start each session at its intended time (``now()`` is seconds since run start), at most
    ``concurrency`` at once; cancel whatever still runs at ``duration_s``.

    ``lazy`` (a live run): a session's task is made when it starts and dropped when it ends, so memory holds
    the sessions in flight, not one waiting task per planned session (~3 KB each: 300 MB for 10^5 planned
    sessions, from t = 0; issue 13). The same starts (intended time, then a free slot, first come first
    served), counts and cut; not for simulation, whose schedule is the tasks' creation order.
    """
    res = WorkloadResult()
    sem = asyncio.Semaphore(concurrency)
    if lazy:
        return await _run_lazily(plans, run_session, now, sem, duration_s, on_done, res)

    async def one(p: SessionPlan) -> None:
        delay = p.intended_start - now()
        if delay > 0:
            await asyncio.sleep(delay)
        async with sem:
            await _one_session(p, run_session, on_done, res)

    tasks = [asyncio.create_task(one(p), name=p.process) for p in plans]
    remaining = duration_s - now()
    _done, pending = await asyncio.wait(tasks, timeout=max(0.0, remaining)) if tasks else (set(), set())
    cut = [t for t in tasks if t in pending]  # plan order: a set's order differs between same-seed replays
    for t in cut:
        t.cancel()
    if cut:
        await asyncio.gather(*cut, return_exceptions=True)
    res.cut_by_bound = res.started - res.finished
    res.not_started = len(plans) - res.started
    return res


async def _one_session(
    p: SessionPlan,
    run_session: Callable[[SessionPlan], Awaitable[None]],
    on_done: Callable[[SessionPlan], None] | None,
    res: WorkloadResult,
) -> None:
    """One session, counted: started, then finished (an agent's error reported, not raised), then ``on_done``."""
    res.started += 1
    try:
        await run_session(p)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an agent bug must not take the run down; it is reported
        res.errors.append(f"{p.process}: {type(exc).__name__}: {exc}")
    res.finished += 1
    if on_done is not None:
        on_done(p)


async def _run_lazily(
    plans: Sequence[SessionPlan],
    run_session: Callable[[SessionPlan], Awaitable[None]],
    now: Callable[[], float],
    sem: asyncio.Semaphore,
    duration_s: float,
    on_done: Callable[[SessionPlan], None] | None,
    res: WorkloadResult,
) -> WorkloadResult:
    running: dict[asyncio.Task[None], int] = {}  # the sessions in flight -> their plan index

    async def one(p: SessionPlan) -> None:
        try:
            await _one_session(p, run_session, on_done, res)
        finally:
            sem.release()

    async def feed() -> None:
        for p in sorted(plans, key=lambda q: (q.intended_start, q.index)):
            delay = p.intended_start - now()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()  # a full house: this session and every later one wait, in arrival order
            t = asyncio.create_task(one(p), name=p.process)
            running[t] = p.index
            t.add_done_callback(lambda d: running.pop(d, None))
        while running:
            await asyncio.wait(list(running))

    feeder = asyncio.create_task(feed())
    await asyncio.wait({feeder}, timeout=max(0.0, duration_s - now()))
    if not feeder.done():
        feeder.cancel()
        cut = sorted(running, key=running.__getitem__)  # plan order, as the eager path
        for t in cut:
            t.cancel()
        await asyncio.gather(feeder, *cut, return_exceptions=True)
    elif (exc := feeder.exception()) is not None:
        raise exc
    res.cut_by_bound = res.started - res.finished
    res.not_started = len(plans) - res.started
    return res
