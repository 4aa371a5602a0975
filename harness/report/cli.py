"""``harness report RUN_DIR`` and ``harness compare BASELINE CURRENT``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from harness.report.buckets import SERIES
from harness.report.build import build_run_report, build_suite_report, find_runs, is_run_dir
from harness.report.compare import EXIT_BAD_INPUT, MODES, Comparison, GateResult, gate_verdict

__all__ = ["compare_main", "compare_parser", "print_gate", "report_main"]


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


def _bound(flag: str) -> Callable[[str], tuple[str | None, float]]:
    """``X`` (every bucket) or ``BUCKET=X`` (one bucket), a number >= 0."""

    def parse(text: str) -> tuple[str | None, float]:
        bucket, sep, value = text.rpartition("=")
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or BUCKET=number, got {text!r}") from None
        if not math.isfinite(x) or x < 0:
            raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
        if sep and bucket not in SERIES:
            raise argparse.ArgumentTypeError(f"unknown bucket {bucket!r}; known: {', '.join(SERIES)}")
        return (bucket if sep else None), x

    parse.__name__ = flag
    return parse


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness compare",
        description="Gate on latency: judge every gated bucket (the scenario's [gate]; by default lock_wait_ms, "
        "tokenize_in_ms, proxy_elapsed_ms, tokenize_out_ms, total_ms at p99) in one call. A bucket regressed when "
        "its percentile rose by more than its relative threshold AND by more than its absolute floor (live runs: "
        "the whole bootstrap confidence interval of each change above its bound). Exit 0 no regression, "
        "1 regression, 2 bad input, 3 refused: too few samples to judge.",
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
        action="append",
        default=None,
        metavar="BUCKET",
        help="judge only this bucket (repeatable): lock_wait_ms, tokenize_in_ms, proxy_elapsed_ms, tokenize_out_ms, "
        "total_ms, client_request_ms or client_turn_ms (default: the scenario's [gate] buckets)",
    )
    parser.add_argument(
        "--percentile", type=float, default=None, help="for every bucket (default: the scenario's [gate], else 99)"
    )
    parser.add_argument(
        "--threshold",
        action="append",
        type=_bound("threshold"),
        default=[],
        metavar="[BUCKET=]X",
        help="relative rise allowed, for every bucket or BUCKET=X for one (repeatable; default: the scenario's "
        "[gate], else 0.10)",
    )
    parser.add_argument(
        "--floor-ms",
        action="append",
        type=_bound("floor-ms"),
        default=[],
        metavar="[BUCKET=]MS",
        help="absolute rise (ms) allowed, for every bucket or BUCKET=MS for one (repeatable; default: the "
        "scenario's [gate], else 1)",
    )
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


def _split(pairs: list[tuple[str | None, float]]) -> tuple[float | None, dict[str, float]]:
    every = None
    per: dict[str, float] = {}
    for bucket, x in pairs:
        if bucket is None:
            every = x
        else:
            per[bucket] = x
    return every, per


def compare_main(argv: list[str]) -> int:
    parser = compare_parser()
    args = parser.parse_args(argv)
    baselines = ([args.baseline] if args.baseline else []) + args.baselines
    currents = ([args.current] if args.current else []) + args.currents
    if not baselines or not currents:
        parser.print_usage(sys.stderr)
        print("harness compare: need a BASELINE and a CURRENT run", file=sys.stderr)
        return EXIT_BAD_INPUT
    pct_ok = args.percentile is None or 0 < args.percentile < 100
    if not pct_ok or not 0 < args.confidence < 1 or args.bootstrap < 100:
        print("harness compare: need 0 < percentile < 100, 0 < confidence < 1, bootstrap >= 100", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (args.min_samples is not None and args.min_samples < 1) or args.min_runs < 1:
        print("harness compare: need --min-samples >= 1 and --min-runs >= 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    for b in args.bucket or []:
        if b not in SERIES:
            print(f"harness compare: --bucket: unknown bucket {b!r}; known: {', '.join(SERIES)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    mode = "exact" if args.exact else "ab" if args.ab else args.runs
    assert mode in MODES
    threshold, thresholds = _split(args.threshold)
    floor, floors = _split(args.floor_ms)
    result = gate_verdict(
        baselines,
        currents,
        buckets=args.bucket,
        percentile=args.percentile,
        threshold=threshold,
        floor_ms=floor,
        thresholds=thresholds,
        floors=floors,
        min_samples=args.min_samples,
        mode=mode,
        outcome=args.outcome,
        resamples=args.bootstrap,
        seed=args.seed,
        level=args.confidence,
        min_runs=args.min_runs,
    )
    if result.verdict == "bad_input":
        print(f"harness compare: {result.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_gate(result, sys.stdout)
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=2))
    return result.exit_code


def print_gate(result: GateResult, out: TextIO) -> None:
    """Each scenario's buckets, one verdict per line, its notes once, then the overall verdict."""
    for note in result.notes:
        print(f"note: {note}", file=out)
    scenarios: dict[str, list[Comparison]] = {}
    for c in result.comparisons:
        scenarios.setdefault(c.scenario, []).append(c)
    for name, rows in scenarios.items():
        print(
            f"{name} ({rows[0].mode}, baseline {rows[0].runs[0]} run(s), current {rows[0].runs[1]} run(s)):", file=out
        )
        for c in rows:
            print(f"  {c.line()}", file=out)
        for note in dict.fromkeys(n for c in rows for n in c.notes):
            print(f"  note: {note}", file=out)
    print(f"harness compare: {result.verdict.upper()}: {result.message}", file=out)
