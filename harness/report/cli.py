"""``harness report RUN_DIR`` and ``harness compare BASELINE CURRENT``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.report.build import build_run_report, build_suite_report, find_runs, is_run_dir
from harness.report.compare import EXIT_BAD_INPUT, MODES, CompareError, compare, exit_code
from harness.report.stats import HIGHEST_US

__all__ = ["compare_main", "compare_parser", "report_main"]


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="harness report",
        description="Regenerate summary.json, report.md, report.html, junit.xml and plots/ from a run folder's "
        "recorded history and logs. A suite folder (one sub-folder per scenario) gets every scenario's report "
        "and the suite's.",
    )
    parser.add_argument("run_dir", type=Path, help="a scenario run folder or a suite folder")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        print(f"harness report: {run_dir}: no such folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _report(run_dir)
    except (OSError, ValueError) as exc:  # ValueError: a run folder with broken JSON
        print(f"harness report: {run_dir}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _code(summary: dict[str, object]) -> int:
    verdict = summary.get("verdict")
    code = verdict.get("exit_code") if isinstance(verdict, dict) else None
    return code if isinstance(code, int) else 0


def _report(run_dir: Path) -> int:
    """Regenerate; exit with the one verdict (harness/verdict.py): 0 pass, 1 fail, 3 cannot judge."""
    from harness.verdict import EXIT_CANNOT_JUDGE, EXIT_FAIL, EXIT_PASS

    if is_run_dir(run_dir):
        summary = build_run_report(run_dir)
        verdict = summary.get("verdict") or {}
        print(
            f"{run_dir}/report.html: {summary['scenario']['name']} {summary['status']}, SLO {summary['slo']['status']}"
            f"; verdict {str(verdict.get('verdict', '?')).upper()} (exit {_code(summary)})"
        )
        return _code(summary)
    runs = find_runs(run_dir)
    if not runs:
        print(f"harness report: {run_dir}: no run folders (no history.jsonl) in it", file=sys.stderr)
        return EXIT_BAD_INPUT
    codes = {_code(build_run_report(r)) for r in runs}
    suite = build_suite_report(run_dir)
    c = suite["counts"]
    code = EXIT_FAIL if EXIT_FAIL in codes else EXIT_CANNOT_JUDGE if EXIT_CANNOT_JUDGE in codes else EXIT_PASS
    print(
        f"{run_dir}/report.html: {c['scenarios']} scenarios, {c['valid']} valid, {c['invalid']} invalid, "
        f"{c['unknown']} unknown; {suite['slo_failed']} SLO failures; exit {code}"
    )
    return code


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness compare",
        description="Gate on latency: exit 1 when a percentile of a bucket regressed beyond a threshold, judged "
        "by the bootstrap confidence interval of the relative change (a regression only when the whole "
        "interval is above the threshold). Exit 0 no regression, 1 regression, 2 bad input, 3 refused: "
        "too few samples to judge.",
    )
    parser.add_argument("baseline", nargs="?", type=Path, help="baseline run folder, suite folder or folder of runs")
    parser.add_argument("current", nargs="?", type=Path, help="current run folder, suite folder or folder of runs")
    parser.add_argument(
        "--baseline",
        dest="baselines",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="more baseline runs (repeated runs of the same scenarios)",
    )
    parser.add_argument(
        "--current", dest="currents", nargs="+", type=Path, default=[], metavar="DIR", help="more current runs"
    )
    parser.add_argument(
        "--bucket",
        default="total_ms",
        help="lock_wait_ms, tokenize_in_ms, proxy_elapsed_ms, tokenize_out_ms, total_ms, "
        "client_request_ms or client_turn_ms (default total_ms)",
    )
    parser.add_argument("--percentile", type=float, default=99.0, help="default 99")
    parser.add_argument("--threshold", type=float, default=0.10, help="relative regression allowed (default 0.10)")
    parser.add_argument(
        "--min-samples",
        type=int,
        default=None,
        help="refuse (exit 3) below this many samples per side; default 10/(1-p): 1000 for p99",
    )
    parser.add_argument(
        "--min-runs",
        type=int,
        default=1,
        help="refuse (exit 3) with fewer runs per side (default 1; 3 makes machine noise between runs visible)",
    )
    parser.add_argument(
        "--runs",
        choices=("pooled", "per-run"),
        default="pooled",
        help="repeated runs: pool their samples, or bootstrap runs then samples (per-run)",
    )
    parser.add_argument(
        "--ab",
        action="store_true",
        help="A/B on one machine: pair baseline run i with current run i (interleaved runs)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="deterministic (simulation) runs: compare percentiles exactly, no interval "
        "(the default whenever every run on both sides is a simulation run)",
    )
    parser.add_argument("--outcome", default=None, help="only chat requests with this outcome (e.g. committed)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON here")
    return parser


def compare_main(argv: list[str]) -> int:
    parser = compare_parser()
    args = parser.parse_args(argv)
    baselines = ([args.baseline] if args.baseline else []) + args.baselines
    currents = ([args.current] if args.current else []) + args.currents
    if not baselines or not currents:
        parser.print_usage(sys.stderr)
        print("harness compare: need a BASELINE and a CURRENT run", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 < args.percentile < 100 or args.threshold < 0 or not 0 < args.confidence < 1 or args.bootstrap < 100:
        print(
            "harness compare: need 0 < percentile < 100, threshold >= 0, 0 < confidence < 1, bootstrap >= 100",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    mode = "exact" if args.exact else "ab" if args.ab else args.runs
    assert mode in MODES
    try:
        results = compare(
            baselines,
            currents,
            bucket=args.bucket,
            percentile=args.percentile,
            threshold=args.threshold,
            min_samples=args.min_samples,
            mode=mode,
            outcome=args.outcome,
            resamples=args.bootstrap,
            seed=args.seed,
            level=args.confidence,
            min_runs=args.min_runs,
        )
    except (CompareError, OSError, ValueError) as exc:  # ValueError: a run folder with broken JSON
        print(f"harness compare: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for r in results:
        print(r.line())
        for note in r.notes:
            print(f"  note: {note}")
    code = exit_code(results)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "exit_code": code,
                    "histogram_max_ms": HIGHEST_US / 1000,
                    "comparisons": [r.to_json() for r in results],
                },
                indent=2,
            )
        )
    summary = {0: "no regression", 1: "REGRESSION", 3: "refused to judge (too few samples or runs)"}[code]
    print(f"harness compare: {summary}")
    return code
