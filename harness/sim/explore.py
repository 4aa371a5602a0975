"""Explore: many seeds of one scenario until an invariant breaks, in parallel worker processes.

Why seeds and not hours: each seed is a different interleaving (and a
different workload draw), chosen by the strategy; a run costs a fraction of a
second of CPU, so a race that needs one schedule in ten thousand is found in
minutes and then replays exactly. Seeds are independent, so J worker
processes split them; results are taken in batches and the *smallest* failing
seed of the first failing batch is reported, which is what a sequential
search would report too (the output does not depend on ``--jobs``).

Each worker loads the scenario from its path itself (a Scenario holds
mappings that pickle fine, but the path keeps the job small and the worker's
imports warm), runs :func:`harness.sim.runner.simulate` without a trace and
checks it in memory. Nothing is written for a passing seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from harness.scenario import Scenario, load_scenario
from harness.sim.runner import DEFAULT_DEPTH, check, compose_status, pct_horizon, simulate, with_seed

__all__ = ["SeedResult", "explore", "run_seed"]


@dataclass
class SeedResult:
    seed: int
    status: str  # valid | invalid | unknown | error
    steps: int
    history_digest: str
    trace_digest: str
    invalid: list[dict[str, Any]] = field(default_factory=list)  # the failing verdicts
    error: str | None = None

    @property
    def flagged(self) -> bool:
        return self.status in ("invalid", "error")


@dataclass(frozen=True)
class _Job:
    path: str
    variant: str | None
    seed: int
    strategy: str
    depth: int
    horizon: int | None
    target: str | None
    tokenizer: str | None = None


def _run_job(job: _Job) -> SeedResult:
    sc = with_seed(load_scenario(job.path).with_tokenizer(job.tokenizer), job.seed, job.variant)
    return run_seed(sc, job.seed, job.strategy, depth=job.depth, horizon=job.horizon, target=job.target)


def run_seed(
    sc: Scenario,
    seed: int,
    strategy: str,
    *,
    depth: int = DEFAULT_DEPTH,
    horizon: int | None = None,
    target: str | None = None,
) -> SeedResult:
    """One seed, checked in memory (``sc`` already carries the seed)."""
    out = simulate(sc, seed, strategy, depth=depth, horizon=horizon, target=target, trace=False)
    verdicts = check(out)
    status = compose_status(verdicts, out.error)
    return SeedResult(
        seed=seed,
        status=status,
        steps=out.steps,
        history_digest=out.history_digest,
        trace_digest=out.trace_digest,
        invalid=[v for v in verdicts if v.get("status") == "invalid"],
        error=out.error,
    )


def _batches(seeds: range, size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for s in seeds:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def explore(
    path: str,
    seeds: range,
    strategy: str = "random",
    *,
    depth: int = DEFAULT_DEPTH,
    horizon: int | None = None,
    variant: str | None = None,
    target: str | None = None,
    jobs: int = 1,
    stop_on_first: bool = True,
    on_result: Callable[[SeedResult], None] | None = None,
    tokenizer: str | None = None,
    ray: str | None = None,
) -> list[SeedResult]:
    """Run ``seeds`` of the scenario at ``path``; return every result, in seed order.

    With ``stop_on_first`` the search ends after the first batch holding a
    flagged seed (the batch is finished, so the smallest such seed is known).
    ``tokenizer`` (a shipped name or a folder) replaces the scenario's.
    ``ray``: run the seeds as Ray tasks ("local": a private head with ``jobs``
    CPUs on 127.0.0.1; else a cluster address); batches stay ``jobs * 4`` seeds,
    so the results are those of ``--jobs`` (harness/distributed/pool.py).
    """
    if strategy == "pct" and horizon is None:
        horizon = pct_horizon(with_seed(load_scenario(path).with_tokenizer(tokenizer), None, variant), target)
    jobs = max(1, jobs)
    results: list[SeedResult] = []
    pool: Any = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    if ray is not None:  # issue 15: the same jobs, run where Ray puts them
        from harness.distributed.pool import RayPool

        pool = RayPool(None if ray == "local" else ray, jobs)
    try:
        for batch in _batches(seeds, jobs * 4):
            work = [_Job(path, variant, s, strategy, depth, horizon, target, tokenizer) for s in batch]
            done = list(pool.map(_run_job, work)) if pool is not None else [_run_job(j) for j in work]
            for r in done:
                results.append(r)
                if on_result is not None:
                    on_result(r)
            if stop_on_first and any(r.flagged for r in done):
                break
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))
