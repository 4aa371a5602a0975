"""Benchmark: how long the capacity model takes for 10^5 sessions x 10 turns (target: under a minute).

    .venv/bin/python bench/bench_model.py [--sessions 100000] [--turns 10] [--processes 64]
        [--concurrency 2000] [--inline] [--profile]

Prints the wall time of the simulation alone (and of the percentile
summary separately), the number of chat requests and the simulated time.
A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from harness.fake_sglang.plan import parse_plan
from harness.model import Deployment, ModelParams, Workload, run_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--processes", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=2000)
    ap.add_argument("--inline", action="store_true", help="tokenize inline (fewer events per request)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile the run, print the top 25 by tottime")
    args = ap.parse_args()
    params = ModelParams(
        name="bench",
        seed=args.seed,
        deployment=Deployment(processes=args.processes, tokenize_in_thread=not args.inline),
        workload=Workload(
            sessions=args.sessions,
            concurrency=args.concurrency,
            turns=(args.turns, args.turns),
            think_time_s=(0.0, 0.05),
        ),
        plan=parse_plan(
            {
                "latency": {"model": "lognormal", "median_ms": 40, "p99_ms": 400, "cap_ms": 2000},
                "rules": [{"fault": "abort", "probability": 0.02}, {"fault": "http_503", "probability": 0.01}],
            }
        ),
    )
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    result = run_model(params)
    if prof is not None:
        prof.disable()
    sim_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    total = result.stats("total_ms")
    stats_s = time.perf_counter() - t1
    mode = "inline" if args.inline else "thread"
    print(
        f"model: {args.sessions} sessions x {args.turns} turns, {args.processes} processes, "
        f"{args.concurrency} agents, tokenize {mode}"
    )
    print(f"  chat requests      {result.requests}")
    print(f"  outcomes           {dict(sorted(result.outcomes.items()))}")
    print(f"  simulated time     {result.sim_time_s:.1f} s")
    print(f"  wall time (model)  {sim_s:.1f} s  ({result.requests / sim_s:,.0f} requests/s)")
    print(f"  wall time (stats)  {stats_s:.1f} s  (HdrHistogram of total_ms)")
    print(f"  total_ms p50 {total.get(50):.1f}  p99 {total.get(99):.1f}  (n={total.n})")
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
