"""Benchmark: CPU seconds per simulated seed, and one digest over every seed's history digest.

Why (issue 15): the test suite's cost is mostly simulated seeds. Run it with the
same arguments on two trees to compare them: equal digests mean the two trees
simulated byte-identical runs; the CPU figure is ``time.process_time`` per seed
(the box is shared: the load average is printed too).

Run: ``.venv/bin/python bench/bench_sim_seed.py [--tree DIR] SCENARIO [--seeds 20] [--strategy random]``
Not part of the test suite; it prints figures (bench/results_harness.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent), help="the checkout to import")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--strategy", default="random")
    args = ap.parse_args()
    sys.path.insert(0, args.tree)
    from harness.sim.explore import explore

    path = f"{args.tree}/scenarios/{args.scenario}.toml"
    explore(path, range(1), args.strategy, jobs=1, stop_on_first=False)  # imports and caches, not measured
    c0, w0 = time.process_time(), time.perf_counter()
    res = explore(path, range(args.seeds), args.strategy, jobs=1, stop_on_first=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    digest = hashlib.sha256("".join(r.history_digest + r.status for r in res).encode()).hexdigest()[:12]
    print(
        f"{args.tree}: {args.scenario} seeds 0-{args.seeds - 1} ({args.strategy}): {cpu / args.seeds:.3f} s CPU/seed, "
        f"{wall / args.seeds:.3f} s wall/seed, load {os.getloadavg()[0]:.1f}, digest {digest}"
    )


if __name__ == "__main__":
    main()
