"""``harness mutate --ray``: each mutant's kill test, and with ``--live`` its live suite, as a Ray task (issue 15).

The same jobs as ``--jobs`` (harness.mutate._driver): one per mutant, the kept
cases in the same order, ``stop_at_first``, the same timeout. Only where a job
runs changes: a Ray task unpacks the pristine ``reference_impl`` snapshot (put
in the object store once, as a tar: a cluster's nodes do not share the
driver's temp dir) and runs the job through the very same
``_run_jobs`` (its tree, a child forked from a fork server that pre-imported
the harness, the timeout kill), then returns the child's case records. The
driver judges them with the same ``_judge_sim``, so a mutant's status, killing
case and checkers are those of a local run (the kill test is a simulation: a
pure function of the tree, the cases and their seeds).

At most ``parallel`` jobs are in flight (the head's CPUs, ``--jobs``), so
``--budget-s`` stops starting mutants as it does locally. A Ray worker keeps its
fork server between tasks: the harness import is paid once per worker.

Stage 2 (``--live``): the unmutated tree's live suite, then every survivor's,
each a Ray task running the very same ``live_test`` as a local run (its own
mutated tree in the task's temp dir, its own ``harness run`` whose servers bind
free loopback ports of the task's node); the driver judges the returned exit
code and invalid checkers with the same ``_judge_live``. ``parallel`` suites are
in flight (``--jobs``; Ray also holds tasks back beyond the cluster's CPUs).
docs/distributed.md says what can differ: a live run is timed, so a suite run
beside others is run on a busier node.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.distributed.pool import RayPool

__all__ = ["kill_test", "live_suite_task", "run_jobs_on_ray", "run_live_on_ray"]

OnDone = Callable[[Any, list[dict[str, Any]], bool, float], None]
LiveDone = Callable[[str, dict[str, Any]], None]

# after an interrupt, how long a cancelled live task gets before it is force-killed (the gentle cancel was not
# seen to end a task waiting on its ``harness run``; the force kill took the runner and its servers with it)
CANCEL_GRACE_S = 5.0


def _tar(root: Path, package: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(root / package, arcname=package)  # bytecode too, with its mtimes: the unmutated modules stay valid
    return buf.getvalue()


def kill_test(tree_tar: bytes, job: Any) -> tuple[list[dict[str, Any]], bool, float]:
    """One mutant's kill test on this node: (the child's records, timed out, seconds)."""
    from harness.mutate._driver import _context, _run_jobs

    base = Path(tempfile.mkdtemp(prefix="harness-mutate-ray-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(tree_tar)) as tf:
            tf.extractall(base / "pristine", filter="fully_trusted")  # our own snapshot, made by the driver
        out: list[tuple[list[dict[str, Any]], bool, float]] = []
        local = dataclasses.replace(job, work=base / "job", proc=None)
        _run_jobs(_context(), base / "pristine", [local], 1, None, lambda _j, ev, to, el: out.append((ev, to, el)))
        return out[0]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_jobs_on_ray(
    address: str | None,
    root: Path,
    package: str,
    jobs: list[Any],
    parallel: int,
    deadline: float | None,
    on_done: OnDone,
) -> list[Any]:
    """``_run_jobs`` over Ray tasks (``address=None``: a local head); returns the jobs never started."""
    pending = list(jobs)
    with RayPool(address, parallel) as pool:
        ray = pool._ray
        task = ray.remote(num_cpus=1, max_retries=0)(kill_test)
        tree = ray.put(_tar(root, package))
        running: dict[Any, Any] = {}
        try:
            while pending or running:
                now = time.monotonic()  # seam-ok: tooling, the budget
                while pending and len(running) < max(1, parallel) and (deadline is None or now < deadline):
                    job = pending.pop(0)
                    running[task.remote(tree, job)] = job
                if not running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    events, timed_out, elapsed = ray.get(ref)
                    on_done(running.pop(ref), events, timed_out, elapsed)
        finally:  # an interrupt must not leave tasks running on the cluster
            for ref in running:
                ray.cancel(ref, force=True)
    return pending


def _scratch(scratch: str | None, prefix: str) -> Path:
    """A temp dir of the task's own: inside the driver's ``scratch`` dir when that is on this node, so whatever
    a killed task leaves (a cancelled task's worker may be stopped while it removes its tree) goes with the
    driver's own cleanup; else in this node's temp dir."""
    where = scratch if scratch is not None and Path(scratch).is_dir() else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


def live_suite_task(
    tree_tar: bytes, mutant: Any, timeout_s: float, suite: tuple[str, ...], scratch: str | None = None
) -> dict[str, Any]:
    """One tree's live suite on this node (``mutant=None``: the unmutated tree): ``live_test``'s result."""
    from harness.mutate._driver import live_test

    base = _scratch(scratch, "harness-mutate-ray-live-")
    try:
        with tarfile.open(fileobj=io.BytesIO(tree_tar)) as tf:
            tf.extractall(base / "pristine", filter="fully_trusted")  # our own snapshot, made by the driver
        return live_test(base / "pristine", mutant, base / "live", timeout_s, suite)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_live_on_ray(
    address: str | None,
    root: Path,
    package: str,
    items: list[tuple[str, Any]],
    parallel: int,
    timeout_s: float,
    suite: tuple[str, ...],
    on_done: LiveDone,
    scratch: Path | None = None,
) -> None:
    """``live_test`` of each ``(key, mutant)`` as a Ray task, ``parallel`` in flight; ``on_done(key, result)``.

    An interrupt cancels the running tasks gently first (a KeyboardInterrupt in the task, which kills its
    ``harness run``'s process group), then forcibly whatever is still running after ``CANCEL_GRACE_S``.
    ``scratch``: the driver's temp dir; a task on the driver's node works inside it (``_scratch``).
    """
    pending = list(items)
    with RayPool(address, parallel) as pool:
        ray = pool._ray
        task = ray.remote(num_cpus=1, max_retries=0)(live_suite_task)
        tree = ray.put(_tar(root, package))
        where = None if scratch is None else str(scratch)
        running: dict[Any, str] = {}
        try:
            while pending or running:
                while pending and len(running) < max(1, parallel):
                    key, mutant = pending.pop(0)
                    running[task.remote(tree, mutant, timeout_s, suite, where)] = key
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    result = ray.get(ref)
                    on_done(running.pop(ref), result)
        finally:
            if running:
                for ref in running:
                    ray.cancel(ref)
                _, left = ray.wait(list(running), num_returns=len(running), timeout=CANCEL_GRACE_S)
                for ref in left:
                    ray.cancel(ref, force=True)
