"""Scheduling strategies: which ready callback the simulation runs next.

- ``fifo``: the stock order (a baseline that hides races, as asyncio does).
- ``random``: a seeded uniform choice among ready callbacks at every step.
- ``pct``: Probabilistic Concurrency Testing (Burckhardt et al., ASPLOS 2010).
  Each task gets a random distinct priority; the highest-priority ready task
  runs; at d-1 change points chosen uniformly over a horizon of k steps the
  running task drops below every other. A bug of depth d among n tasks is
  found with probability >= 1/(n * k^(d-1)) per run. Take k from the step
  count of a first run.

A strategy sees only stable owner names (``loop.owner_key``), never object
ids, so the choice is a function of the seed and the history alone.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from asyncio import events

    from harness.sim.loop import SimLoop

__all__ = ["FifoStrategy", "PctStrategy", "RandomStrategy", "Strategy", "make_strategy"]


class Strategy(Protocol):
    name: str

    def choose(self, loop: SimLoop, ready: list[events.Handle]) -> int: ...


class FifoStrategy:
    name = "fifo"

    def choose(self, loop: SimLoop, ready: list[events.Handle]) -> int:
        return 0


class RandomStrategy:
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"random-strategy:{seed}")

    def choose(self, loop: SimLoop, ready: list[events.Handle]) -> int:
        return self.rng.randrange(len(ready))


class PctStrategy:
    name = "pct"

    def __init__(self, seed: int, depth: int = 3, horizon: int = 10_000) -> None:
        if depth < 1:
            raise ValueError("pct depth must be >= 1 (a bug of depth d needs d-1 priority change points)")
        self.rng = random.Random(f"pct-strategy:{seed}")
        self.depth = depth
        self.horizon = max(1, horizon)
        self.change_points = sorted(self.rng.sample(range(1, self.horizon + 1), min(depth - 1, self.horizon)))
        self._prio: dict[str, float] = {}
        self._low = 0.0  # change points push priorities below every initial one (all > 0)

    def _priority(self, owner: str) -> float:
        p = self._prio.get(owner)
        if p is None:
            p = self._prio[owner] = 1.0 + self.rng.random()
        return p

    def choose(self, loop: SimLoop, ready: list[events.Handle]) -> int:
        owners = [loop.owner_key(h) for h in ready]
        best = max(range(len(ready)), key=lambda i: (self._priority(owners[i]), -i))
        if self.change_points and loop.steps >= self.change_points[0]:
            self.change_points.pop(0)
            self._low -= 1.0
            self._prio[owners[best]] = self._low
            best = max(range(len(ready)), key=lambda i: (self._priority(owners[i]), -i))
        return best


def make_strategy(name: str, seed: int, **kwargs: Any) -> Strategy:
    if name == "fifo":
        return FifoStrategy()
    if name == "random":
        return RandomStrategy(seed)
    if name == "pct":
        return PctStrategy(seed, **kwargs)
    raise ValueError(f"unknown strategy {name!r}; allowed: fifo, random, pct")
