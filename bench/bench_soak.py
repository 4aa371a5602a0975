"""Benchmark: a fault soak over loopback, and the harness's own memory while it checks and reports.

Issue 13, "at scale": 10^4 sessions against 2 reference-server processes, with
5% backend aborts, 1% transport faults (connection reset), 2% DELETE in the
middle of the proxy phase. ``harness run`` is started as a child process (the
fake, the servers and the checkers exactly as a user runs them); this process
only watches it with psutil, every ``--sample-s`` seconds:

- the harness's RSS, split by phase: while the servers are up (the run), and
  after they stopped (checking, reporting);
- each server process's RSS at its first sample (start), at the middle of
  the run's time and at its last sample (end);

and afterwards reads the run folder: lost turns (``lost_turns`` violations),
server 500s (chat completions answered 500), duration, history size.

``--check-only RUN_DIR`` measures just the checking and reporting step
(``harness check`` then ``harness report``, each a child process, RSS peak
of each) on a recorded run folder, e.g. the soak's, so a change to the
checkers' or the report's memory can be measured before/after on one input.

Run:
``.venv/bin/python bench/bench_soak.py [--sessions 10000] [--duration-s 1800] [--out DIR]``
(quick: ``--sessions 500``); ``.venv/bin/python bench/bench_soak.py --check-only DIR/soak``.
Not part of the test suite; it prints figures (bench/results_soak.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MB = 1024 * 1024

SCENARIO = """
name = "soak"
description = "bench_soak: a long fault soak (issue 13)"
seed = {seed}

[target]
processes = 2

[backend]
latency = {{ model = "lognormal", median_ms = 20, p99_ms = 120, cap_ms = 400 }}

[[backend.rules]]
fault = "abort"
probability = 0.05
[[backend.rules]]
fault = "reset"
probability = 0.01

[workload]
sessions = {sessions}
concurrency = {concurrency}
turns = [2, 5]
arrival_rate = {rate}
think_time_s = [0.0, 0.02]
duration_s = {duration}

[agent]
max_retries = 3
timeout_s = 30

[chaos]
delete_during_proxy = 0.02
"""


def rss(p: psutil.Process) -> int:
    try:
        return int(p.memory_info().rss)
    except psutil.Error:
        return 0


def servers_of(harness: psutil.Process) -> list[psutil.Process]:
    """The session-server processes under the harness (not the fake)."""
    out = []
    try:
        kids = harness.children(recursive=True)
    except psutil.Error:
        return []
    for k in kids:
        try:
            cmd = " ".join(k.cmdline())
        except psutil.Error:
            continue
        if "reference_impl" in cmd or " serve" in cmd:
            out.append(k)
    return out


def watch(argv: list[str], sample_s: float) -> dict[str, Any]:
    """Run ``argv``; sample its RSS (and its servers') until it exits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    me = psutil.Process(proc.pid)
    peak_run = peak_after = 0
    series: dict[int, list[tuple[float, int]]] = {}
    servers_seen = False
    servers_gone_at: float | None = None
    while proc.poll() is None:
        now = time.perf_counter() - t0
        r = rss(me)
        srv = servers_of(me)
        if srv:
            servers_seen = True
            peak_run = max(peak_run, r)
            for s in srv:
                series.setdefault(s.pid, []).append((now, rss(s)))
        elif servers_seen:
            if servers_gone_at is None:
                servers_gone_at = now
            peak_after = max(peak_after, r)
        else:
            peak_run = max(peak_run, r)  # startup
        time.sleep(sample_s)
    out = proc.stdout.read() if proc.stdout else ""
    dur = time.perf_counter() - t0
    server_rss = {}
    for pid, pts in series.items():
        if not pts:
            continue
        mid_t = (pts[0][0] + pts[-1][0]) / 2
        mid = min(pts, key=lambda p: abs(p[0] - mid_t))
        server_rss[pid] = (pts[0][1] / MB, mid[1] / MB, pts[-1][1] / MB)
    return {
        "rc": proc.returncode,
        "output": out,
        "duration_s": dur,
        "run_s": servers_gone_at if servers_gone_at is not None else dur,
        "harness_peak_run_mb": peak_run / MB,
        "harness_peak_check_report_mb": peak_after / MB,
        "server_rss_mb": server_rss,
    }


def peak_of(argv: list[str], sample_s: float) -> tuple[int, float, float, str]:
    """(exit code, RSS peak MB, seconds, output) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    me = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss(me))
        time.sleep(sample_s)
    out = proc.stdout.read() if proc.stdout else ""
    return proc.returncode, peak / MB, time.perf_counter() - t0, out


def folder_facts(run_dir: Path) -> dict[str, Any]:
    """Lost turns, server 500s, history size, from a run folder (streamed: the bench must not be the peak)."""
    status: dict[int, int] = {}
    events = chats = 0
    with (run_dir / "history.jsonl").open() as fh:
        for line in fh:
            events += 1
            if '"f": "chat"' not in line or '"type": "invoke"' in line:
                continue
            ev = json.loads(line)
            chats += 1
            st = ev.get("status")
            if isinstance(st, int):
                status[st] = status.get(st, 0) + 1
    lost: int | str = "?"
    verdicts: dict[str, str] = {}
    vpath = run_dir / "verdicts.json"
    if vpath.exists():
        for v in json.loads(vpath.read_text()):
            verdicts[v["checker"]] = v["status"]
            if v["checker"] == "lost_turns":
                lost = sum(1 for x in v["violations"] if x.get("kind") in ("lost_turn", "session_vanished"))
    return {
        "history_mb": (run_dir / "history.jsonl").stat().st_size / MB,
        "events": events,
        "chats": chats,
        "status": dict(sorted(status.items())),
        "server_500": status.get(500, 0),
        "lost_turns": lost,
        "verdicts": verdicts,
    }


def check_only(run_dir: Path, sample_s: float) -> None:
    py = sys.executable
    rc, peak, secs, out = peak_of([py, "-m", "harness.cli", "check", str(run_dir)], sample_s)
    print(f"harness check {run_dir}: exit {rc}, RSS peak {peak:.0f} MB, {secs:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:  # report into a copy: the recorded folder stays as it was
        copy = Path(tmp) / run_dir.name
        subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
        rc, peak, secs, out = peak_of([py, "-m", "harness.cli", "report", str(copy)], sample_s)
        print(f"harness report (copy of) {run_dir}: exit {rc}, RSS peak {peak:.0f} MB, {secs:.1f} s")
        if rc != 0:
            print(out[-2000:])
    hist = run_dir / "history.jsonl"
    print(f"history.jsonl {hist.stat().st_size / MB:.0f} MB")


SID = re.compile(r"\b([0-9a-f]{32})\b")
RQ = re.compile(r'"([0-9a-f]{8}(?:[0-9a-f]{8})?)"')  # server req ids (8 hex), caller request ids (16)


def replicate(src: Path, dst: Path, k: int) -> None:
    """A synthetic run folder: ``k`` copies of ``src`` with their session and request ids made distinct.

    Memory figures only (copies overlap in time; verdicts on it are not meant to be read).
    """
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("scenario.json", "harness_self.json", ".harness-run"):
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())

    def ren(text: str, i: int) -> str:
        text = SID.sub(lambda m: m.group(1)[:-2] + f"{i:02x}", text)
        return RQ.sub(lambda m: '"' + m.group(1)[:-2] + f"{i:02x}" + '"', text)

    lines = (src / "history.jsonl").read_text().splitlines()
    with (dst / "history.jsonl").open("w") as fh:
        index = 0
        for i in range(k):
            for line in lines:
                ev = json.loads(ren(line, i))
                ev["op"] = ev["op"] + i * 10_000_000
                ev["index"] = index
                index += 1
                fh.write(json.dumps(ev, sort_keys=True) + "\n")
    for name in ("final_states.json", "owners.json", "backend_executions.json"):
        merged: dict[str, Any] = {}
        text = (src / name).read_text()
        for i in range(k):
            merged.update(json.loads(ren(text, i)))
        (dst / name).write_text(json.dumps(merged, sort_keys=True))
    logs = (src / "server_logs.jsonl").read_text()
    (dst / "server_logs.jsonl").write_text("".join(ren(logs, i) for i in range(k)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=60.0, help="session arrivals per second")
    ap.add_argument("--duration-s", type=float, default=1800.0, help="the run's bound (the workload stops there)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--sample-s", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=None, help="keep the run folder here (default: a temp dir)")
    ap.add_argument("--check-only", type=Path, default=None, metavar="RUN_DIR")
    ap.add_argument(
        "--replicate",
        type=int,
        default=0,
        metavar="K",
        help="with --check-only: measure on K copies of RUN_DIR (distinct ids), a larger synthetic history",
    )
    args = ap.parse_args()
    if args.check_only is not None and args.replicate > 1:
        with tempfile.TemporaryDirectory() as tmp:
            big = Path(tmp) / f"{args.check_only.name}_x{args.replicate}"
            replicate(args.check_only, big, args.replicate)
            check_only(big, args.sample_s)
        return 0
    if args.check_only is not None:
        check_only(args.check_only, args.sample_s)
        return 0
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out_dir = Path(tmp.name) if tmp is not None else args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    toml = out_dir / "soak.toml"
    toml.write_text(
        SCENARIO.format(
            seed=args.seed,
            sessions=args.sessions,
            concurrency=args.concurrency,
            rate=args.rate,
            duration=args.duration_s,
        )
    )
    argv = [sys.executable, "-m", "harness.cli", "run", str(toml), "--out", str(out_dir)]
    print(f"soak: {args.sessions} sessions, concurrency {args.concurrency}, {args.rate}/s, bound {args.duration_s}s")
    res = watch(argv, args.sample_s)
    run_dir = out_dir / "soak"
    if not (run_dir / "history.jsonl").exists():
        print(res["output"][-3000:])
        return 1
    facts = folder_facts(run_dir)
    print(f"harness run exit {res['rc']}; duration {res['duration_s']:.1f} s (workload + collect {res['run_s']:.1f} s)")
    print(f"history: {facts['events']} events, {facts['chats']} chat completions, {facts['history_mb']:.0f} MB")
    print(f"chat statuses: {facts['status']}")
    print(f"lost turns: {facts['lost_turns']}; server 500s: {facts['server_500']}")
    for pid, (a, b, c) in sorted(res["server_rss_mb"].items()):
        print(f"server pid {pid}: RSS start {a:.0f} MB, middle {b:.0f} MB, end {c:.0f} MB")
    print(
        f"harness RSS peak: during the run {res['harness_peak_run_mb']:.0f} MB, "
        f"checking + reporting {res['harness_peak_check_report_mb']:.0f} MB"
    )
    print("verdicts: " + ", ".join(f"{k}={v}" for k, v in sorted(facts["verdicts"].items())))
    if res["rc"] not in (0, 1):
        print(res["output"][-3000:])
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
