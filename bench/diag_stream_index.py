"""Diagnostic (issue 13): the memory of the run-wide log index of the per-session pass (stream_index.py).

Builds :class:`harness.checkers.stream_index.LogIndex` from a run folder's ``server_logs.jsonl`` as the
per-session pass does (one streaming pass) and prints its lines, its columns' bytes, the process's RSS
before and after and its peak, and the time. ``--replicate K --out DIR`` first writes DIR/server_logs.jsonl:
K copies of the folder's log with session ids, request ids, caller ids and ports made disjoint (the 10^5
figure from a 10^4 soak; copies overlap in time, which the index does not care about). Nothing else of the
folder is read or written.

Run: ``.venv/bin/python bench/diag_stream_index.py RUN_DIR [--replicate 10 --out DIR]`` (bench/results_soak.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from harness.checkers.stream import _jsonl
from harness.checkers.stream_index import LogIndex

MB = 1024 * 1024


def rss_now() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MB


def replicate(src: Path, out: Path, k: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    dst = out / "server_logs.jsonl"
    with dst.open("w") as fh:
        for copy in range(k):
            for ln in _jsonl(src / "server_logs.jsonl"):
                for key in ("session_id", "req_id", "caller_request_id"):
                    if isinstance(ln.get(key), str):
                        ln[key] = f"{copy:x}{ln[key]}"
                if isinstance(ln.get("worker_port"), int):
                    ln["worker_port"] += 10 * copy
                fh.write(json.dumps(ln) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--replicate", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    folder = args.run_dir
    if args.replicate:
        assert args.out is not None, "--replicate needs --out"
        t = time.perf_counter()
        folder = replicate(args.run_dir, args.out, args.replicate)
        print(f"replicated x{args.replicate} into {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    before = rss_now()
    t0 = time.perf_counter()
    index = LogIndex(_jsonl(folder / "server_logs.jsonl"))
    took = time.perf_counter() - t0
    walks = index.inflight()
    after = rss_now()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = (folder / "server_logs.jsonl").stat().st_size / MB
    print(
        f"{index.n_lines} log lines ({size:.0f} MB), {len(index.procs)} processes ({len(walks)} walked): "
        f"columns {index.nbytes() / MB:.1f} MB; RSS {before:.0f} -> {after:.0f} MB (+{after - before:.0f}), "
        f"peak {peak:.0f} MB; built in {took:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
