"""``harness coverage``: write docs/coverage.md, or check that it is current and has no gap.

Exit codes as everywhere in the harness: 0 current (or written) and no gap,
1 stale or a gap (a rule not exercised, without a checker, or with an
unproven checker), 2 bad input (a rules/proofs file, scenario or folder that
cannot be used).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.coverage._compute import (
    PROOFS_FILE,
    RULES_FILE,
    CoverageError,
    compute,
    load_mutants,
    load_plan,
    load_proofs,
    load_rules,
)
from harness.coverage._render import render

__all__ = ["main"]

DEFAULT_OUT = "docs/coverage.md"


def _run_dirs(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for a in args:
        d = Path(a)
        if (d / "history.jsonl").exists():
            out.append(d)
        elif d.is_dir():
            found = sorted(p.parent for p in d.glob("*/history.jsonl"))
            if not found:
                raise CoverageError(f"--from-runs {a}: no run folder in it (no */history.jsonl)")
            out.extend(found)
        else:
            raise CoverageError(f"--from-runs {a}: no such folder")
    return out


def main(argv: list[str] | None = None) -> int:
    from harness.runner._suite import SCENARIO_DIR
    from harness.sim.explore import default_jobs

    p = argparse.ArgumentParser(prog="harness coverage", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the document to write or check (default {DEFAULT_OUT})")
    p.add_argument("--check", action="store_true", help="write nothing: exit 1 if --out is stale or a rule has a gap")
    p.add_argument("--rules", default=str(RULES_FILE), help="the numbered rules (default: the shipped rules.toml)")
    p.add_argument("--proofs", default=str(PROOFS_FILE), help="the known-bad servers to run (default proofs.toml)")
    p.add_argument("--scenarios-dir", help="the scenario library (default: scenarios/ or the packaged library)")
    p.add_argument("--scenarios", help="comma-separated scenario names instead of the plan's (not for the doc)")
    p.add_argument("--seeds", help="comma-separated seeds instead of the plan's (not for the doc)")
    p.add_argument(
        "--from-runs",
        action="append",
        default=[],
        metavar="DIR",
        help="also count facets in these run folders (or folders of run folders), e.g. a live run",
    )
    p.add_argument(
        "--mutants",
        metavar="FILE",
        help="add the mutants each checker killed (harness mutate's reports/mutation/mutants.jsonl)",
    )
    p.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes (default: up to 2)")
    args = p.parse_args(argv)
    root = (
        Path(args.scenarios_dir)
        if args.scenarios_dir
        else (Path("scenarios") if Path("scenarios").is_dir() else SCENARIO_DIR)
    )
    try:
        if args.jobs < 1:
            raise CoverageError("--jobs must be >= 1")
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
        scenarios = [s for s in args.scenarios.split(",") if s] if args.scenarios else None
        rules = load_rules(Path(args.rules))
        plan = load_plan(Path(args.rules))
        proofs = load_proofs(Path(args.proofs))
        dirs = _run_dirs(args.from_runs)
        mutants = load_mutants(Path(args.mutants)) if args.mutants else {}
        if not root.is_dir():
            raise CoverageError(f"--scenarios-dir {root}: no such folder")
        t0 = time.perf_counter()  # seam-ok: wall-clock cost printed for humans, never in the document
        cov = compute(
            root=root,
            rules=rules,
            plan=plan,
            proofs=proofs,
            scenarios=scenarios,
            seeds=seeds,
            jobs=args.jobs,
            from_runs=dirs,
        )
    except (CoverageError, ValueError) as exc:
        print(f"harness coverage: {exc}", file=sys.stderr)
        return 2
    if args.mutants:
        cov.mutants, cov.mutants_source = mutants, args.mutants
    text = render(cov)
    dt = time.perf_counter() - t0  # seam-ok: see above
    gaps = cov.problems()
    known = [r.id for r in rules if r.gap and cov.gaps(r)]
    out = Path(args.out)
    print(
        f"harness coverage: {len(rules)} rules, {len(cov.runs)} exercise runs, {len(cov.proofs)} proofs, "
        f"{len(known)} known gap(s) ({', '.join(known) or 'none'}), {len(gaps)} problem(s) ({dt:.1f} s)",
        file=sys.stderr,
    )
    for g in gaps:
        print(f"  PROBLEM {g}", file=sys.stderr)
    for x in cov.correct_server_invalid():
        print(f"  correct server flagged: {x}", file=sys.stderr)
    if args.check:
        current = out.read_text() if out.exists() else None
        if current != text:
            print(
                f"  STALE: {out} differs from the generator's output; run `harness coverage --out {out}`",
                file=sys.stderr,
            )
            return 1
        return 1 if gaps else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"  wrote {out}", file=sys.stderr)
    return 1 if gaps else 0
