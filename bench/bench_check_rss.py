"""Benchmark: peak RSS and wall time of ``harness check`` and ``harness report`` on a recorded run folder.

Issue 13: "checkers and report that stream the history: harness RSS bounded
independent of run length". Each command runs as a child process on a copy of
the folder (the recorded one stays as it was); its peak RSS is the kernel's
``ru_maxrss`` of that child (``os.wait4``), exact, not sampled.

``--replicate K`` measures on a synthetic folder of K copies of RUN_DIR with
session ids, request ids and op ids made disjoint (bench_soak.replicate): the
10^5-session figure is ten copies of a real 10^4-session soak. The copies
overlap in time, so their verdicts are not meant to be read, only the memory.

``--stream NAMES`` (comma-separated checker names, or ``all``) measures the per-session check pass
(harness/checkers/stream.py) against ``check_all`` over the loaded run for those checkers, each a child
process, and compares their verdicts (JSON, byte for byte).

``--phases`` instead loads the folder in this process and prints RSS after the load, the pairing, the
shared Links and each checker (where the memory goes).

``--stream-phases`` instead runs ``check_folder(per_session=True)`` (what ``harness check`` runs on a large
folder) in this process and prints the RSS as the per-session pass goes: each file the spill reads, the LogIndex
build, parts 0, 1, 2, 5, 10 and every 25th, the reduce and the judgement, each phase's highest RSS (sampled every
0.1 s) and ``ru_maxrss`` at the end (``--stop-after N``: stop after part N). Where the pass's memory goes.

``--in-place`` (with ``--stream``): measure on RUN_DIR itself instead of a copy (a 10^5 folder is 2 GB).

``--report-only``: ``harness report`` alone (a copy without ``verdicts.json`` gets ``[]``, which no command
re-checks, so the figure is the report's, not a check's).

Run: ``.venv/bin/python bench/bench_check_rss.py RUN_DIR [--replicate 10] [--skip-report] [--report-only] [--phases]
[--stream-phases [--stop-after N]]
[--stream NAMES] [--skip-whole] [--in-place]``.
Not part of the test suite; it prints figures (bench/results_soak.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_soak import ENV, ROOT, replicate

MB = 1024 * 1024


LAST_CPU = [0.0]  # CPU seconds (user + system) of the last child measure() waited for


def measure(argv: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS MB, wall seconds) of one child process; its CPU seconds go to ``LAST_CPU``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    return proc.returncode, usage.ru_maxrss / 1024, time.perf_counter() - t0  # ru_maxrss is in KiB on Linux


def phases(run_dir: Path) -> None:
    """RSS (psutil) after each step of a check, in this process."""
    import psutil

    from harness.checkers import CHECKERS, run_checker
    from harness.checkers.ops import pair_ops, shared_links
    from harness.rundata import RunData

    me, t0 = psutil.Process(), time.perf_counter()

    def say(what: str) -> None:
        print(f"{what}: RSS {me.memory_info().rss / MB:.0f} MB, {time.perf_counter() - t0:.1f} s", flush=True)

    say("imports")
    run = RunData.load(run_dir)
    say("RunData.load")
    ops = pair_ops(run.history)
    say("pair_ops")
    shared_links(run, ops)
    say("Links")
    for name, checker in CHECKERS.items():
        v = run_checker(checker, run)
        say(f"{name} ({v.status})")


def stream_phases(run_dir: Path, stop_after: int | None = None) -> None:
    """RSS as ``check_folder``'s per-session pass goes (/proc/self/statm sampled every 0.1 s by a thread)."""
    import resource
    import threading

    import harness.checkers.stream as st
    from harness.verdict import check_folder

    page = resource.getpagesize()
    label, t0 = ["imports"], time.perf_counter()
    peaks: dict[str, float] = {}
    order: list[str] = []
    step = ["spill"]  # who reads the files: the spill, then the judgement (lean_run)
    done = threading.Event()

    def rss() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page / MB

    def sample() -> None:
        while not done.is_set():
            r, at = rss(), label[0]
            if at not in peaks:
                order.append(at)
            peaks[at] = max(peaks.get(at, 0.0), r)
            done.wait(0.1)

    def phase(what: str) -> None:
        label[0] = what
        print(f"{time.perf_counter() - t0:8.1f} s  RSS {rss():6.0f} MB  -> {what}", flush=True)

    def summary() -> None:
        done.set()
        print("highest RSS per phase (MB, sampled):")
        for at in order:
            print(f"  {peaks[at]:6.0f}  {at}")
        print(f"ru_maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} kB", flush=True)

    jsonl, items, history, log_index, parts = (
        st._jsonl,
        st._object_items,
        st.Spill._history,
        st.Spill.log_index,
        st.Spill.parts,
    )

    def read_jsonl(path: Path) -> Any:
        phase(f"{step[0]}: {path.name}")
        yield from jsonl(path)

    def read_items(path: Path, *a: Any, **k: Any) -> Any:
        phase(f"{step[0]}: {path.name}")
        yield from items(path, *a, **k)

    def hist(self: Any) -> None:
        phase("spill: history.jsonl")
        history(self)

    def index(self: Any) -> Any:
        if self._log_index is not None:
            return log_index(self)
        at = label[0]
        phase("LogIndex build")
        got = log_index(self)
        print(f"    LogIndex: {got.n_lines} lines, nbytes {got.nbytes() / MB:.1f} MB", flush=True)
        phase(f"{at}, after the LogIndex")
        return got

    def each(self: Any) -> Any:
        n = sum(len(s) for s in self.sessions.values())
        phase(f"spill done ({self.groups} groups, {n} sessions, {len(self.global_events)} run-wide events)")
        for k, part in enumerate(parts(self)):
            if k in (0, 1, 2, 5, 10) or k % 25 == 0:
                phase(f"part {k}")
            yield part
            if stop_after is not None and k >= stop_after:
                phase(f"stopped after part {k}")
                summary()
                raise SystemExit(0)
        phase("reduce")
        step[0] = "judgement"

    st._jsonl, st._object_items = read_jsonl, read_items  # type: ignore[assignment]
    st.Spill._history, st.Spill.log_index, st.Spill.parts = hist, index, each  # type: ignore[method-assign]
    threading.Thread(target=sample, daemon=True).start()
    got = check_folder(run_dir, per_session=True)  # what harness check takes for a large folder (auto)
    phase("verdicts")
    print(f"    {sum(v.get('status') != 'valid' for v in got.verdicts)} of {len(got.verdicts)} verdicts not valid")
    summary()


STREAM_CHILD = """
import json, sys
from pathlib import Path
run_dir, names, mode, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
from harness.checkers import CHECKERS, check_all
from harness.checkers.stream import check_streaming
from harness.rundata import RunData
sel = list(CHECKERS) if names == "all" else names.split(",")
if mode == "whole":
    verdicts, how = check_all(RunData.load(run_dir), sel), "whole run"
else:
    got = check_streaming(run_dir, sel)
    verdicts, how = got.verdicts, f"per session {got.streamed}, whole run {got.whole} {got.why_whole}"
out.write_text(json.dumps([v.to_dict() for v in verdicts], indent=1, sort_keys=True))
print(how)
"""


def stream(work: Path, names: str, whole: bool = True, out_dir: Path | None = None) -> None:
    """Peak RSS of the per-session pass and of check_all for ``names``, and whether their verdicts agree."""
    got: dict[str, bytes] = {}
    for mode in ("stream", "whole") if whole else ("stream",):
        out = (out_dir or work.parent) / f"verdicts-{mode}.json"
        rc, peak, secs = measure([sys.executable, "-c", STREAM_CHILD, str(work), names, mode, str(out)])
        print(f"{mode}: exit {rc}, peak RSS {peak:.0f} MB, {secs:.1f} s", flush=True)
        got[mode] = out.read_bytes() if out.exists() else b""
    if not whole:
        return
    same = got["stream"] == got["whole"] and bool(got["stream"])
    print(f"verdicts: {'identical' if same else 'DIFFERENT'} ({len(got['stream'])} bytes)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--replicate", type=int, default=1, metavar="K", help="K disjoint copies of RUN_DIR")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="harness report only; a copy without verdicts.json gets an empty one (no record: not re-checked)",
    )
    ap.add_argument("--phases", action="store_true", help="RSS after each step of a check, in this process")
    ap.add_argument(
        "--stream-phases", action="store_true", help="RSS as harness check's per-session pass goes, in this process"
    )
    ap.add_argument("--stop-after", type=int, default=None, metavar="N", help="with --stream-phases: stop after part N")
    ap.add_argument("--stream", default=None, metavar="NAMES", help="per-session pass vs check_all for these")
    ap.add_argument("--skip-whole", action="store_true", help="with --stream: the per-session pass only")
    ap.add_argument("--tmp", type=Path, default=None, help="where the copy goes (default: a temp dir)")
    ap.add_argument(
        "--in-place",
        action="store_true",
        help="with --stream: measure on RUN_DIR itself, no copy (the pass writes only its own .harness-tmp/)",
    )
    args = ap.parse_args()
    if args.in_place and args.stream and args.replicate <= 1:
        print(f"input: {args.run_dir} (in place)")
        stream(args.run_dir, args.stream, whole=not args.skip_whole, out_dir=args.tmp or Path(tempfile.gettempdir()))
        return 0
    if args.stream_phases and args.replicate <= 1:
        stream_phases(args.run_dir, args.stop_after)
        return 0
    if args.phases and args.replicate <= 1:
        phases(args.run_dir)
        return 0
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        work = Path(tmp) / args.run_dir.name
        if args.replicate > 1:
            replicate(args.run_dir, work, args.replicate)
        else:
            shutil.copytree(args.run_dir, work)
        hist = work / "history.jsonl"
        events = sum(1 for _ in hist.open("rb"))
        what = f"{args.replicate} disjoint copies of " if args.replicate > 1 else ""
        print(f"input: {what}{args.run_dir}: {events} events, history.jsonl {hist.stat().st_size / MB:.0f} MB")
        if args.phases:
            phases(work)
            return 0
        if args.stream:
            stream(work, args.stream, whole=not args.skip_whole)
            return 0
        py = sys.executable
        if args.report_only:  # the report's own memory: a folder without verdicts would be checked first
            if not (work / "verdicts.json").exists():
                (work / "verdicts.json").write_text("[]")
        else:
            rc, peak, secs = measure([py, "-m", "harness.cli", "check", str(work)])
            print(f"harness check: exit {rc}, peak RSS {peak:.0f} MB, {secs:.1f} s wall, {LAST_CPU[0]:.1f} s CPU")
        if not args.skip_report:
            rc, peak, secs = measure([py, "-m", "harness.cli", "report", str(work)])
            print(f"harness report: exit {rc}, peak RSS {peak:.0f} MB, {secs:.1f} s wall, {LAST_CPU[0]:.1f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
