"""Starving the machine on purpose: what a shared CI runner does to a correct server's verdicts.

Why: a gate that is sometimes red on a correct server is a gate users learn to
ignore. On a busy runner (load ~6 on 2 cores) the harness's client is slow:
a duplicate reaches the server late, an aborted copy is processed after its
committed twin, a body upload takes a second. None of that is a server bug,
and a checker that decides from client-side timing what only the server's
order can decide turns it into a false alarm. The starvation test
(tests/integration/test_starvation.py) and ``bench/bench_flakes.py`` run the
default suite with every core busy and the harness and servers niced below
the hogs, and compare the verdicts with an idle run.

Tooling only (tests and benchmarks), never protocol code. Every hog is a
child process with its own deadline and a parent-death check, so a hog can
never outlive the run that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "HOG_NICE",
    "RUN_NICE",
    "TIMED_OUT",
    "cpu_hogs",
    "recheck_verdicts",
    "run_scaled_cli",
    "run_suite_cli",
    "suite_verdicts",
]

HOG_NICE = 0  # the hogs run at normal priority...
RUN_NICE = 10  # ...and the harness and its servers below them: the client is the slow party

_HOG = """
import os, sys, time
parent, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])  # seam-ok: a CPU hog, not protocol code
n = 0
while time.monotonic() < deadline:  # seam-ok
    n += 1
    if n % 200000 == 0 and os.getppid() != parent:
        break
"""


@contextlib.contextmanager
def cpu_hogs(
    n: int | None = None, *, max_s: float = 900.0, cpus: Sequence[int] = ()
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` busy-loop processes (default: one per core, or per core of ``cpus``) for the duration of the block
    (at most ``max_s``); with ``cpus``, hog i is pinned to ``cpus[i % len(cpus)]``."""
    count = n if n is not None else (len(cpus) or os.cpu_count() or 2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOG, str(os.getpid()), str(max_s)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    for i, p in enumerate(procs if cpus else ()):
        os.sched_setaffinity(p.pid, {cpus[i % len(cpus)]})
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


TIMED_OUT = 124  # run_suite_cli's code when the suite did not finish in time (as timeout(1) says)


def run_suite_cli(
    out: Path,
    *,
    nice: int = 0,
    scenarios: Sequence[str] = (),
    extra: Sequence[str] = (),
    timeout_s: float = 2400.0,
) -> int:
    """``harness run --suite default --out OUT`` (or the named ``scenarios``) in a child process, niced by
    ``nice``; its exit code, or :data:`TIMED_OUT` after ``timeout_s`` (the run is stopped with SIGTERM,
    the harness's Ctrl-C path that stops its servers; the scenarios it finished keep their verdicts)."""
    which = list(scenarios) if scenarios else ["--suite", "default"]
    argv = [sys.executable, "-m", "harness.cli", "run", *which, "--out", str(out), "--quiet", *extra]
    return _run_child(argv, out, nice=nice, timeout_s=timeout_s)


def run_scaled_cli(
    out: Path,
    names: Sequence[str],
    *,
    sessions: int | Mapping[str, int],
    nice: int = 0,
    timeout_s: float = 600.0,
    pause: Sequence[subprocess.Popen[bytes]] = (),
    cpus: Sequence[int] = (),
) -> int:
    """Library scenarios ``names`` live at ``sessions`` sessions each (a number, or one per name), every
    variant of a ``compare`` list (``NAME@VARIANT``: that one only), in a child process niced by ``nice``
    (``python -m harness.starve``); its exit code (0 ran, 1 a scenario errored, :data:`TIMED_OUT`). The
    verdicts are in ``out/<run>/verdicts.json``.

    ``pause``: hog processes (:func:`cpu_hogs`) the child stops (SIGSTOP) while it imports its modules, while
    it starts or restarts server processes and while it checks a finished run, and resumes (SIGCONT) for the
    workload: a verdict depends on the order of what happened while the sessions ran, never on how long a
    process took to import its libraries or a checker to read a history, and a niced start under the hogs
    costs ~10x its CPU in wall.

    ``cpus``: the child (and so its servers) may run only on these cores (Linux ``sched_setaffinity``): with
    hogs pinned to the same cores (:func:`cpu_hogs` ``cpus``) the harness is starved on every core it has,
    and the other cores stay free for the rest of the machine (a test suite's other workers)."""
    per = sessions if isinstance(sessions, Mapping) else {n: sessions for n in names}
    argv = [sys.executable, "-m", "harness.starve", str(out), *(f"{n}={per[n.partition('@')[0]]}" for n in names)]
    if pause:
        argv += ["--pause", ",".join(str(p.pid) for p in pause)]
    return _run_child(argv, out, nice=nice, timeout_s=timeout_s, cpus=cpus)


@contextlib.contextmanager
def _stopped(pids: Sequence[int]) -> Iterator[None]:
    """The processes ``pids`` stopped (SIGSTOP) for the block; resumed after, whatever happens."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)


def _pause_during_startup(pids: Sequence[int]) -> None:
    """This process's live runs stop the hogs ``pids`` while a server process group starts or restarts."""
    from harness.runner._procs import ProcessGroup

    start, restart = ProcessGroup.start, ProcessGroup.restart

    async def paused_start(self: ProcessGroup) -> None:
        with _stopped(pids):
            await start(self)

    async def paused_restart(self: ProcessGroup, index: int) -> None:
        with _stopped(pids):
            await restart(self, index)

    ProcessGroup.start = paused_start  # type: ignore[method-assign]
    ProcessGroup.restart = paused_restart  # type: ignore[method-assign]


def _run_child(argv: list[str], out: Path, *, nice: int, timeout_s: float, cpus: Sequence[int] = ()) -> int:
    """Run ``argv`` (niced by ``nice``) from the checkout, its output saved in ``out/cli_output.txt``; its exit
    code, or :data:`TIMED_OUT` after ``timeout_s`` (stopped with SIGTERM, the harness's Ctrl-C path that stops
    its servers, so the scenarios it finished keep their verdicts; SIGKILL 60 s later)."""
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if cpus:  # before the child starts any process of its own (it is still importing): they inherit it
        os.sched_setaffinity(proc.pid, set(cpus))
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        output += f"\n[starve] stopped after {timeout_s:.0f} s\n".encode()
        code = TIMED_OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_output.txt").write_bytes(output)
    return code


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m harness.starve", description="library scenarios, scaled down")
    ap.add_argument("out", type=Path)
    ap.add_argument("--sessions", type=int, default=None, help="sessions of every NAME without its own =N")
    ap.add_argument("--pause", default="", metavar="PID,...", help="hogs to stop during startup and checking")
    ap.add_argument(
        "names", nargs="+", metavar="NAME[@VARIANT][=SESSIONS]", help="@VARIANT: only that run of a compare list"
    )
    args = ap.parse_args(argv)
    runs: list[tuple[str, str | None, int]] = []
    for item in args.names:
        spec, _, n = item.partition("=")
        name, _, variant = spec.partition("@")
        if not n and args.sessions is None:
            ap.error(f"{spec}: no session count (NAME=N or --sessions N)")
        if n and not n.isdigit():
            ap.error(f"{item}: the session count must be a whole number")
        runs.append((name, variant or None, int(n) if n else int(args.sessions)))
    pids = [int(p) for p in args.pause.split(",") if p.strip()]
    with _stopped(pids):  # this process's own imports (~1-2 s of CPU) are startup too
        from harness.runner._live import run_scenario
        from harness.runner._suite import expand
        from harness.scenario import load_scenario

        if pids:
            _pause_during_startup(pids)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # run_scenario's cleanup path: no server process left behind

    signal.signal(signal.SIGTERM, on_term)
    lib = Path(__file__).resolve().parents[1] / "scenarios"
    code = 0
    for name, variant, sessions in runs:
        overrides: dict[str, Any] = {"workload.sessions": sessions}
        if variant is not None:
            overrides["target.compare"] = [variant]
        sc = load_scenario(lib / f"{name}.toml", overrides)
        for one, run_name in expand(sc):
            with contextlib.ExitStack() as checking:

                def on_phase(phase: str) -> None:
                    if phase == "checking" and pids:  # the verdicts are computed from the record: no hogs needed
                        checking.enter_context(_stopped(pids))

                res = run_scenario(one, args.out, run_name=run_name, report=False, on_phase=on_phase)
            print(f"{run_name}: {res.status} ({res.duration_s:.1f} s, {sessions} sessions)", flush=True)
            code = code or (1 if res.status == "error" else 0)
    return code


def suite_verdicts(out: Path) -> dict[str, dict[str, Any]]:
    """run folder name -> {checker: (status, violations, first message)} for every run of a suite folder."""
    runs: dict[str, dict[str, Any]] = {}
    for vfile in sorted(out.glob("*/verdicts.json")):
        verdicts = json.loads(vfile.read_text())
        runs[vfile.parent.name] = {
            str(v["checker"]): {
                "status": str(v.get("status")),
                "violations": len(v.get("violations") or []),
                "first": ((v.get("violations") or [{}])[0].get("message") or v.get("notes") or "")[:300],
            }
            for v in verdicts
        }
    return runs


def recheck_verdicts(out: Path) -> dict[str, dict[str, Any]]:
    """Like :func:`suite_verdicts`, but from the current checkers run again on each saved run folder
    (``history.jsonl`` and the rest): the figures of fixed checkers on already recorded histories."""
    from harness.checkers import check_all
    from harness.rundata import RunData

    runs: dict[str, dict[str, Any]] = {}
    for hist in sorted(out.glob("*/history.jsonl")):
        if not (hist.parent / "verdicts.json").exists():
            continue  # the run was cut before it was checked: its history may be partial
        run = RunData.load(hist.parent)
        checks = run.scenario.get("checks") if isinstance(run.scenario.get("checks"), dict) else {}
        enabled = [str(x) for x in (checks or {}).get("enabled") or ["all"]]
        verdicts = check_all(run, None if "all" in enabled else enabled)  # the runner's selection
        runs[hist.parent.name] = {
            v.checker: {
                "status": v.status,
                "violations": len(v.violations),
                "first": ((v.violations[0].message if v.violations else "") or v.notes or "")[:300],
            }
            for v in verdicts
        }
    return runs


if __name__ == "__main__":
    raise SystemExit(_main())
