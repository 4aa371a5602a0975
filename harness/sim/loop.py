"""A deterministic asyncio event loop: virtual time, seeded scheduling, a strict boundary.

Why: a race in a session server (a DELETE landing between Phase 2 and Phase 3,
a duplicate committing first) depends on which ready task runs next. The
stock loop runs every ready callback in FIFO order, keeping tasks in lockstep
and hiding exactly those races; real time makes them rare and unrepeatable.
This loop instead

- keeps **virtual time**: when nothing is ready the clock jumps to the next
  timer, so a 5-second backend latency costs nothing;
- runs **one ready callback per step**, chosen by a seeded
  :class:`~harness.sim.strategies.Strategy` (random, PCT, FIFO);
- enforces a **strict boundary**: executors run inline, sockets and DNS and
  wake-ups from other threads are errors, and a loop whose tasks are all
  blocked with no timer pending raises :class:`Deadlock` naming them;
- writes a **trace** of every step (virtual time, which task or callback) and
  its digest, so "same seed, same history" is checkable (madsim's trick).

Task labels in the trace come from the coroutine's qualified name and the
order in which the loop first saw the task, never from asyncio's default task
names (a process-global counter that differs between runs in one process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import heapq
import weakref
from asyncio import base_events, events
from collections.abc import Callable
from typing import Any

from harness.sim.strategies import FifoStrategy, Strategy

__all__ = ["BoundaryError", "Deadlock", "SimLoop"]


class BoundaryError(RuntimeError):
    """Something tried to leave the simulation (a socket, a thread, DNS)."""


class Deadlock(RuntimeError):
    """Every task is blocked and no timer is pending: nothing can ever run again."""

    def __init__(self, blocked: list[str], at: float) -> None:
        self.blocked = blocked
        listing = "\n  ".join(blocked) or "(no tasks)"
        super().__init__(f"deadlock at virtual t={at:.6f}s: every task is blocked, no timer pending:\n  {listing}")


def _task_of(handle: events.Handle) -> asyncio.Task[Any] | None:
    cb = handle._callback  # type: ignore[attr-defined]
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return owner
    return None


class SimLoop(base_events.BaseEventLoop):
    """An event loop with virtual time and one seeded scheduling choice per step."""

    def __init__(
        self,
        strategy: Strategy | None = None,
        *,
        start_time: float = 0.0,
        max_steps: int = 10_000_000,
        trace: bool = True,
    ) -> None:
        super().__init__()
        self._now = start_time
        self.strategy = strategy or FifoStrategy()
        self.max_steps = max_steps
        self.steps = 0
        self._trace_on = trace
        self.trace: list[str] = []
        self._hasher = hashlib.sha256()
        # Weak keys: an id() of a dead task can be reused by a new one, which would
        # hand the new task the old label and make same-seed traces differ.
        self._labels: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()
        self._tasks_seen = 0
        self._clock_resolution = 1e-9

    # ---- time -------------------------------------------------------------
    def time(self) -> float:
        return self._now

    # ---- the boundary -----------------------------------------------------
    def _write_to_self(self) -> None:
        raise BoundaryError(
            "call_soon_threadsafe() from another thread: the simulation is single-threaded; "
            "inject an InlineExecutor instead of starting threads"
        )

    def _process_events(self, event_list: Any) -> None:
        return None

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:  # type: ignore[override]
        """Executors run inline: tokenization and ``asyncio.to_thread`` stay deterministic."""
        self._check_closed()  # type: ignore[attr-defined]
        fut: asyncio.Future[Any] = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # the caller sees it when it awaits, as with a thread
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            fut.set_exception(exc)
        return fut

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        # The stock hook wakes the loop through call_soon_threadsafe (a boundary error here);
        # finalization runs on this thread, so a plain call_soon is the same thing, deterministically.
        self._asyncgens.discard(agen)  # type: ignore[attr-defined]
        if not self.is_closed():
            self.call_soon(self.create_task, agen.aclose())

    def set_default_executor(self, executor: concurrent.futures.Executor) -> None:
        raise BoundaryError("the simulation runs executors inline; no thread pool may be installed")

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise BoundaryError(f"DNS lookup of {args[:2]!r} inside the simulation: use an in-process ASGI transport")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise BoundaryError("socket connection inside the simulation: use an in-process ASGI transport")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        raise BoundaryError("listening socket inside the simulation: components talk over ASGI transports")

    def add_reader(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        raise BoundaryError("file-descriptor readers are outside the simulation")

    def add_writer(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        raise BoundaryError("file-descriptor writers are outside the simulation")

    # ---- scheduling -------------------------------------------------------
    def _label(self, handle: events.Handle) -> str:
        task = _task_of(handle)
        if task is not None:
            label = self._labels.get(task)
            if label is None:
                coro = task.get_coro()
                name = getattr(coro, "__qualname__", type(coro).__name__)
                label = self._labels[task] = f"task{self._tasks_seen}:{name}"
                self._tasks_seen += 1
            return label
        cb = handle._callback  # type: ignore[attr-defined]
        return str(getattr(cb, "__qualname__", type(cb).__name__))

    def owner_key(self, handle: events.Handle) -> str:
        """A stable name for what a ready callback belongs to (a task, or a bare callback)."""
        return self._label(handle)

    def _run_once(self) -> None:
        scheduled = self._scheduled  # type: ignore[attr-defined]
        ready = self._ready  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            h = heapq.heappop(scheduled)
            h._scheduled = False
        # Drop cancelled ready handles up front so the strategy only sees live choices.
        if any(h._cancelled for h in ready):
            live = [h for h in ready if not h._cancelled]
            ready.clear()
            ready.extend(live)
        if not ready:
            if self._stopping:  # type: ignore[attr-defined]
                return
            if not scheduled:
                self._raise_deadlock()
            # Virtual time: jump to the next timer.
            self._now = max(self._now, scheduled[0]._when)
        while scheduled and scheduled[0]._when <= self._now:
            h = heapq.heappop(scheduled)
            h._scheduled = False
            if not h._cancelled:
                ready.append(h)
        if not ready:
            return
        self.steps += 1
        if self.steps > self.max_steps:
            raise RuntimeError(f"simulation exceeded max_steps={self.max_steps}: livelock or an unbounded workload")
        idx = self.strategy.choose(self, list(ready)) if len(ready) > 1 else 0
        handle = ready[idx]
        del ready[idx]
        if self._trace_on:
            line = f"{self.steps}\t{self._now:.9f}\t{self._label(handle)}"
            self.trace.append(line)
            self._hasher.update(line.encode())
            self._hasher.update(b"\n")
        handle._run()

    def _raise_deadlock(self) -> None:
        blocked = []
        for task in asyncio.all_tasks(self):
            if task.done():
                continue
            frames = task.get_stack(limit=1)
            where = f" at {frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else ""
            label = self._labels.get(task) or getattr(task.get_coro(), "__qualname__", "?")
            blocked.append(f"{label}{where}")
        raise Deadlock(sorted(blocked), self._now)

    def digest(self) -> str:
        """sha256 of the trace so far: equal digests mean identical interleavings."""
        return self._hasher.hexdigest()

    def freeze_trace(self) -> None:
        """Stop tracing: what runs after the main coroutine (cancelling leftovers, closing async
        generators, both in weak-set order) is cleanup, not part of the run's interleaving."""
        self._trace_on = False


def run(
    main: Any, *, strategy: Strategy | None = None, max_steps: int = 10_000_000, trace: bool = True
) -> tuple[Any, SimLoop]:
    """Run a coroutine to completion on a fresh SimLoop; return (result, loop).

    The cyclic garbage collector is paused for the run: it fires at points that
    depend on every allocation the *process* made before (earlier runs
    included), and collecting an async generator schedules its ``aclose()``,
    so a collection mid-run would shift the interleaving of a same-seed replay.
    Reference counting still frees everything acyclic at once; cycles are
    collected after the run.
    """
    loop = SimLoop(strategy, max_steps=max_steps, trace=trace)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(main)
        return result, loop
    finally:
        loop.freeze_trace()
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            if was_enabled:
                gc.enable()


def _cancel_all(loop: SimLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
