"""Ctrl-C while Ray starts (harness/distributed/pool.py): held until ``ray.init`` returns, then the head goes down.

A KeyboardInterrupt raised inside ``ray.init`` left a half-started head (its dashboard and runtime-env agents
orphaned, still running) and once crashed the interpreter. These run without Ray: a stand-in ``ray`` module
whose ``init`` gets the Ctrl-C (a real SIGINT to this process) half-way.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from harness.distributed import pool as pool_mod
from harness.distributed.pool import RayPool


class FakeRay:
    def __init__(self, interrupts: int) -> None:
        self.interrupts = interrupts
        self.calls: list[str] = []
        self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs: Any) -> None:
        self.calls.append("init started")
        for _ in range(self.interrupts):
            os.kill(os.getpid(), signal.SIGINT)  # the Python handler runs at the next bytecode, here
        self.up = True
        self.calls.append("init finished")

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.up = False

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(interrupts: int) -> FakeRay:
        ray = FakeRay(interrupts)
        monkeypatch.setattr(pool_mod, "_ray", lambda local=False: ray)
        return ray

    return make


def test_a_ctrl_c_during_init_waits_for_the_head_then_shuts_it_down(fake: Any, capsys: Any) -> None:
    ray = fake(1)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        RayPool(None, 1)
    assert ray.calls == ["init started", "init finished", "shutdown"]
    assert signal.getsignal(signal.SIGINT) is before
    assert "stopping once the Ray head is up" in capsys.readouterr().err


def test_a_second_ctrl_c_interrupts_init_and_still_shuts_down(fake: Any) -> None:
    ray = fake(2)
    with pytest.raises(KeyboardInterrupt):
        RayPool(None, 1)
    assert ray.calls == ["init started", "shutdown"]


def test_no_ctrl_c_starts_the_head_and_restores_the_handler(fake: Any) -> None:
    ray = fake(0)
    before = signal.getsignal(signal.SIGINT)
    p = RayPool(None, 1)
    assert ray.calls == ["init started", "init finished"] and p.workers == 1
    assert signal.getsignal(signal.SIGINT) is before
    p.shutdown()
    assert ray.calls[-1] == "shutdown"
