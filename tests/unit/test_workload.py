"""Open-loop workload: seeded plans, intended start times, concurrency and the duration bound."""

from __future__ import annotations

import asyncio

import pytest

from harness.scenario import Scenario, parse_scenario
from harness.workload import SessionPlan, derive_seed, plan_sessions, run_workload


def scenario(**workload: object) -> Scenario:
    return parse_scenario({"seed": 3, "workload": workload, "agent": {"client": {"httpx": 1, "openai": 1}}}, "w.toml")


def test_plans_are_a_function_of_the_seed() -> None:
    sc = scenario(sessions=20, turns=[1, 4], arrival_rate=10)
    a, b = plan_sessions(sc, 3), plan_sessions(sc, 3)
    assert a == b
    assert all(1 <= p.turns <= 4 for p in a)
    assert {p.client for p in a} == {"httpx", "openai"}
    assert {p.server for p in a} <= {0, 1, 2}
    starts = [p.intended_start for p in a]
    assert starts == sorted(starts) and starts[0] == 0.0 and starts[-1] > 0


def test_a_session_plan_does_not_depend_on_how_many_sessions_exist() -> None:
    small = plan_sessions(scenario(sessions=3, turns=[1, 5]), 2)
    big = plan_sessions(scenario(sessions=30, turns=[1, 5]), 2)
    assert [(p.turns, p.server, p.seed) for p in small] == [(p.turns, p.server, p.seed) for p in big[:3]]


def test_zero_rate_starts_everything_at_once() -> None:
    assert {p.intended_start for p in plan_sessions(scenario(sessions=5), 1)} == {0.0}


def test_derive_seed_is_stable_and_separates_purposes() -> None:
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2)
    assert derive_seed(1, "a", 2) != derive_seed(1, "b", 2)


@pytest.mark.parametrize("lazy", [False, True])
async def test_concurrency_limit_and_intended_start(lazy: bool) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    plans = plan_sessions(scenario(sessions=6, arrival_rate=0), 1)
    running = 0
    peak = 0
    started: list[float] = []

    async def run(p: SessionPlan) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.append(loop.time() - t0)
        await asyncio.sleep(0.02)
        running -= 1

    res = await run_workload(plans, run, now=lambda: loop.time() - t0, concurrency=2, duration_s=5, lazy=lazy)
    assert peak == 2 and res.finished == 6 and res.not_started == 0 and res.cut_by_bound == 0


@pytest.mark.parametrize("lazy", [False, True])
async def test_duration_bound_cancels_the_rest(lazy: bool) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    plans = plan_sessions(scenario(sessions=4), 1)

    async def run(p: SessionPlan) -> None:
        await asyncio.sleep(10)

    res = await run_workload(plans, run, now=lambda: loop.time() - t0, concurrency=2, duration_s=0.05, lazy=lazy)
    assert res.finished == 0 and res.cut_by_bound == 2 and res.not_started == 2
    assert loop.time() - t0 < 1.0


@pytest.mark.parametrize("lazy", [False, True])
async def test_agent_errors_are_reported_not_raised(lazy: bool) -> None:
    loop = asyncio.get_running_loop()
    plans = plan_sessions(scenario(sessions=2), 1)

    async def run(p: SessionPlan) -> None:
        raise RuntimeError("boom")

    res = await run_workload(plans, run, now=loop.time, concurrency=2, duration_s=5, lazy=lazy)
    assert len(res.errors) == 2 and "boom" in res.errors[0]


async def test_lazy_workload_holds_only_the_sessions_in_flight() -> None:
    """A live run's workload (issue 13): no task per planned session waits from t = 0; starts keep their times."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    plans = plan_sessions(scenario(sessions=200, arrival_rate=4000), 1)
    tasks_seen = 0
    late: list[float] = []

    async def run(p: SessionPlan) -> None:
        nonlocal tasks_seen
        tasks_seen = max(tasks_seen, len(asyncio.all_tasks()))
        late.append(loop.time() - t0 - p.intended_start)
        await asyncio.sleep(0.001)

    res = await run_workload(plans, run, now=lambda: loop.time() - t0, concurrency=4, duration_s=5, lazy=True)
    assert res.finished == 200 and res.not_started == 0 and res.cut_by_bound == 0
    assert tasks_seen <= 4 + 3  # the sessions in flight, the feeder, this test
    assert min(late) >= 0.0  # never before its intended time
