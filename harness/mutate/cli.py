"""``harness mutate``: mutation testing of reference_impl against the scenario library.

Exit codes: 0 the run finished (and ``--min-score`` held), 1 the score is below
``--min-score``, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.distributed import add_ray_option
from harness.distributed.pool import INSTALL_HINT, RayUnavailable, ray_available
from harness.mutate._driver import MutantResult, MutationConfig, exit_on_sigterm, run_mutation, select_mutants
from harness.mutate._equivalent import DEFAULT_EQUIVALENT_FILE, DEFAULT_OUT_OF_CONTRACT_FILE, EquivalentError
from harness.mutate._generate import PROTOCOL_MODULES
from harness.mutate._report import write_report

__all__ = ["main"]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness mutate",
        description="Mutate reference_impl (cosmic-ray operators); kill each mutant with the sim scenario library.",
    )
    p.add_argument("--modules", type=_csv, default=list(PROTOCOL_MODULES), help="comma-separated module paths")
    p.add_argument("--sample", type=int, help="a seeded choice of N mutants (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--sim-seeds", type=_csv, default=["0", "1"], help="sim seeds per scenario (default 0,1)")
    p.add_argument(
        "--hash-seeds",
        type=_csv,
        default=["0"],
        help="PYTHONHASHSEED of the kill tests, a round each; later rounds re-run only the survivors (default 0)",
    )
    p.add_argument("--scenarios", type=_csv, help="library scenario names for the kill test (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="mutants killed (live suites run) in parallel (default 1)")
    add_ray_option(  # issue 15
        p,
        "kill the mutants (and with --live run their live suites) as Ray tasks, --jobs in flight: "
        "a local head on 127.0.0.1 with --jobs CPUs, or a cluster ADDRESS",
    )
    p.add_argument("--budget-s", type=float, help="stop starting mutants after S seconds (the rest: not_run)")
    p.add_argument("--timeout-s", type=float, help="per-mutant timeout (default 6 x the baseline's seconds + 60)")
    p.add_argument("--ids", type=_csv, help="run only these mutant ids")
    p.add_argument("--functions", type=_csv, help="only mutants inside these functions (e.g. Session.apply)")
    p.add_argument("--live", action="store_true", help="stage 2: the live default suite for every sim survivor")
    p.add_argument("--equivalent", type=Path, default=DEFAULT_EQUIVALENT_FILE, help="the equivalent-mutant list")
    p.add_argument(
        "--out-of-contract",
        type=Path,
        default=DEFAULT_OUT_OF_CONTRACT_FILE,
        help="observable changes CONTEXT.md does not constrain: still run and scored; a second score leaves them out",
    )
    p.add_argument("--out", type=Path, default=Path("reports/mutation"), help="output folder")
    p.add_argument("--min-score", type=float, help="exit 1 when the score is below this (0..1)")
    p.add_argument("--list", action="store_true", help="list the selected mutants (id, module, snippet) and exit")
    return p


def _line(r: MutantResult) -> str:
    m = r.mutant
    by = ""
    if r.killed_by:
        by = f" by {r.killed_by['case']} ({', '.join(r.killed_by.get('checkers') or []) or 'crash'})"
    elif r.reason:
        by = f" ({r.reason[:60]})"
    oc = " [out of contract]" if r.contract is not None else ""
    return f"{r.status:9} {m.id} {m.module}:{m.position.line} {m.operator.removeprefix('core/')}{by}{oc}"


def _hash_seeds(values: list[str]) -> list[int]:
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        seeds = []
    if not seeds or any(not 0 <= v <= 4294967295 for v in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--hash-seeds: {','.join(values)!r}: give distinct integers 0..4294967295, e.g. 0,1")
    return seeds


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    exit_on_sigterm()
    if args.ray is not None and not ray_available():  # before the baseline, not after it
        print(f"harness mutate: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        hash_seeds = _hash_seeds(args.hash_seeds)
        if args.ray is not None and hash_seeds != [0]:
            raise ValueError("--hash-seeds: with --ray the kill tests run in Ray workers, whose hash seed is theirs")
        cfg = MutationConfig(
            modules=args.modules,
            sample=args.sample,
            seed=args.seed,
            seeds=[int(s) for s in args.sim_seeds],
            scenarios=args.scenarios,
            jobs=max(1, args.jobs),
            budget_s=args.budget_s,
            timeout_s=args.timeout_s,
            ids=args.ids,
            functions=args.functions,
            live=args.live,
            equivalent_file=args.equivalent,
            out_of_contract_file=args.out_of_contract,
            ray=args.ray,
            hash_seeds=hash_seeds,
        )
        if args.list:
            mutants, n, skipped, rejected = select_mutants(cfg)
            for m in mutants:
                where = f"{m.module}:{m.position.line} {m.operator} {m.position.function}"
                print(f"{m.id} {where}: {m.before} -> {m.after}")
            print(f"{len(mutants)} mutants of {n} positions ({skipped} in annotations, {rejected} rejected)")
            return 0
        run = run_mutation(cfg, progress=lambda r: print(_line(r), flush=True))
    except (ValueError, EquivalentError, RayUnavailable) as exc:
        print(f"harness mutate: {exc}", file=sys.stderr)
        return 2
    s = write_report(run, args.out, cfg.root)
    score = "n/a" if s["score"] is None else f"{100 * s['score']:.1f}%"
    print(f"score {score}: " + ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items())))
    oc = s["out_of_contract"]
    if oc["survived"] or oc["killed"]:
        in_c = "n/a" if s["score_in_contract"] is None else f"{100 * s['score_in_contract']:.1f}%"
        print(f"within the contract {in_c}: {len(oc['survived'])} survivor(s) listed as out of contract left out")
        if oc["killed"]:
            print(f"killed although listed as out of contract (read the kill): {', '.join(oc['killed'])}")
    print(f"report: {args.out}/summary.md")
    if args.min_score is not None and (s["score"] is None or s["score"] < args.min_score):
        return 1
    return 0
