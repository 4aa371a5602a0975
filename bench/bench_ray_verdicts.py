"""Benchmark (issue 15): the default suite live, in one process and on 2 Ray agent actors, verdict by verdict.

Why: the done-when of issue 15 asks that a live run sharded over two agent actors give the same verdicts as
one process on the same seed, for the whole default suite. ``tests/unit/test_distributed.py`` proves it in
``make test`` for two scenarios (a correct one and a known-bad variant); this runs every default-suite
scenario (every variant of a ``compare`` list) both ways with ``--seed`` and prints, per run, each side's
status and every checker whose verdict differs. A definite contradiction (valid on one side, invalid on the
other) is a failure; a checker left unknown on one side only is printed (a live run's timing-based checks may
lose a decision on a loaded box, locally or on Ray) but not a failure.

    .venv/bin/python bench/bench_ray_verdicts.py [--seed 5] [--out DIR] [NAME ...]

Every scenario at its own size. One
private local Ray head (2 CPUs, 127.0.0.1) serves every Ray run; its start is not counted. Exit code: 0 no
contradiction, 1 at least one. Not part of the test suite; it prints figures (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def verdicts(run_dir: Path) -> dict[str, str]:
    data = json.loads((run_dir / "verdicts.json").read_text())
    rows = data if isinstance(data, list) else data.get("verdicts", [])
    return {str(v["checker"]): str(v["status"]) for v in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="library scenarios (default: the default suite)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temp dir)")
    args = ap.parse_args()

    from harness.distributed.pool import RayPool
    from harness.runner._suite import SCENARIO_DIR, find_scenarios
    from harness.runner.cli import main as run_main

    names = args.names or [p.stem for p in find_scenarios([], suite="default", root=SCENARIO_DIR)]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_ray_verdicts-"))
    t0 = time.perf_counter()
    head = RayPool(None, 2)  # every --ray run below finds this head and leaves it running
    print(f"local Ray head: {time.perf_counter() - t0:.1f} s to start; runs in {out}", flush=True)
    contradictions = 0
    try:
        for name in names:
            argv = [name, "--seed", str(args.seed), "--quiet", "--no-report"]
            walls = []
            for side, extra in (("local", []), ("ray", ["--ray", "--agents-per-node", "2"])):
                load, t = os.getloadavg()[0], time.perf_counter()
                run_main([*argv, "--out", str(out / side), *extra])
                walls.append(f"{side} {time.perf_counter() - t:.1f} s at load {load:.1f}")
            for run_dir in sorted((out / "local").iterdir()):
                if not run_dir.name.startswith(name) or not (run_dir / "verdicts.json").is_file():
                    continue
                if run_dir.name != name and not run_dir.name.startswith(name + "@"):
                    continue
                ray_dir = out / "ray" / run_dir.name
                vl = verdicts(run_dir)
                vr = verdicts(ray_dir) if (ray_dir / "verdicts.json").is_file() else {}
                differ = {c: (vl.get(c), vr.get(c)) for c in sorted(set(vl) | set(vr)) if vl.get(c) != vr.get(c)}
                bad = {c: d for c, d in differ.items() if "unknown" not in d}
                contradictions += len(bad)
                status = "CONTRADICTS" if bad else ("same" if not differ else "unknown on one side")
                print(f"{run_dir.name}: {status}; {'; '.join(walls)}", flush=True)
                for c, (a, b) in differ.items():
                    print(f"    {c}: local {a}, ray {b}", flush=True)
    finally:
        head.shutdown()
    print(f"{contradictions} contradicting verdict(s) over {len(names)} scenario(s), seed {args.seed}")
    return 1 if contradictions else 0


if __name__ == "__main__":
    raise SystemExit(main())
