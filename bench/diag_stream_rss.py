"""Diagnostic (issue 13): ru_maxrss of the per-session spill and of the checkers' part steps and reduce.

``--keep`` keeps each part's results as ``check_streaming`` does (else they are dropped) and prints, per
checker, the pickled size of all its part results, then runs the reduce steps; ``--names`` picks the
checkers (default: the five with part steps at the time of writing).

Run: ``.venv/bin/python bench/diag_stream_rss.py RUN_DIR [--keep] [--names a,b]`` (bench/results_soak.md).
"""

from __future__ import annotations

import argparse
import pickle
import resource
import time
from pathlib import Path
from typing import Any

from harness.checkers import CHECKERS
from harness.checkers.stream import Spill

NAMES = ["ownership", "no_resurrection", "http_framing", "no_unexpected_5xx", "exactly_once"]
MB = 1024 * 1024


def rss_now() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MB


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--names", default=",".join(NAMES))
    args = ap.parse_args()
    names = args.names.split(",")
    t0 = time.perf_counter()

    def say(what: str) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{what}: RSS {rss_now():.0f} MB, maxrss {peak:.0f} MB, {time.perf_counter() - t0:.0f} s", flush=True)

    say("imports")
    kept: dict[str, list[Any]] = {n: [] for n in names}
    with Spill(args.run_dir) as sp:
        say(f"spill ({sp.groups} groups, {len(sp.global_events)} run-wide events, {len(sp.split)} split ids)")
        for k, part in enumerate(sp.parts()):
            for n in names:
                got = CHECKERS[n].part(part)  # type: ignore[attr-defined]
                if args.keep:
                    kept[n].append(got)
            if k % 25 == 0:
                say(f"part {k} ({len(part.run.history)} events)")
        ctx = sp.context
    say("parts done")
    if args.keep:
        assert ctx is not None
        for n in names:
            size = len(pickle.dumps(kept[n], protocol=pickle.HIGHEST_PROTOCOL))
            v = CHECKERS[n].reduce(kept[n], ctx)  # type: ignore[attr-defined]
            say(f"{n}: part results {size / MB:.1f} MB pickled; reduce -> {v.status}, {len(v.violations)} violations")
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
