"""A ``ProcessPoolExecutor``-shaped map over Ray tasks, for seeds and sweep points.

Why a pool and not Ray all through: every caller already splits its work into
independent, picklable jobs (a seed of ``explore``, a point of a sweep) and
merges results in a fixed order; only *where* the jobs run changes. So the
results cannot depend on Ray: :meth:`RayPool.map` returns results in the order
of its input, exactly as ``ProcessPoolExecutor.map`` does, and the caller's
batching (``explore``: ``jobs * 4`` seeds a batch, the smallest failing seed of
the first failing batch) is unchanged.

Where Ray runs:

- ``address=None``: a local head started for this command and shut down at
  the end, bound to 127.0.0.1 (``_node_ip_address``), no dashboard, ``workers``
  CPUs. Loopback only, like everything else the harness starts.
- ``address="auto"`` or ``"ray://host:10001"`` / ``"host:6379"``: an existing
  cluster (its workers must have the same harness version installed); the
  pool is then as wide as the cluster's CPUs unless ``workers`` is given.

This is tooling, not protocol code: no clock, no randomness; each job runs in
a worker process exactly as it would in a local one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["RayPool", "RayUnavailable", "local_init_kwargs", "ray_available"]

T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = "Ray is not installed: pip install 'session-race-harness[ray]' (or drop --ray)"


class RayUnavailable(RuntimeError):
    """``--ray`` was asked for but Ray cannot be imported."""


def ray_available() -> bool:
    try:
        importlib.import_module("ray")
    except ImportError:
        return False
    return True


# Ray turns "127.0.0.1" into the box's outside address (services.resolve_ip_for_localhost) and its gRPC
# servers listen on every interface, unless clusters are off: then the node is 127.0.0.1 and GCS, raylet and
# workers listen there only (what Ray does on macOS). Ray reads the variable at import (the processes it starts
# inherit it); an already imported ray gets the constant set too.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _ray(local: bool = False) -> Any:
    if local:
        os.environ.update(LOOPBACK_ENV)
    try:
        ray = importlib.import_module("ray")
    except ImportError as exc:
        raise RayUnavailable(INSTALL_HINT) from exc
    if local:
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def local_init_kwargs(workers: int) -> dict[str, Any]:
    """``ray.init`` arguments for a private local head: loopback, no dashboard, ``workers`` CPUs, quiet."""
    return {
        "address": "local",
        "num_cpus": max(1, workers),
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
        # a private head: its object store is small and in /dev/shm or /tmp, as on a laptop
        "object_store_memory": 128 * 1024 * 1024,
    }


@contextlib.contextmanager
def _ctrl_c_deferred(what: str) -> Iterator[list[int]]:
    """A first Ctrl-C (SIGINT) while ``what`` runs is held until it is over; a second one interrupts at once.

    ``ray.init`` starts a head (GCS, raylet, dashboard and runtime-env agents: 10-20 s on a loaded box); a
    KeyboardInterrupt raised inside it left that head half started, its agents orphaned and running, and once
    crashed the interpreter (SIGSEGV). Held, the interrupt is raised by the caller once the head is whole and
    has been shut down. Yields a one-item list: the count of interrupts seen. Main thread only (elsewhere
    Python delivers no SIGINT anyway).
    """
    seen = [0]
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # a background job that ignores Ctrl-C: nothing to hold
        yield seen
        return

    def hold(signum: int, frame: Any) -> None:
        seen[0] += 1
        if seen[0] > 1:
            raise KeyboardInterrupt
        print(f"harness: interrupted; stopping once {what} (Ctrl-C again to force)", file=sys.stderr)

    signal.signal(signal.SIGINT, hold)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Keep the caller's Python SIGTERM handler through ``ray.init``.

    ``ray.init`` installs Ray's own (C++) SIGTERM handler in the driver, which logs and ends the process at
    once: a command's ``exit_on_sigterm`` (``harness mutate``) then never ran, so its Ray tasks were not
    cancelled and their temp trees were left behind. A default or ignored handler is left to Ray.
    """
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(previous) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


class RayPool:
    """``map(fn, jobs)`` over Ray tasks, in input order; ``shutdown()`` ends a head this pool started."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        ray = self._ray = _ray(local=address is None)
        self.started_head = False
        if not ray.is_initialized():
            with _sigterm_kept():
                self._init(ray, address, workers)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, workers if workers is not None else cpus)
        self._remote: dict[Callable[..., Any], Any] = {}

    def _init(self, ray: Any, address: str | None, workers: int | None) -> None:
        with _ctrl_c_deferred("the Ray head is up" if address is None else "Ray is connected") as ctrl_c:
            try:
                if address is None:
                    ray.init(**local_init_kwargs(workers or 1))
                    self.started_head = True
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except KeyboardInterrupt:  # the second Ctrl-C: whatever came up goes down
                with contextlib.suppress(Exception):
                    ray.shutdown()
                raise
        if ctrl_c[0]:
            self.shutdown()
            raise KeyboardInterrupt

    def _task(self, fn: Callable[[T], R]) -> Any:
        task = self._remote.get(fn)
        if task is None:
            task = self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=0)(fn)
        return task

    def map(self, fn: Callable[[T], R], jobs: Iterable[T]) -> list[R]:
        task = self._task(fn)
        refs = [task.remote(j) for j in jobs]
        return list(self._ray.get(refs))

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Same signature as ``Executor.shutdown``; a head this pool started is stopped, a cluster is left alone."""
        if self.started_head:
            self._ray.shutdown()
            self.started_head = False

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
