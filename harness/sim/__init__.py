"""Deterministic simulation: one process, virtual time, seeded interleavings.

The core (this facade) is the loop, the strategies and the executor. The
mode built on them lives in submodules imported on demand, so importing the
loop stays cheap: ``world`` (the in-process deployment), ``runner``
(``run_sim``, ``simulate``), ``explore``, ``shrink`` and ``cli`` (``harness
explore`` / ``harness replay``). docs/sim.md explains the whole.
"""

from harness.sim.executor import VirtualCostExecutor
from harness.sim.loop import BoundaryError, Deadlock, SimLoop, run
from harness.sim.strategies import FifoStrategy, PctStrategy, RandomStrategy, Strategy, make_strategy

__all__ = [
    "BoundaryError",
    "Deadlock",
    "FifoStrategy",
    "PctStrategy",
    "RandomStrategy",
    "SimLoop",
    "Strategy",
    "VirtualCostExecutor",
    "make_strategy",
    "run",
]
