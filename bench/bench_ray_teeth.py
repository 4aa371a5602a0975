"""Explore on Ray against ``--jobs``, for every known-bad variant (issue 15's done-when).

For each known-bad variant of ``reference_impl.config.BAD_VARIANTS`` and the library scenario aimed at it
(harness/sim/teeth.py, with its tokenizer family where the bug needs one), and for each
strategy, the same seeds are explored twice: in local processes (``jobs``) and as Ray tasks on a
private local head bound to 127.0.0.1 (``ray="local"``). Printed per row: the first flagged seed of
each, and whether every seed's (status, history digest, trace digest) is the same.

    .venv/bin/python bench/bench_ray_teeth.py [--seeds 8] [--jobs 2] [--strategies random,pct]

Exit 1 when any row differs. Needs the Ray extra (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from harness.sim.explore import explore
from harness.sim.teeth import TEETH, TEETH_TOKENIZER
from reference_impl.config import BAD_VARIANTS

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def key(rs: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.seed, r.status, r.history_digest, r.trace_digest) for r in rs]


def first_flagged(rs: list[Any]) -> int | None:
    return next((r.seed for r in rs if r.flagged), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--strategies", default="random,pct")
    a = ap.parse_args(argv)
    from harness.distributed.pool import RayPool

    pool = RayPool(None, a.jobs)  # explore's own RayPool finds this head and leaves it running
    bad = 0
    try:
        print(f"{'variant':30s} {'scenario':25s} strategy  first(jobs)  first(ray)  same  s(jobs)  s(ray)")
        missing = sorted(set(BAD_VARIANTS) - set(TEETH))
        if missing:
            print(f"known-bad variants with no scenario here: {missing}")
            bad += len(missing)
        for variant, (scen, _) in TEETH.items():
            tok = TEETH_TOKENIZER.get(variant)
            path = str(SCENARIOS / f"{scen}.toml")
            for strategy in a.strategies.split(","):
                t0 = time.perf_counter()  # seam-ok: a benchmark measures wall-clock time
                local = explore(
                    path, range(a.seeds), strategy, variant=variant, jobs=a.jobs, stop_on_first=False, tokenizer=tok
                )
                t1 = time.perf_counter()  # seam-ok
                ray = explore(
                    path,
                    range(a.seeds),
                    strategy,
                    variant=variant,
                    jobs=a.jobs,
                    stop_on_first=False,
                    tokenizer=tok,
                    ray="local",
                )
                t2 = time.perf_counter()  # seam-ok
                same = key(local) == key(ray)
                bad += not same
                print(
                    f"{variant:30s} {scen:25s} {strategy:8s}  {first_flagged(local)!s:>11s}"
                    f"  {first_flagged(ray)!s:>10s}"
                    f"  {'yes' if same else 'NO':>4s}  {t1 - t0:7.1f}  {t2 - t1:6.1f}",
                    flush=True,
                )
    finally:
        pool.shutdown()
    print(f"{bad} row(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
