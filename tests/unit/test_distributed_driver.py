"""``drive_on_ray``'s error paths with stand-in actors (no Ray; well under a second): nothing is left behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from harness.distributed.live import drive_on_ray
from harness.scenario import ChaosSpec, KillRestart, Scenario, WorkloadSpec


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeActor:
    """What drive_on_ray calls on an agent actor; ``clock_fails``: it never answers its first ping."""

    def __init__(self, *, clock_fails: bool = False) -> None:
        self.clock_fails = clock_fails
        self.clock, self.node, self.run = _Method(self._clock), _Method(self._node), _Method(self._run)

    async def _clock(self) -> float:
        if self.clock_fails:
            raise RuntimeError("actor died at start")
        return time.monotonic()  # seam-ok: stands in for the actor's clock ping

    async def _node(self) -> str:
        return "node-1"

    async def _run(self, job: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        raise RuntimeError("shard failed")


class FakeLive:
    agents_per_node = 3

    def __init__(self, actors: list[FakeActor]) -> None:
        self._actors = actors
        self.killed: list[FakeActor] = []
        self.ray = self

    def kill(self, actor: FakeActor) -> None:
        self.killed.append(actor)

    def actors(self, loopback: bool = False) -> list[FakeActor]:
        return list(self._actors)

    def nodes(self) -> list[str]:
        return ["node-1"]


class Procs:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def kill(self, index: int) -> None:
        self.calls.append(f"kill {index}")

    async def restart(self, index: int) -> None:
        self.calls.append(f"restart {index}")


def scenario() -> Scenario:
    chaos = ChaosSpec(kill_restart=(KillRestart(process=0, at_s=0.3, restart_after_s=0.1),))
    return Scenario(name="t", workload=WorkloadSpec(sessions=4, concurrency=2), chaos=chaos)


SERVERS = ["http://127.0.0.1:9"]  # never reached: the stand-in actors run no sessions


async def test_an_actor_whose_ping_fails_is_killed_with_all_the_others() -> None:
    actors = [FakeActor(), FakeActor(clock_fails=True), FakeActor()]  # the third is beyond concurrency 2
    live = FakeLive(actors)
    with pytest.raises(RuntimeError, match="died at start"):
        await drive_on_ray(scenario(), SERVERS, live)  # type: ignore[arg-type]
    assert sorted(map(id, live.killed)) == sorted(map(id, actors))


async def test_a_failed_shard_ends_the_chaos_timeline_before_the_error_goes_up() -> None:
    actors = [FakeActor(), FakeActor()]
    live, procs = FakeLive(actors), Procs()
    with pytest.raises(RuntimeError, match="shard failed"):
        await drive_on_ray(scenario(), SERVERS, live, processes=procs)  # type: ignore[arg-type]
    await asyncio.sleep(0.5)  # past the kill's 0.3 s: a timeline still running would have fired it
    assert procs.calls == []
    assert sorted(map(id, live.killed)) == sorted(map(id, actors))
    assert asyncio.all_tasks() == {asyncio.current_task()}  # no timeline, fuzzer or self-monitor left
