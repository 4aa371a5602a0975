"""Deterministic simulation: one process, virtual time, seeded interleavings."""

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
