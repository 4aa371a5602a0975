"""``harness explore`` and ``harness replay``: search seeds for a violation, then replay one exactly.

Exit codes as everywhere in the harness: 0 nothing flagged, 1 a violation (or
a run that crashed or deadlocked), 2 bad input; replay exits with the one
verdict (harness/verdict.py: SLOs and ``[checks]`` policy included, 3 cannot judge). Explore prints, for the first
violation, everything needed to act on it: the seed, the strategy, the
checker's verdict, the replay command, the trace file and the shrunk
scenario; replay prints the history and trace digests, which equal the
explore run's (that equality is the replay guarantee, checked here too).
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from harness.distributed import add_ray_option
from harness.distributed.pool import RayUnavailable
from harness.scenario import Scenario, ScenarioError, expand_variants, load_scenario
from harness.sim.explore import SeedResult, default_jobs, explore
from harness.sim.runner import DEFAULT_DEPTH, STRATEGIES, SimResult, run_sim

__all__ = ["explore_main", "replay_main"]


def _resolve(arg: str) -> Path:
    from harness.runner import find_scenarios

    paths = find_scenarios([arg])
    if len(paths) != 1:
        raise ScenarioError(arg, "", "name exactly one scenario file")
    return paths[0]


def _load(command: str, args: argparse.Namespace) -> tuple[Path, Scenario, list[str]] | None:
    """The scenario named on the command line and the variants to run; None (after a clean message) if bad."""
    from harness.runner._suite import check_variant

    try:
        check_variant(args.variant)
        path = _resolve(args.scenario)
        sc = load_scenario(path).with_tokenizer(_tokenizer(args.tokenizer))
    except ScenarioError as exc:
        print(f"harness {command}: {exc}", file=sys.stderr)
        return None
    return path, sc, [args.variant] if args.variant else [r.variant_label for r in expand_variants(sc)]


def _tokenizer(value: str | None) -> str | None:
    """``--tokenizer NAME|DIR`` checked up front: a bad one is bad input (exit 2), not a crashed seed."""
    if value is not None:
        from harness.tokenizer import TokenizerError, resolve_tokenizer

        try:
            resolve_tokenizer(value)
        except TokenizerError as exc:
            raise ScenarioError("--tokenizer", "", str(exc).removeprefix("--tokenizer ")) from None
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="a scenario file, or a name under scenarios/")
    p.add_argument("--strategy", default="random", choices=STRATEGIES, help="scheduling strategy (default random)")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="pct: bug depth d (d-1 change points; default 3)")
    p.add_argument("--variant", help="server variant (a+b for several); default: the scenario's")
    p.add_argument("--target", help="asgi:module:factory: explore your own ASGI session server")
    p.add_argument("--tokenizer", metavar="NAME|DIR", help="override the scenario's tokenizer (fake and servers)")
    p.add_argument("--out", default="reports/sim", help="where run folders and traces go (default reports/sim)")


def _verdict_lines(r: SeedResult) -> list[str]:
    if r.error:
        return [f"error: {r.error.splitlines()[0] if r.error else ''}"]
    lines = []
    for v in r.invalid:
        vs = v.get("violations") or []
        first = vs[0].get("message") if vs else v.get("notes", "")
        lines.append(f"{v['checker']}: invalid, {len(vs)} violation(s); first: {first}")
    return lines


def explore_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="harness explore", description="Run many seeds in simulation until one fails.")
    _common(p)
    p.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes (default: up to 2)")
    add_ray_option(p, "run the seeds on Ray: a local head on 127.0.0.1 with --jobs CPUs, or a cluster ADDRESS")
    p.add_argument("--no-shrink", action="store_true", help="do not shrink the failing run")
    p.add_argument("--found-dir", default="scenarios/found", help="where shrunk scenarios go")
    p.add_argument("--max-shrink-runs", type=int, default=150, help="budget of simulated runs for shrinking")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or args.depth < 1:
        print("harness explore: --seeds, --jobs and --depth must be >= 1", file=sys.stderr)
        return 2
    loaded = _load("explore", args)
    if loaded is None:
        return 2
    path, sc, variants = loaded
    seeds = range(args.start, args.start + args.seeds)
    for variant in variants:
        t0 = time.perf_counter()  # seam-ok: wall-clock speed of the search, printed for humans only
        label = f"{sc.name}@{variant}"
        done = 0

        def progress(_: SeedResult, label: str = label) -> None:
            nonlocal done
            done += 1
            if sys.stderr.isatty() and done % 10 == 0:
                print(f"\r{label}: {done}/{len(seeds)} seeds", end="", file=sys.stderr, flush=True)

        try:
            results = explore(
                str(path),
                seeds,
                args.strategy,
                depth=args.depth,
                variant=variant,
                target=args.target,
                jobs=args.jobs,
                on_result=progress,
                tokenizer=args.tokenizer,
                ray=args.ray,
            )
        except (ValueError, ScenarioError, RayUnavailable) as exc:
            print(f"harness explore: {exc}", file=sys.stderr)
            return 2
        dt = time.perf_counter() - t0  # seam-ok: see above
        if sys.stderr.isatty() and done >= 10:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        flagged = [r for r in results if r.flagged]
        rate = len(results) / dt if dt > 0 else 0.0
        if not flagged:
            print(f"{label}: {len(results)} seeds ({args.strategy}), no violation ({dt:.1f} s, {rate:.1f} seeds/s)")
            continue
        r = min(flagged, key=lambda x: x.seed)
        print(f"{label}: VIOLATION at seed {r.seed} (strategy {args.strategy}) after {len(results)} seeds, {dt:.1f} s")
        for line in _verdict_lines(r):
            print(f"  {line}")
        return _report_failure(args, path, sc.name, variant, r)
    return 0


def _report_failure(args: argparse.Namespace, path: Path, name: str, variant: str, r: SeedResult) -> int:
    out = Path(args.out)
    run = run_sim(
        load_scenario(path).with_tokenizer(args.tokenizer),
        out,
        r.seed,
        args.strategy,
        args.depth,
        variant=variant,
        target=args.target,
        run_name=f"{name}@{variant}-seed{r.seed}",
        report=False,
    )
    same = run.history_digest == r.history_digest and run.trace_digest == r.trace_digest
    replay = run.replay_command(str(path), args.target, variant if variant != "default" or args.variant else None)
    if args.tokenizer is not None:
        replay += f" --tokenizer {args.tokenizer}"
    print(f"  replay: {replay}")
    print(f"  trace:  {run.run.run_dir / 'trace.txt'}   (run folder {run.run.run_dir})")
    print(f"  digest: history {run.history_digest[:16]}  trace {run.trace_digest[:16]}")
    if not same:
        print("  WARNING: the replay's digest differs from the explore run's: something escapes the simulation")
    if args.no_shrink:
        return 1
    from harness.sim.shrink import shrink, write_found

    checker = "error" if r.error else str(r.invalid[0]["checker"])
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    if args.tokenizer is not None:  # the shrunk scenario reproduces on its own
        raw.setdefault("target", {})["tokenizer"] = args.tokenizer
    try:
        res = shrink(
            raw,
            str(path),
            r.seed,
            args.strategy,
            checker=checker,
            depth=args.depth,
            variant=variant,
            target=args.target,
            max_runs=args.max_shrink_runs,
        )
    except ValueError as exc:
        print(f"  shrink: {exc}")
        return 1
    found = write_found(res, str(path), Path(args.found_dir), target=args.target)
    flags = f"--seed {res.seed} --strategy {res.strategy}" + (f" --depth {res.depth}" if res.strategy == "pct" else "")
    if args.target:
        flags += f" --target {args.target}"
    print(f"  shrunk ({res.runs} runs): {found}")
    for what in res.removed:
        print(f"    - {what}")
    print(f"  run it: harness run {found} --mode sim {flags}")
    return 1


def replay_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="harness replay", description="Replay one simulated run exactly from its seed.")
    _common(p)
    p.add_argument("--seed", type=int, required=True, help="the seed to replay")
    p.add_argument("--no-report", action="store_true", help="skip report.md/html and plots")
    args = p.parse_args(argv)
    loaded = _load("replay", args)
    if loaded is None:
        return 2
    _, sc, runs = loaded
    from harness.verdict import Judgement, judge, suite_exit

    judgements: list[Judgement] = []
    for variant in runs:
        try:
            res: SimResult = run_sim(
                sc,
                Path(args.out),
                args.seed,
                args.strategy,
                args.depth,
                variant=variant,
                target=args.target,
                run_name=f"{sc.name}@{variant}-seed{args.seed}",
                report=not args.no_report,
            )
        except (ValueError, ScenarioError) as exc:
            print(f"harness replay: {exc}", file=sys.stderr)
            return 2
        r = res.run
        print(
            f"{sc.name}@{variant} seed {res.seed} ({res.strategy}): {r.status}; {res.steps} steps, "
            f"{res.virtual_s:.3f} virtual s"
        )
        print(f"  history digest {res.history_digest}")
        print(f"  trace digest   {res.trace_digest}")
        print(f"  run folder     {r.run_dir}  (trace.txt, sim.json)")
        for v in r.verdicts:
            if v["status"] != "valid":
                vs = v.get("violations") or []
                print(f"  {v['checker']}: {v['status']}: {vs[0]['message'] if vs else v.get('notes', '')}")
        if r.error:
            print(f"  error: {r.error}")
        j = r.judgement if r.judgement is not None else judge(r.run_dir, verdicts=[], error=r.error or "no verdict")
        for c in j.slo.get("checks") or []:
            if c.get("status") in ("fail", "error"):
                print(f"  SLO {c.get('series')} {c.get('key')} <= {c.get('threshold_ms')} ms: FAIL")
        print(f"  verdict: {j.verdict.upper()} (exit {j.exit_code})")
        judgements.append(j)
    return suite_exit(judgements)
