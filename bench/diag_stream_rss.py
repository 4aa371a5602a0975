"""Diagnostic (issue 13): ru_maxrss of the per-session spill and of five checkers' part steps, results dropped.

Run: ``.venv/bin/python bench/diag_stream_rss.py RUN_DIR`` (bench/results_soak.md, the 10^5 figure).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from harness.checkers import CHECKERS
from harness.checkers.stream import Spill

NAMES = ["ownership", "no_resurrection", "http_framing", "no_unexpected_5xx", "exactly_once"]


def main() -> int:
    t0 = time.perf_counter()

    def say(what: str) -> None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{what}: maxrss {rss:.0f} MB, {time.perf_counter() - t0:.0f} s", flush=True)

    say("imports")
    with Spill(Path(sys.argv[1])) as sp:
        say(f"spill ({sp.groups} groups, {len(sp.global_events)} run-wide events, {len(sp.split)} split ids)")
        for k, part in enumerate(sp.parts()):
            for n in NAMES:
                CHECKERS[n].part(part)  # type: ignore[attr-defined]
            if k % 25 == 0:
                say(f"part {k} ({len(part.run.history)} events)")
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
