"""Benchmark: what starting a live run's processes costs (the fake SGLang + N reference server processes).

Why: every live scenario starts a fake and its server processes, and the
starvation test (tests/integration/test_starvation.py) starts them niced under
CPU hogs, where each CPU-second of imports becomes several seconds of wall.
The processes are started exactly as a live run starts them
(``ProcessGroup.plan``: ``python -m harness.cli fake-sglang`` and ``python -m
reference_impl``); the figure is the wall time from spawn to every ``/health``
answering 200, and the CPU (user + system) the processes spent to get there
(psutil, the process and its children). Prints the median and range over
``--repeat`` starts and the load average before and after.

    .venv/bin/python bench/bench_startup.py [--repeat 5] [--processes 1] [--nice 0] [--imports]

``--imports`` first makes one start with ``PYTHONPROFILEIMPORTTIME=1`` and prints each process's
import self time (summed by top-level package), and the same for the starve runner's child
(``python -m harness.starve``). ``--root DIR`` starts the processes of another checkout (A/B figures).
Not part of the test suite; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if "--root" in sys.argv:  # another checkout's processes (before/after): its code first on sys.path, its cwd
    ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
    os.chdir(ROOT)
sys.path.insert(0, str(ROOT))

from harness.runner._procs import ProcessGroup  # noqa: E402

STARVE_CHILD = "import harness.starve, harness.runner._live, harness.runner._suite, harness.scenario"


def _cpu(pid: int) -> float:
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for q in procs:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def one_start(processes: int, nice: int, imports: bool = False) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        d = Path(tmp)
        plan = d / "plan.json"
        plan.write_text(json.dumps({}))
        group = ProcessGroup.plan(
            d / "logs",
            processes=processes,
            seed=0,
            plan_file=plan,
            variants=[],
            tokenizer=None,
            server_args=[],
            startup_timeout_s=300.0,
        )
        if nice:
            for mp in [group.backend, *group.servers]:
                assert mp is not None
                mp.argv = ["nice", "-n", str(nice), *mp.argv]
        if imports:  # the processes print their own import times (stderr goes to their .out files)
            for mp in [group.backend, *group.servers]:
                assert mp is not None
                mp.env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
        t0 = time.perf_counter()
        try:
            asyncio.run(group.start())
            wall = time.perf_counter() - t0
            pids = [mp.proc.pid for mp in [group.backend, *group.servers] if mp is not None and mp.proc is not None]
            cpu = sum(_cpu(pid) for pid in pids)
        finally:
            group.stop()
        if imports:
            for mp in [group.backend, *group.servers]:
                assert mp is not None
                _print_imports(f"{mp.name} ({' '.join(mp.argv[1:3])})", mp.output_tail(10**8))
    return wall, cpu


def _print_imports(label: str, text: str) -> None:
    total, top = import_profile(text)
    print(f"imports {label}: {total:.2f} s self time; " + ", ".join(f"{k} {v:.2f}" for k, v in top))


def import_profile(text: str) -> tuple[float, list[tuple[str, float]]]:
    """``-X importtime`` output: total self time and the six costliest top-level packages, in seconds."""
    by_pkg: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cum, name = line.split(":", 1)[1].split("|")
        by_pkg[name.strip().split(".")[0]] += int(self_us)
    return sum(by_pkg.values()) / 1e6, [(k, v / 1e6) for k, v in by_pkg.most_common(6)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--processes", type=int, default=1, help="reference server processes (default 1)")
    ap.add_argument("--nice", type=int, default=0, help="start the processes niced by this much")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose processes to start (default this one)")
    ap.add_argument("--imports", action="store_true", help="also print import-time totals of the entry modules")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cores: {os.cpu_count()}")
    if args.imports:
        r = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", STARVE_CHILD], cwd=ROOT, capture_output=True, text=True
        )
        _print_imports("starve child (python -m harness.starve)", r.stderr)
        one_start(args.processes, args.nice, imports=True)
    walls, cpus = [], []
    for i in range(args.repeat):
        wall, cpu = one_start(args.processes, args.nice)
        walls.append(wall)
        cpus.append(cpu)
        print(f"start {i + 1}: spawn -> all /health OK {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    print(
        f"fake + {args.processes} server process(es), nice {args.nice}: wall median {statistics.median(walls):.2f} s "
        f"(min {min(walls):.2f}, max {max(walls):.2f}); CPU median {statistics.median(cpus):.2f} s "
        f"(min {min(cpus):.2f}, max {max(cpus):.2f})"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
