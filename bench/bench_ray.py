"""Benchmark (issue 15): live turns/s with 1 and 2 Ray agent actors, and explore seeds/s with 1 and 2 workers.

    .venv/bin/python bench/bench_ray.py [--sessions 200] [--turns 4] [--seeds 24] [--skip-live] [--skip-explore]

Live: ``rapid_lifecycle`` (2 server processes, the fake, no faults) with ``--sessions`` sessions of
``--turns`` turns each, no think time, all intended at t = 0, concurrency 64, through the real runner
(``run_scenario``, checkers on, no report): once in this process, then with ``--ray --agents-per-node``
1 and 2 on one private local head (its start is not counted). Turns/s = chat completions with status
200 / (last chat completion - first chat invoke), from the run's history; the verdict is printed too.

Explore: ``abort_retries_exhausted``, ``--seeds`` seeds, ``--jobs`` 1 and 2 with local processes, then on a
local Ray head with 1 and 2 CPUs (head start counted separately). Seeds/s = seeds / wall seconds.

The box is shared: each figure is printed with the 1-minute load average at its start. A benchmark, not a
test: it prints figures (docs/distributed.md, "Measured scaling").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.scenario import load_scenario  # noqa: E402


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def turns_per_s(run_dir: Path) -> tuple[int, float]:
    events = [json.loads(ln) for ln in (run_dir / "history.jsonl").read_text().splitlines() if ln.strip()]
    chats = [e for e in events if e["f"] == "chat"]
    ok = [e for e in chats if e["type"] == "ok" and e.get("status") == 200]
    start = min(float(e["time"]) for e in chats if e["type"] == "invoke")
    end = max(float(e["time"]) for e in chats if e["type"] != "invoke")
    return len(ok), len(ok) / max(1e-9, end - start)


def live(sessions: int, turns: int) -> None:
    from harness.distributed.live import RayLive
    from harness.runner import run_scenario

    sc = load_scenario(str(ROOT / "scenarios" / "rapid_lifecycle.toml"))
    w = dataclasses.replace(
        sc.workload, sessions=sessions, turns=(turns, turns), concurrency=64, arrival_rate=0.0, duration_s=120.0
    )
    sc = dataclasses.replace(sc, workload=w)
    out = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    print(f"live: rapid_lifecycle, {sessions} sessions x {turns} turns, concurrency 64, 2 server processes")
    print(f"{'agents':>22} {'load':>5} {'turns':>6} {'turns/s':>8} {'wall s':>7}  verdict")

    def one(label: str, ray: object = None) -> None:
        la = load()
        t0 = time.perf_counter()
        r = run_scenario(sc, out, run_name="".join(c if c.isalnum() else "_" for c in label), report=False, ray=ray)
        wall = time.perf_counter() - t0
        n, rate = turns_per_s(r.run_dir)
        print(f"{label:>22} {la:>5} {n:>6} {rate:>8.0f} {wall:>7.1f}  {r.status}", flush=True)

    one("1 process (no Ray)")
    for k in (1, 2):
        t0 = time.perf_counter()
        with RayLive(None, k) as rl:
            head = time.perf_counter() - t0
            print(f"{'':>22} (local head with {k} CPU(s) started in {head:.1f} s)")
            one(f"{k} agent actor(s)", rl)


def explore_bench(seeds: int) -> None:
    from harness.distributed.pool import RayPool
    from harness.sim.explore import explore

    path = str(ROOT / "scenarios" / "abort_retries_exhausted.toml")
    print(f"\nexplore: abort_retries_exhausted, {seeds} seeds, random strategy")
    print(f"{'workers':>22} {'load':>5} {'wall s':>7} {'seeds/s':>8}")

    def one(label: str, jobs: int, ray: str | None) -> None:
        la = load()
        t0 = time.perf_counter()
        rs = explore(path, range(seeds), "random", jobs=jobs, stop_on_first=False, ray=ray)
        wall = time.perf_counter() - t0
        assert len(rs) == seeds
        print(f"{label:>22} {la:>5} {wall:>7.1f} {seeds / wall:>8.2f}", flush=True)

    for j in (1, 2):
        one(f"{j} local process(es)", j, None)
    for j in (1, 2):
        t0 = time.perf_counter()
        with RayPool(None, j):
            print(f"{'':>22} (local head with {j} CPU(s) started in {time.perf_counter() - t0:.1f} s)")
            one(f"{j} Ray worker(s)", j, "local")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--skip-explore", action="store_true")
    a = p.parse_args()
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()}")
    if not a.skip_live:
        live(a.sessions, a.turns)
    if not a.skip_explore:
        explore_bench(a.seeds)


if __name__ == "__main__":
    main()
