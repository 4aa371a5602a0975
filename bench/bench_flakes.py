"""Flake budget: the default suite N times on the correct server under starvation; false alarms per checker.

    python bench/bench_flakes.py [--runs 20] [--hogs N] [--nice 10] [--out /tmp/flakes] [--idle]

Every core gets a busy-loop process (``--hogs``, default one per core) and the
harness and its servers run niced below them (``--nice``), so the client is
the slow party, as on a shared CI runner. Any ``invalid`` verdict on the
correct server is a false alarm (issue 16: the figure must be 0). Prints one
line per run and a table of false alarms per checker; exit 1 when there was
any. ``--idle`` runs without hogs, for comparison.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.starve import RUN_NICE, cpu_hogs, run_suite_cli, suite_verdicts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--hogs", type=int, default=None, help="busy-loop processes (default: one per core)")
    ap.add_argument("--nice", type=int, default=RUN_NICE)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_flakes"))
    ap.add_argument("--idle", action="store_true", help="no hogs, no nice: the idle reference")
    args = ap.parse_args()
    alarms: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    t_all = time.monotonic()
    for i in range(args.runs):
        out = args.out / f"run-{i:02d}"
        if out.exists():
            shutil.rmtree(out)  # written by this benchmark only
        t0 = time.monotonic()
        if args.idle:
            code = run_suite_cli(out)
        else:
            with cpu_hogs(args.hogs):
                code = run_suite_cli(out, nice=args.nice)
        runs = suite_verdicts(out)
        bad = [(r, c, v["first"]) for r, cs in runs.items() for c, v in cs.items() if v["status"] == "invalid"]
        for r, c, first in bad:
            alarms[c] += 1
            examples.setdefault(c, f"{r}: {first}")
        print(
            f"run {i + 1}/{args.runs}: exit {code}, {len(runs)} scenario runs, {len(bad)} false alarm(s), "
            f"{time.monotonic() - t0:.0f} s",
            flush=True,
        )
    mode = "idle" if args.idle else f"starved: hogs={args.hogs or 'one per core'}, nice={args.nice}"
    print(f"\n{args.runs} runs of the default suite in {time.monotonic() - t_all:.0f} s ({mode})")
    print(f"false alarms in total: {sum(alarms.values())}")
    for c, n in alarms.most_common():
        print(f"  {c:<22} {n:>4}   e.g. {examples[c]}")
    return 1 if alarms else 0


if __name__ == "__main__":
    raise SystemExit(main())
