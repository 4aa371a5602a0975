"""Executors for simulation: CPU work that takes *virtual* time.

Live, tokenization runs in a worker thread: while it runs, the event loop
serves other requests (a DELETE sets ``closing`` and queues on the session
lock). Inline execution closes that window entirely and so hides the races
it opens. :class:`VirtualCostExecutor` keeps the work inline and
deterministic but first sleeps a virtual cost, reopening the window exactly
as wide as the cost model says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["VirtualCostExecutor"]


class VirtualCostExecutor:
    def __init__(self, cost_s: float = 0.0005) -> None:
        if cost_s < 0:
            raise ValueError(f"cost_s must be >= 0, got {cost_s}")
        self.cost_s = cost_s

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        if self.cost_s:
            await asyncio.sleep(self.cost_s)
        return fn(*args)
