"""Benchmark and validation of the capacity model.

Speed (target: 10^5 sessions x 10 turns in under a minute)::

    .venv/bin/python bench/bench_model.py [--sessions 100000] [--turns 10] [--processes 64]
        [--concurrency 2000] [--inline] [--profile] [--stall-rate R --stall-ms MS]

prints the wall time of the simulation alone (and of the percentile summary
separately), the number of chat requests and the simulated time.

Validation against live runs::

    .venv/bin/python bench/bench_model.py --validate [--repeats 2] [--out reports/model_validation]
        [--markdown bench/results_model.md] [--no-stalls] [--stall-variants] [--reuse]

runs a low-load calibration workload and three workloads (different
concurrency, latency models, process counts, tokenization modes) live with
``harness run``, calibrates the model on the calibration run only, models
each workload as the live runner deployed it (``--as-live``: one agent loop,
the fake's loop, this machine's cores) and prints p50 / p99 errors per
bucket; each workload runs ``--repeats`` times live so the live-vs-live
spread is printed next to the model's error. ``--stall-variants`` adds a
table of total_ms errors without whole-process stalls, with the calibration
run's, with another workload's live run's and (an oracle, not a prediction)
with the same workload's other live run's; ``--reuse`` models live run
folders already in ``--out`` instead of running them again. A benchmark, not
a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.fake_sglang.plan import parse_plan
from harness.model import Deployment, ModelParams, Workload, run_model
from harness.model._params import Stalls

# The validation workloads: scenario TOML bodies (name and seed are added per run).
CALIBRATION = """
[target]
processes = 1
[backend]
latency = { model = "uniform", min_ms = 10, max_ms = 30 }
[workload]
sessions = 50
concurrency = 2
turns = 6
[checks]
enabled = ["lost_turns"]
"""
WORKLOADS = {
    "A_thread_uniform_c8_p1": """
[target]
processes = 1
[backend]
latency = { model = "uniform", min_ms = 20, max_ms = 80 }
[workload]
sessions = 100
concurrency = 8
turns = 5
[checks]
enabled = ["lost_turns"]
""",
    "B_inline_lognormal_c16_p2_poisson": """
[target]
processes = 2
server_args = ["--no-tokenize-thread"]
[backend]
latency = { model = "lognormal", median_ms = 30, p99_ms = 200, cap_ms = 600 }
[workload]
sessions = 150
concurrency = 16
turns = [3, 6]
arrival_rate = 25
think_time_s = [0.0, 0.02]
[checks]
enabled = ["lost_turns"]
""",
    "C_thread_per_token_c24_p1_faults": """
[target]
processes = 1
[backend]
latency = { model = "per_token", ttft_ms = 15, itl_ms = 2 }
[[backend.rules]]
fault = "abort"
probability = 0.05
[[backend.rules]]
fault = "http_503"
probability = 0.02
[workload]
sessions = 120
concurrency = 24
turns = 6
[checks]
enabled = ["lost_turns"]
""",
}


def _live(name: str, body: str, seed: int, out: Path, reuse: bool = False) -> Path:
    run = out / "runs" / name
    if reuse and (run / "server_logs.jsonl").exists():
        return run
    toml = out / "scenarios" / f"{name}.toml"
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_text(f'name = "{name}"\nseed = {seed}\n{body}')
    cmd = [sys.executable, "-m", "harness.cli", "run", str(toml), "--out", str(out / "runs"), "--quiet"]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    if not (run / "server_logs.jsonl").exists():
        raise SystemExit(f"live run {name} left no server_logs.jsonl in {run}")
    return run


def _pct(e: float) -> str:
    return "n/a" if math.isnan(e) else f"{e * 100:+.0f}%"


VARIANT_SEEDS = range(5)


def _stall_variants(
    name: str, base: Any, cal: Any, cores: int, all_runs: dict[str, list[Path]], live: Any, args: argparse.Namespace
) -> str:
    """One row: total_ms p50 / p99 err without stalls, with the calibration run's, with another
    workload's live run's (a prediction), and with the same workload's other live run's (an oracle:
    what the stall component can do when the stall statistics are known). Stalls are few per run,
    so each cell is the median over VARIANT_SEEDS model seeds, with the p99 range."""
    from harness.model import calibrate, run_model
    from harness.model._compare import compare_live

    names = list(WORKLOADS)
    other = names[1] if name == names[0] else names[0]
    if other not in all_runs:
        all_runs[other] = [_live(f"{other}_r0", WORKLOADS[other], 100, out=Path(args.out), reuse=args.reuse)]
    loo = calibrate(all_runs[other][0]).stall_fit
    p_no = cal.apply(base, stalls=False).as_live(cores).replace(name=name)
    cells = []
    fits = [None, cal.stall_fit, loo]
    if len(all_runs[name]) > 1:
        fits.append(calibrate(all_runs[name][1]).stall_fit)
    for sf in fits:
        p = p_no if sf is None else p_no.replace(stalls=sf.stalls)
        e50, e99 = [], []
        for seed in VARIANT_SEEDS:
            t = compare_live(run_model(p.replace(seed=seed)), live)["total_ms"]
            e50.append(t["p50_err"])
            e99.append(t["p99_err"])
        e50.sort()
        e99.sort()
        mid = len(e50) // 2
        cells.append(f"{_pct(e50[mid])} / {_pct(e99[mid])} ({_pct(e99[0])}..{_pct(e99[-1])})")
    while len(cells) < 4:
        cells.append("n/a")

    def fitted(sf: Any) -> str:
        return f"{sf.events}, {sf.rate_per_s:.2f}/s, max {max(sf.durations_ms, default=0.0):.0f} ms"

    oracle = fitted(fits[3]) if len(fits) > 3 else "n/a"
    return f"| {name} | {cells[0]} | {cells[1]} | {other} r0: {fitted(loo)} | {cells[2]} | {oracle} | {cells[3]} |"


def validate(args: argparse.Namespace) -> None:
    from harness.model import calibrate, run_model
    from harness.model._compare import compare_live, live_buckets
    from harness.model._params import from_plain
    from harness.report.stats import latency_stats
    from harness.rundata import RunData

    out = Path(args.out)
    cores = os.cpu_count() or 1
    cal_run = _live("calibration", CALIBRATION, 1, out, args.reuse)
    cal = calibrate(cal_run)
    cal.save(out / "calibration.json")
    cal.plot(out / "calibration.png")
    lines = [
        "## Calibration",
        "",
        f"From `{cal_run}` (1 process, thread mode, 2 agents):",
        "",
        "```",
        cal.table(),
        "```",
    ]
    rows: list[str] = []
    loads: list[str] = []
    variants: list[str] = []
    all_runs: dict[str, list[Path]] = {}  # a workload's r0 may have been run already for a stall variant
    for name, body in WORKLOADS.items():
        # context for the reader: the box is shared (meaningless for reused runs: they ran earlier)
        load = "reused" if args.reuse else f"{os.getloadavg()[0]:.1f}"
        again = args.reuse or name in all_runs
        runs = [_live(f"{name}_r{i}", body, 100 + i, out, again) for i in range(args.repeats)]
        all_runs[name] = runs
        live = [live_buckets(r) for r in runs]
        base = from_plain(RunData.load(runs[0]).scenario)
        params = cal.apply(base, stalls=not args.no_stalls).as_live(cores).replace(name=name)
        result = run_model(params)
        if args.stall_variants:
            variants.append(_stall_variants(name, base, cal, cores, all_runs, live[0], args))
        cmp = compare_live(result, live[0])
        for b, row in cmp.items():
            spread = ""
            if len(live) > 1:
                other = latency_stats(live[1][b], percentiles=(50.0, 99.0))
                lp50, lp99 = row["p50_live"], row["p99_live"]
                spread = f"{_pct((other.get(50) - lp50) / lp50 if lp50 else math.nan)} / "
                spread += f"{_pct((other.get(99) - lp99) / lp99 if lp99 else math.nan)}"
            rows.append(
                f"| {name} | {b} | {row['n_live']} | {row['p50_live']:.2f} | {row['p50_model']:.2f} | "
                f"{_pct(row['p50_err'])} | {row['p99_live']:.2f} | {row['p99_model']:.2f} | {_pct(row['p99_err'])} | "
                f"{spread} |"
            )
        t = cmp["total_ms"]
        loads.append(f"| {name} | {load} | {_pct(t['p50_err'])} | {_pct(t['p99_err'])} |")
        print(f"{name}: total_ms p50 err {_pct(t['p50_err'])}, p99 err {_pct(t['p99_err'])} (load average {load})")
    lines += [
        "",
        "## total_ms in short",
        "",
        "| workload | 1-min load average before the live runs | p50 err | p99 err |",
        "|---|---:|---:|---:|",
        *loads,
        "",
        "## Model against live",
        "",
        "err = (model - live) / live; live run 1 vs run 0 is the live-vs-live spread (p50 / p99).",
        "",
        "| workload | bucket | n live | p50 live | p50 model | p50 err | p99 live | p99 model | p99 err "
        "| live spread |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if variants:
        lines += [
            "",
            "## Stall variants, total_ms p50 / p99 err",
            "",
            f"Median over model seeds {VARIANT_SEEDS.start}..{VARIANT_SEEDS.stop - 1} (p99 err range in brackets); "
            "against live run r0. Stalls fitted: count, rate per process-second, longest.",
            "",
            "| workload | no stalls | stalls of the calibration run | another workload's live run | with its stalls "
            "| oracle: this workload's live run r1 | with its stalls |",
            "|---|---:|---:|---|---:|---|---:|",
            *variants,
        ]
    text = "\n".join(lines) + "\n"
    (out / "validation.md").write_text(text)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validate", action="store_true", help="model against live runs instead of the speed benchmark")
    ap.add_argument("--repeats", type=int, default=2, help="--validate: live runs per workload")
    ap.add_argument("--out", default="reports/model_validation", help="--validate: where runs and results go")
    ap.add_argument("--markdown", help="--validate: also write the tables to this file")
    ap.add_argument("--reuse", action="store_true", help="--validate: reuse live run folders already in --out")
    ap.add_argument("--no-stalls", action="store_true", help="--validate: model without whole-process stalls")
    ap.add_argument(
        "--stall-variants",
        action="store_true",
        help="--validate: also model each workload without stalls and with another workload's live-run stalls",
    )
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--processes", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=2000)
    ap.add_argument("--inline", action="store_true", help="tokenize inline (fewer events per request)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stall-rate", type=float, default=0.0, help="whole-process stalls per second per process")
    ap.add_argument("--stall-ms", type=float, default=50.0, help="duration of each stall")
    ap.add_argument("--profile", action="store_true", help="cProfile the run, print the top 25 by tottime")
    args = ap.parse_args()
    if args.validate:
        validate(args)
        return
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
    if args.stall_rate > 0:
        params = params.replace(stalls=Stalls(rate_per_s=args.stall_rate, durations_ms=(args.stall_ms,)))
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
    if result.stalls:
        print(f"  stalls             {result.stalls} ({args.stall_rate:g}/s per process, {args.stall_ms:g} ms each)")
    print(f"  total_ms p50 {total.get(50):.1f}  p99 {total.get(99):.1f}  (n={total.n})")
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
