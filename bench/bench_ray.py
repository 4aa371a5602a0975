"""Benchmark (issue 15): live turns/s with 1 and 2 Ray agent actors, explore seeds/s with 1, 2 and 4 workers.

    .venv/bin/python bench/bench_ray.py                      # everything, then one summary table
    .venv/bin/python bench/bench_ray.py --sessions 40 --turns 2 --seeds 4 --workers 1,2   # a quick proof

Live: ``rapid_lifecycle`` (2 server processes, the fake, no faults) with ``--sessions`` sessions of
``--turns`` turns each, no think time, all intended at t = 0, concurrency 64, through the real runner
(``run_scenario``, checkers on, no report): once in this process, then with ``--ray --agents-per-node``
for each of ``--actors`` (default 1,2) on one private local head (its start is not counted). Turns/s =
chat completions with status 200 / (last chat completion - first chat invoke), from the run's history;
the verdict is printed too.

Explore: ``abort_retries_exhausted``, ``--seeds`` seeds, for each of ``--workers`` (default 1,2,4): local
processes (``--jobs W``), then a local Ray head with W CPUs (head start and the workers' first task, W
seeds that start them and import the harness, printed, not counted). Seeds/s =
seeds / wall seconds; the scaling column is seeds/s over the 1-worker figure of the same kind (the issue's
goal: >= 0.8 x linear from 1 to 2).

The box may be shared: every figure is printed with the 1-minute load average at its start, and the
summary says how many CPUs the box has (W workers beyond them cannot scale). A benchmark, not a test:
it prints figures (docs/distributed.md, "Measured scaling").
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


ROWS: list[tuple[str, str, str, str, str]] = []  # (what, workers, load, figure, note) for the summary


def live(sessions: int, turns: int, actors: list[int]) -> None:
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

    def one(label: str, key: str, ray: object = None) -> None:
        la = load()
        t0 = time.perf_counter()
        r = run_scenario(sc, out, run_name="".join(c if c.isalnum() else "_" for c in label), report=False, ray=ray)
        wall = time.perf_counter() - t0
        n, rate = turns_per_s(r.run_dir)
        print(f"{label:>22} {la:>5} {n:>6} {rate:>8.0f} {wall:>7.1f}  {r.status}", flush=True)
        ROWS.append(("live turns/s", key, la, f"{rate:.0f}", r.status))

    one("1 process (no Ray)", "local")
    for k in actors:
        t0 = time.perf_counter()
        with RayLive(None, k) as rl:
            head = time.perf_counter() - t0
            print(f"{'':>22} (local head with {k} CPU(s) started in {head:.1f} s)")
            one(f"{k} agent actor(s)", f"{k} actor(s)", rl)


def explore_bench(seeds: int, workers: list[int]) -> None:
    from harness.distributed.pool import RayPool
    from harness.sim.explore import explore

    path = str(ROOT / "scenarios" / "abort_retries_exhausted.toml")
    print(f"\nexplore: abort_retries_exhausted, {seeds} seeds, random strategy")
    print(f"{'workers':>22} {'load':>5} {'wall s':>7} {'seeds/s':>8} {'scaling':>8}")
    base: dict[str, float] = {}

    def one(kind: str, jobs: int, ray: str | None) -> None:
        la = load()
        t0 = time.perf_counter()
        rs = explore(path, range(seeds), "random", jobs=jobs, stop_on_first=False, ray=ray)
        wall = time.perf_counter() - t0
        assert len(rs) == seeds
        rate = seeds / wall
        if jobs == 1:
            base[kind] = rate
        scaling = rate / base[kind] if kind in base else float("nan")  # nan: no 1-worker figure to compare
        label = f"{jobs} {kind}"
        print(f"{label:>22} {la:>5} {wall:>7.1f} {rate:>8.2f} {scaling:>7.2f}x", flush=True)
        ROWS.append((f"explore seeds/s ({kind})", str(jobs), la, f"{rate:.2f}", f"{scaling:.2f}x of 1 worker"))

    for j in workers:
        one("local process(es)", j, None)
    for j in workers:
        t0 = time.perf_counter()
        with RayPool(None, j):
            head = time.perf_counter() - t0
            t1 = time.perf_counter()  # untimed: the workers start and import the harness on their first task
            explore(path, range(seeds, seeds + j), "random", jobs=j, stop_on_first=False, ray="local")
            warm = time.perf_counter() - t1
            print(f"{'':>22} (local head with {j} CPU(s) started in {head:.1f} s, workers warmed in {warm:.1f} s)")
            one("Ray worker(s)", j, "local")


def summary() -> None:
    print(f"\nsummary ({os.cpu_count()} CPUs; load average now {load()})")
    print("| measure | workers / agents | load | figure | note |")
    print("|---|---:|---:|---:|---|")
    for what, who, la, fig, note in ROWS:
        print(f"| {what} | {who} | {la} | {fig} | {note} |")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--actors", default="1,2", help="agent actors per live run on Ray (comma-separated)")
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--workers", default="1,2,4", help="explore workers (comma-separated)")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--skip-explore", action="store_true")
    a = p.parse_args()
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()}")
    if not a.skip_live:
        live(a.sessions, a.turns, [int(x) for x in a.actors.split(",")])
    if not a.skip_explore:
        explore_bench(a.seeds, [int(x) for x in a.workers.split(",")])
    summary()


if __name__ == "__main__":
    main()
