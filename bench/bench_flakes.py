"""Flake budget: the default suite N times on the correct server under starvation; false alarms per checker.

    python bench/bench_flakes.py [--runs 20] [--hogs N] [--nice 10] [--out /tmp/flakes] [--idle]
                                 [--scenarios NAME ...] [--timeout-s 2400]
    python bench/bench_flakes.py --recheck /tmp/flakes   # the current checkers on the saved runs

Every core gets a busy-loop process (``--hogs``, default one per core) and the
harness and its servers run niced below them (``--nice``), so the client is
the slow party, as on a shared CI runner. Any ``invalid`` verdict on the
correct server is a false alarm (issue 16: the figure must be 0). Prints one
line per run and a table of false alarms per checker; exit 1 when there was
any. ``--idle`` runs without hogs, for comparison. A suite run that does not
finish in ``--timeout-s`` is stopped; the scenarios it finished count (the
line says how many). ``--recheck DIR`` runs the current checkers again on
every saved run folder of an earlier benchmark (``DIR/run-NN/<scenario>``):
the figure of fixed checkers on histories recorded under starvation.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.starve import RUN_NICE, TIMED_OUT, cpu_hogs, recheck_verdicts, run_suite_cli, suite_verdicts  # noqa: E402


def _tally(
    i: int, n: int, runs: dict[str, dict[str, Any]], alarms: collections.Counter[str], examples: dict[str, str]
) -> int:
    bad = [(r, c, v["first"]) for r, cs in runs.items() for c, v in cs.items() if v["status"] == "invalid"]
    unknown = collections.Counter(c for cs in runs.values() for c, v in cs.items() if v["status"] == "unknown")
    for r, c, first in bad:
        alarms[c] += 1
        examples.setdefault(c, f"run-{i:02d}/{r}: {first}")
    print(
        f"run {i + 1}/{n}: {len(runs)} scenario runs checked, {len(bad)} false alarm(s), "
        f"unknown: {dict(sorted(unknown.items())) or 'none'}",
        end="",
        flush=True,
    )
    return len(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--hogs", type=int, default=None, help="busy-loop processes (default: one per core)")
    ap.add_argument("--nice", type=int, default=RUN_NICE)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_flakes"))
    ap.add_argument("--idle", action="store_true", help="no hogs, no nice: the idle reference")
    ap.add_argument("--scenarios", nargs="+", default=[], help="these scenarios instead of the default suite")
    ap.add_argument("--timeout-s", type=float, default=2400.0, help="stop a suite run after this long")
    ap.add_argument("--recheck", type=Path, metavar="DIR", help="re-run the current checkers on DIR/run-*/")
    args = ap.parse_args()
    alarms: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    t_all = time.monotonic()
    checked = 0
    if args.recheck is not None:
        folders = sorted(p for p in args.recheck.glob("run-*") if p.is_dir())
        for i, out in enumerate(folders):
            checked += _tally(i, len(folders), recheck_verdicts(out), alarms, examples)
            print(f" ({out.name})", flush=True)
        mode, n = f"recheck of {args.recheck} with the current checkers", len(folders)
    else:
        for i in range(args.runs):
            out = args.out / f"run-{i:02d}"
            if out.exists():
                shutil.rmtree(out)  # written by this benchmark only
            t0 = time.monotonic()
            if args.idle:
                code = run_suite_cli(out, scenarios=args.scenarios, timeout_s=args.timeout_s)
            else:
                with cpu_hogs(args.hogs, max_s=args.timeout_s + 120):
                    code = run_suite_cli(out, nice=args.nice, scenarios=args.scenarios, timeout_s=args.timeout_s)
            checked += _tally(i, args.runs, suite_verdicts(out), alarms, examples)
            cut = " (timed out: stopped)" if code == TIMED_OUT else ""
            print(f", exit {code}{cut}, {time.monotonic() - t0:.0f} s", flush=True)
        what = " ".join(args.scenarios) or "the default suite"
        hogs = "one per core" if args.hogs is None else args.hogs  # --hogs 0: starved by whatever else runs
        mode = "idle" if args.idle else f"starved: hogs={hogs}, nice={args.nice}"
        mode, n = f"{what}, {mode}", args.runs
    print(f"\n{n} runs ({checked} scenario runs checked) in {time.monotonic() - t_all:.0f} s ({mode})")
    print(f"false alarms in total: {sum(alarms.values())}")
    for c, k in alarms.most_common():
        print(f"  {c:<22} {k:>4}   e.g. {examples[c]}")
    return 1 if alarms else 0


if __name__ == "__main__":
    raise SystemExit(main())
