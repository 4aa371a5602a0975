"""Benchmark: does any process of a live run grow with the run's length? (issue 13, "nothing grows without bound")

``harness run`` of bench_soak's fault soak (5% aborts, 1% resets, 2% DELETE mid-proxy, 2 server processes) at one
arrival rate for two or three run lengths; this process samples with psutil, every ``--sample-s`` seconds, the
RSS of every process of the run: the harness runner itself, the fake SGLang, each reference-server process. The
run phase is the time the servers are up (the workload, then the collection of every session's final state);
once they are gone the harness reads their logs and saves the run folder (sampled too), then checks and reports,
which bench_soak / bench_check_rss measure, so here it is stopped then (SIGTERM, SIGKILL 20 s later) unless
``--check`` is given.

Per run and process it prints RSS at start (first sample), middle (the workload's middle), end of the workload,
end of the run phase (after the collection), peak, and the slope over the second half of the workload (least
squares of RSS on time, in MB per 1,000 sessions at the rate the run achieved: sessions created / duration);
then, across the run lengths, the slope of each role's RSS at the end of the workload against the sessions
created, and of the harness's peak after the servers stopped (reading their logs, saving the folder).

``--tracemalloc DIR``: the harness runner runs under ``tracemalloc`` (a wrapper around ``harness.cli``; nothing
in harness/ changes) and writes the 30 source lines whose allocations grew most since the workload's start to
``DIR/tm-<t>.txt`` every ``--tm-every`` seconds.

Run: ``nice -n 5 .venv/bin/python bench/bench_rss_growth.py --durations 120,300 --rate 60 --out /tmp/X``.
Not part of the test suite; figures in bench/results_soak.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_soak import ENV, MB, ROOT, SCENARIO, folder_facts, rss

TM_WRAPPER = """
import sys, threading, time, tracemalloc
tracemalloc.start(8)
out, every = sys.argv.pop(1), float(sys.argv.pop(1))
def dump():
    base = None
    t0 = time.monotonic()
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if base is None:
            base = snap
            continue
        t = time.monotonic() - t0
        with open(f"{out}/tm-{t:06.0f}.txt", "w") as fh:
            cur, peak = tracemalloc.get_traced_memory()
            fh.write(f"traced {cur / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB\\n")
            for st in snap.compare_to(base, "lineno")[:30]:
                fh.write(str(st) + "\\n")
            fh.write("\\n-- by traceback, top 8 --\\n")
            for st in snap.compare_to(base, "traceback")[:8]:
                fh.write(str(st) + "\\n" + "\\n".join(st.traceback.format()[-8:]) + "\\n\\n")
threading.Thread(target=dump, daemon=True).start()
from harness.cli import main
sys.argv[0] = "harness"
raise SystemExit(main())
"""


def role_of(p: psutil.Process) -> str | None:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return None
    text = " ".join(cmd)
    if "fake-sglang" in text or "fake_sglang" in text:
        return "fake"
    if "reference_impl" in text:
        log = cmd[cmd.index("--log-file") + 1] if "--log-file" in cmd else str(p.pid)
        return Path(log).stem  # server-0, server-1...
    return None


def sample_run(argv: list[str], sample_s: float, check: bool, run_dir: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    me = psutil.Process(proc.pid)
    series: dict[str, list[tuple[float, float]]] = {}
    roles: dict[int, str] = {}
    seen_servers = False
    run_end: float | None = None
    saved: float | None = None
    marker = run_dir / "harness_self.json"  # RunData.save's last file: the run folder is whole
    while proc.poll() is None:
        now = time.monotonic() - t0
        try:
            kids = me.children(recursive=True)
        except psutil.Error:
            kids = []
        live = []
        for k in kids:
            if k.pid not in roles:
                r = role_of(k)
                if r is None:
                    continue
                roles[k.pid] = r
            live.append(k)
        servers = [k for k in live if roles[k.pid].startswith("server-")]
        if servers:
            seen_servers = True
            series.setdefault("harness", []).append((now, rss(me) / MB))
            for k in live:
                series.setdefault(roles[k.pid], []).append((now, rss(k) / MB))
        elif seen_servers and run_end is None:
            run_end = now
        elif run_end is not None and saved is None and marker.exists():
            saved = now
            if not check:
                proc.send_signal(signal.SIGTERM)  # checking: not measured here
        elif saved is not None and not check and now - saved > 20:
            proc.kill()  # a SIGTERM can be swallowed (raised inside a weakref callback); the run's files are written
        if run_end is not None and saved is None:  # the servers stopped: their logs read, the folder saved
            series.setdefault("harness, after the servers stopped", []).append((now, rss(me) / MB))
        time.sleep(sample_s)
    out = proc.stdout.read() if proc.stdout else ""
    return {"series": series, "rc": proc.returncode, "output": out, "run_end": run_end, "t": time.monotonic() - t0}


def slope(pts: list[tuple[float, float]]) -> float:
    """Least-squares MB per second."""
    if len(pts) < 3:
        return float("nan")
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mr = sum(r for _, r in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (r - mr) for t, r in pts) / var if var else float("nan")


def at(pts: list[tuple[float, float]], t: float) -> float:
    return min(pts, key=lambda p: abs(p[0] - t))[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", default="120,300", help="run lengths in seconds, comma-separated")
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--sample-s", type=float, default=2.0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--check", action="store_true", help="let harness run check and report (default: stopped)")
    ap.add_argument("--tracemalloc", type=Path, default=None, metavar="DIR")
    ap.add_argument("--tm-every", type=float, default=30.0)
    args = ap.parse_args()
    ends: dict[str, list[tuple[float, float]]] = {}
    post_peaks: list[tuple[float, float]] = []  # (sessions created, harness peak after the servers stopped)
    for dur in [float(x) for x in args.durations.split(",")]:
        sessions = int(dur * args.rate)
        out_dir = args.out / f"d{int(dur)}"
        out_dir.mkdir(parents=True, exist_ok=True)
        toml = out_dir / "soak.toml"
        toml.write_text(
            SCENARIO.format(
                seed=args.seed, sessions=sessions, concurrency=args.concurrency, rate=args.rate, duration=dur
            )
        )
        run = ["run", str(toml), "--out", str(out_dir)]
        if args.tracemalloc is not None:
            tm = args.tracemalloc / f"d{int(dur)}"
            tm.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-c", TM_WRAPPER, str(tm), str(args.tm_every), *run]
        else:
            argv = [sys.executable, "-m", "harness.cli", *run]
        print(f"== {dur:.0f} s at {args.rate}/s ({sessions} sessions planned), concurrency {args.concurrency}")
        res = sample_run(argv, args.sample_s, args.check, out_dir / "soak")
        facts: dict[str, Any] = {}
        hist = out_dir / "soak" / "history.jsonl"
        if hist.exists():
            facts = folder_facts(out_dir / "soak")
            created = 0
            with hist.open() as fh:
                for line in fh:
                    if '"f": "create"' in line and '"type": "ok"' in line:
                        created += 1
            facts["created"] = created
        print(
            f"harness exit {res['rc']}; run phase {res['run_end'] or float('nan'):.0f} s; "
            f"sessions created {facts.get('created', '?')}; history {facts.get('events', '?')} events, "
            f"{facts.get('history_mb', 0):.0f} MB; chat statuses {facts.get('status', {})}"
        )
        if args.check:
            print("verdicts: " + ", ".join(f"{k}={v}" for k, v in sorted(facts.get("verdicts", {}).items())))
        print(
            "| process | start | middle | end of workload | end of run (collected) | peak | slope MB/1,000 sessions |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        after = res["series"].pop("harness, after the servers stopped", [])
        if after:  # reading the servers' logs and saving the folder (issue 13: it was ~33 MB per 1,000 sessions)
            peak = max(r for _, r in after)
            post_peaks.append((facts.get("created", sessions), peak))
            print(f"harness RSS after the servers stopped, until the run folder was saved: peak {peak:.0f} MB")
        for role, pts in sorted(res["series"].items()):
            t_start = pts[0][0]
            wl_end = t_start + dur
            in_wl = [p for p in pts if p[0] <= wl_end]
            second_half = [p for p in in_wl if p[0] >= t_start + dur / 2]
            s = slope(second_half) * 1000 / (facts.get("created", sessions) / dur)  # the rate the harness achieved
            end_wl = at(pts, wl_end)
            ends.setdefault(role, []).append((facts.get("created", sessions), end_wl))
            print(
                f"| {role} | {pts[0][1]:.0f} | {at(pts, t_start + dur / 2):.0f} | {end_wl:.0f} | {pts[-1][1]:.0f} "
                f"| {max(r for _, r in pts):.0f} | {s:+.2f} |"
            )
        (out_dir / "rss_series.json").write_text(json.dumps(res["series"]))
        if res["rc"] not in (0, 1, -9, -15, 143) or not hist.exists():
            print(res["output"][-3000:])
        sys.stdout.flush()
    if len(next(iter(ends.values()), [])) >= 2:
        print("\nacross run lengths: RSS at the end of the workload vs sessions created")
        print("| process | " + " | ".join(f"{int(n)} sessions" for n, _ in ends["harness"]) + " | slope MB/1,000 |")
        for role, pts in sorted(ends.items()):
            n0, r0 = pts[0]
            n1, r1 = pts[-1]
            vals = " | ".join(f"{r:.0f}" for _, r in pts)
            s = (r1 - r0) / (n1 - n0) * 1000 if n1 != n0 else float("nan")
            print(f"| {role} | {vals} | {s:+.2f} |")
    if len(post_peaks) >= 2:
        (n0, r0), (n1, r1) = post_peaks[0], post_peaks[-1]
        vals = " | ".join(f"{r:.0f}" for _, r in post_peaks)
        s = (r1 - r0) / (n1 - n0) * 1000 if n1 != n0 else float("nan")
        print(f"| harness, peak after the servers stopped | {vals} | {s:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
