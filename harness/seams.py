"""The seams that make determinism possible (DESIGN.md): time, ids, CPU offload.

Protocol code (the reference server, the fake SGLang, agents, the runner)
never reads the wall clock, never touches global randomness and never starts
threads by itself. It is handed a :class:`Clock`, an :class:`IdSource` and an
:class:`Executor`. Live mode hands it the loop's clock, an id source seeded
from the OS and ``asyncio.to_thread``; simulation mode hands it virtual time,
a seeded id source and inline execution, and every run replays from its seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

__all__ = [
    "Clock",
    "Executor",
    "IdSource",
    "InlineExecutor",
    "LoopClock",
    "ThreadExecutor",
]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic scale: durations, deadlines, timing buckets."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch: timestamps in records and logs."""
        ...


class LoopClock:
    """Time read through the running event loop.

    ``monotonic()`` is ``loop.time()``, so under a virtual-time loop it is
    virtual. ``wall()`` is a fixed epoch base plus loop time: one wall-clock
    read at construction (or the ``epoch`` given), never again.
    """

    def __init__(self, epoch: float | None = None) -> None:
        self._epoch = epoch if epoch is not None else time.time()  # seam-ok: the one live wall-clock read
        self._origin: float | None = None

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        now = self.monotonic()
        if self._origin is None:
            self._origin = now
        return self._epoch + (now - self._origin)


class IdSource:
    """Ids and random draws from one seeded generator.

    ``seed=None`` seeds from the OS (live mode); give a seed to replay.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        self.rng = random.Random(self.seed)
        self._wide: random.Random | None = None  # caller_request_id's second half, its own stream

    def hex(self, nbytes: int = 16) -> str:
        return self.rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    def request_id(self) -> str:
        """8 hex chars, as in the server's log lines."""
        return self.hex(4)

    def caller_request_id(self) -> str:
        """16 hex chars: the ``x-request-id`` a client sends. 8 would collide: ~16 pairs among the ~3.7 x 10^5
        chats of a 10^5-session run (32 bits), and a checker joining executions and log lines by it would merge
        them. The first 8 are :meth:`request_id`'s draw, so ``rng``'s other draws (message content, choices) are
        what they were; the last 8 come from a second generator seeded from ``seed``."""
        if self._wide is None:
            self._wide = random.Random(f"{self.seed}:caller-request-id")
        return self.request_id() + self._wide.getrandbits(32).to_bytes(4, "big").hex()

    def session_id(self) -> str:
        return self.hex(16)


class Executor(Protocol):
    async def run(self, fn: Callable[..., T], /, *args: Any) -> T: ...


class ThreadExecutor:
    """CPU work (tokenization) in a worker thread: keeps the event loop free."""

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)


class InlineExecutor:
    """CPU work on the loop itself: the switch-off, and what simulation uses."""

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return fn(*args)
