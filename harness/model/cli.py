"""``harness model``: predicted bucket percentiles for a deployment, and the capacity-planning sweep.

    harness model SCENARIO.toml|PARAMS.toml|RUN_DIR [--sessions N] [--processes P]
                  [--calibration RUN_DIR|calibration.json] [--sweep] [--out DIR]

The input is a scenario (its workload, backend and target tables), a model
params TOML (docs/model.md), or a live run folder (its scenario.json; with
``--compare`` the model is set up as that run was deployed and its
percentiles are compared with the run's ``chat_done`` lines). Exit codes: 0
ok, 1 an SLO of the scenario is predicted to be missed (``--check-slo``),
2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.distributed import add_ray_option

from ._calibrate import Calibration, calibrate, load_calibration
from ._params import ModelParams, ParamsError, from_plain, from_scenario, load_params
from ._report import percentile_table, plot_buckets, plot_sweep, sweep_table
from ._sim import BUCKETS, CLIENT, run_model

__all__ = ["load_input", "main"]


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness model",
        description="Capacity model (simpy): predicted chat_done bucket percentiles; --sweep for capacity planning.",
    )
    p.add_argument("input", help="scenario TOML, model params TOML, or a live run folder")
    p.add_argument("--sessions", type=int, help="override workload.sessions")
    p.add_argument("--processes", type=int, help="override the number of session-server processes")
    p.add_argument("--concurrency", type=int, help="override workload.concurrency (agents in flight)")
    p.add_argument("--turns", type=int, help="override workload.turns (every session this many)")
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument("--calibration", help="run folder to calibrate from, or a saved calibration.json")
    p.add_argument("--method", default="median", choices=("median", "ols"), help="calibration estimator")
    p.add_argument("--no-noise", action="store_true", help="fixed costs: no calibration residuals")
    p.add_argument("--no-stalls", action="store_true", help="no whole-process stalls (the calibration's are used)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--inline", action="store_true", help="tokenize on the event loop")
    tok.add_argument("--thread", action="store_true", help="tokenize in a worker thread")
    p.add_argument(
        "--tokenizer",
        metavar="NAME|DIR",
        help="measure prompt growth and tokens per word with this tokenizer (a shipped name or a local dir)",
    )
    p.add_argument("--lock-restore", action="store_true", help="the lock_restore variant")
    p.add_argument("--backend-concurrency", type=int, help="generations the backend runs at once (0 = unbounded)")
    p.add_argument(
        "--as-live",
        action="store_true",
        help="model the harness's own live deployment: one agent loop, all processes on this machine's cores",
    )
    p.add_argument("--cores", type=int, help="with --as-live: the machine's cores (default: this machine's)")
    p.add_argument("--background", type=float, default=0.0, help="with --as-live: other busy processes")
    p.add_argument("--compare", help="a live run folder: print model against live percentile errors")
    p.add_argument("--sweep", action="store_true", help="p99 against processes and agents (capacity chart)")
    p.add_argument("--sweep-processes", type=_ints, default=[1, 2, 4, 8, 16, 32, 64], metavar="N,N,...")
    p.add_argument("--sweep-agents", type=_ints, default=[16, 64, 256, 1024], metavar="N,N,...")
    p.add_argument("--sweep-bucket", default="total_ms", choices=(*BUCKETS, CLIENT))
    p.add_argument("--slo-ms", type=float, help="p99 bound for the sweep (default: the scenario's slo.total_ms)")
    add_ray_option(p, "sweep points on Ray: a local head on 127.0.0.1 with --jobs CPUs, or a cluster ADDRESS")
    p.add_argument("--jobs", type=int, default=2, help="with --ray and no ADDRESS: the local head's CPUs (default 2)")
    p.add_argument("--out", help="folder for summary.json, plots and calibration (default: print only)")
    return p


def load_input(path: str) -> tuple[ModelParams, dict[str, Any]]:
    """(params, the scenario's SLOs) from a scenario TOML, a params TOML or a run folder."""
    p = Path(path)
    if p.is_dir():
        sj = p / "scenario.json"
        if not sj.exists():
            raise ParamsError(f"{p}: not a run folder (no scenario.json)")
        data = json.loads(sj.read_text())
        return from_plain(data, str(sj)), dict(data.get("slo") or {})
    if not p.exists():
        raise ParamsError(f"{p}: no such file")
    import tomllib

    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{p}: not valid TOML: {exc}") from None
    if "deployment" in raw or "costs" in raw or "tokens" in raw or "stalls" in raw:
        return load_params(p), {}
    from harness.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(p)
    except ScenarioError as exc:
        raise ParamsError(str(exc)) from None
    return from_scenario(sc), dict(sc.slo)


def _apply_args(params: ModelParams, args: argparse.Namespace) -> ModelParams:
    ch: dict[str, Any] = {}
    if args.sessions is not None:
        ch["sessions"] = args.sessions
    if args.processes is not None:
        ch["processes"] = args.processes
    if args.concurrency is not None:
        ch["concurrency"] = args.concurrency
    if args.turns is not None:
        ch["turns"] = (args.turns, args.turns)
    if args.seed is not None:
        ch["seed"] = args.seed
    if args.inline:
        ch["tokenize_in_thread"] = False
    if args.thread:
        ch["tokenize_in_thread"] = True
    if args.lock_restore:
        ch["lock_restore"] = True
    if args.backend_concurrency is not None:
        ch["backend_concurrency"] = args.backend_concurrency
    for k, v in ch.items():
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise ParamsError(f"--{k.replace('_', '-')}: must be >= 0, got {v}")
    out = params.replace(**ch) if ch else params
    if args.as_live:
        out = out.as_live(args.cores or os.cpu_count() or 1, args.background)
    return out


def _calibration(args: argparse.Namespace, out: Path | None) -> Calibration | None:
    if not args.calibration:
        return None
    src = Path(args.calibration)
    cal = calibrate(src, method=args.method) if src.is_dir() else load_calibration(src)
    print(f"calibration from {cal.source} ({args.method}):")
    print(cal.table())
    for n in cal.notes:
        print(f"  note: {n}")
    if out is not None:
        cal.save(out / "calibration.json")
        if any(f.xs for f in cal.fits.values()):
            cal.plot(out / "calibration.png")
    return cal


def _sweep_point(job: tuple[ModelParams, str, int, int, int]) -> dict[str, Any]:
    """One point of the sweep (a module-level function: it runs in a Ray worker with --ray)."""
    p, bucket, n, a, sessions = job
    r = run_model(p)
    st = r.stats(bucket)
    return {
        "processes": n,
        "agents": a,
        "sessions": sessions,
        "requests": r.requests,
        "n": st.n,
        "p50_ms": st.get(50.0),
        "p99_ms": st.get(99.0),
    }


def _sweep(params: ModelParams, args: argparse.Namespace, slo: float | None, out: Path | None) -> int:
    jobs: list[tuple[ModelParams, str, int, int, int]] = []
    for a in args.sweep_agents:
        sessions = args.sessions if args.sessions is not None else max(2 * a, 400)
        for n in args.sweep_processes:
            p = params.replace(processes=n, concurrency=a, sessions=sessions, arrival_rate=0.0)
            jobs.append((p, args.sweep_bucket, n, a, sessions))
    if getattr(args, "ray", None) is not None:  # issue 15: the points in parallel, results in the same order
        from harness.distributed.pool import RayPool

        with RayPool(None if args.ray == "local" else args.ray, args.jobs) as pool:
            points = pool.map(_sweep_point, jobs)
    else:
        points = [_sweep_point(j) for j in jobs]
    print(sweep_table(points, slo, args.sweep_bucket))
    if out is not None:
        (out / "sweep.json").write_text(json.dumps({"bucket": args.sweep_bucket, "slo_ms": slo, "points": points}))
        path = plot_sweep(points, out / "sweep.png", slo_ms=slo, bucket=args.sweep_bucket, title=params.name)
        print(f"sweep chart: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out else None
    try:
        params, slos = load_input(args.input)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        cal = _calibration(args, out)
        if cal is not None:
            params = cal.apply(params, noise=not args.no_noise, stalls=not args.no_stalls)
        params = _apply_args(params, args)
        if args.tokenizer is not None:
            from harness.tokenizer.stats import token_counts

            counts = token_counts(args.tokenizer)
            params = params.replace(**counts.as_params())
            print(
                f"tokens ({args.tokenizer}): first prompt {counts.first_prompt_tokens}, +{counts.turn_tokens} per "
                f"turn besides the answer, {counts.tokens_per_word} per answer word"
            )
    except (ParamsError, OSError, ValueError) as exc:
        print(f"harness model: {exc}", file=sys.stderr)
        return 2
    slo = args.slo_ms if args.slo_ms is not None else slos.get(args.sweep_bucket)
    if args.sweep:
        return _sweep(params, args, slo, out)
    t = time.perf_counter()  # reporting only: how long the simulation took
    result = run_model(params)
    took = time.perf_counter() - t
    d, w = params.deployment, params.workload
    print(
        f"model {params.name}: {w.sessions} sessions x {w.turns[0]}-{w.turns[1]} turns, {w.concurrency} agents, "
        f"{d.processes} process(es), tokenize {'in thread' if d.tokenize_in_thread else 'inline'}"
        f"{', lock_restore' if d.lock_restore else ''}; {result.requests} chat requests, "
        f"{result.sim_time_s:.1f} s simulated in {took:.1f} s"
    )
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(result.outcomes.items())))
    if params.stalls.enabled:
        print(f"stalls: {result.stalls} injected, {result.stall_ms:.1f} ms in all ({params.stalls.rate_per_s:.3f}/s)")
    print(percentile_table(result))
    summary = result.summary()
    if args.compare:
        from ._compare import compare_live, format_comparison, live_buckets

        cmp = compare_live(result, live_buckets(args.compare))
        print(f"\nmodel against live run {args.compare} (err = (model - live) / live):")
        print(format_comparison(cmp))
        summary["compare"] = {"run": args.compare, "buckets": cmp}
    if out is not None:
        summary["params"] = params.describe()
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        plot_buckets(result, out / "buckets.png")
        print(f"wrote {out / 'summary.json'} and {out / 'buckets.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
