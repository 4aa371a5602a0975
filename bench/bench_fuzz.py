"""Benchmark: the hostile-input fuzz (tests/unit/fuzz_inputs.py) at 10^4 examples, with figures.

The same properties as ``tests/unit/test_server_fuzz.py`` (no 5xx but injected
faults' 502 / 503, 4xx bodies are JSON, the canary session byte-identical, a
normal 3-turn session still served, the fake's ``/stats`` always answering,
accepted plans holding only finite, bounded numbers), run longer than
``make test`` can afford. In process (ASGI), so the figure is Hypothesis plus
the two apps on one core; a shared 2-core machine makes it noisy.

Run: ``.venv/bin/python bench/bench_fuzz.py [--server 6000] [--fake 2500] [--plan 1500] [--random]``
(``--random``: fresh random examples instead of the derandomized, replayable ones).
Prints examples/s per target and any failure (Hypothesis's minimal failing example). Exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit"))

import fuzz_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", type=int, default=6000, help="examples against the server (+ fake behind it)")
    p.add_argument("--fake", type=int, default=2500, help="examples against the fake's generation endpoints")
    p.add_argument("--plan", type=int, default=1500, help="examples of PUT /admin/plan bodies")
    p.add_argument("--random", action="store_true", help="random examples (default: derandomized, replayable)")
    args = p.parse_args(argv)
    failures = 0
    total = 0
    t0 = time.perf_counter()
    print(f"{'target':<8} {'examples':>9} {'seconds':>8} {'ex/s':>7}  statuses")
    for name, n in (("server", args.server), ("fake", args.fake), ("plan", args.plan)):
        if n <= 0:
            continue
        t = time.perf_counter()
        try:
            r = fuzz_inputs.RUNS[name](n, derandomize=not args.random)
        except Exception as exc:  # a property failed: report it, carry on with the next target
            failures += 1
            notes = "\n".join(getattr(exc, "__notes__", []))
            print(f"{name:<8} FAILED after {time.perf_counter() - t:.1f} s: {exc!r}\n{notes}")
            traceback.print_exc(limit=3)
            continue
        total += r.examples
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items()))
        print(f"{name:<8} {r.examples:>9} {r.seconds:>8.1f} {r.examples / r.seconds:>7.1f}  {statuses}")
    wall = time.perf_counter() - t0
    print(f"{'total':<8} {total:>9} {wall:>8.1f} {total / wall:>7.1f}  failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
