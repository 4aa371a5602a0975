"""Live mode: real processes, real loopback sockets, wall-clock time.

One run: start the fake SGLang and N server processes on free loopback ports
(ours, or the user's ``command`` target; or use the user's URLs and push the
scenario's fault plan to their fake), wait for ``/health``, run the
workload with its agents and the nemesis, then collect what the servers say
(final session states, deleted-session probes, the backend's execution log,
the servers' JSON log lines), stop every process whatever happened, save the
run folder, run the checkers and build the report.

The collection comes before the stop because state lives only in the
processes; the stop is in a ``finally`` (and process groups are also swept at
interpreter exit) because an orphaned server on a loopback port poisons the
next run on a shared machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from harness.rundata import RUN_FILES, RunData
from harness.runfolder import prepare_run_dir
from harness.runner._drive import ExecutionsFile, Progress, drive
from harness.runner._procs import ProcessGroup
from harness.runner._selfmon import SelfMonitor
from harness.scenario import DEFAULT_VARIANT, Scenario
from harness.serverlog import LogConfig, LogStats, parse_line
from harness.serverlog import read_server_logs as read_logs
from harness.workload import WorkloadResult

Phase = Callable[[str], None]  # "checking", "reporting": what a run is doing after its workload

__all__ = [
    "RunResult",
    "apply_overrides",
    "collect_server_logs",
    "finish_run",
    "merge_server_logs",
    "run_dir_name",
    "run_scenario",
]


@dataclass
class RunResult:
    name: str
    variant: str
    seed: int
    run_dir: Path
    status: str = "unknown"  # composed verdict: valid | invalid | unknown | error
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    sessions: int = 0
    events: int = 0
    workload: WorkloadResult | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    slo: str = "none"  # the report's SLO verdict: none | pass | fail
    source: str = ""  # the scenario file
    target_args: list[str] = field(default_factory=list)  # CLI target flags this run was given (--server-cmd ...)
    target_kind: str = "reference"
    judgement: Any = None  # harness.verdict.Judgement: the run's one verdict (exit code, reasons), after finish_run

    @property
    def replay(self) -> str:
        """The command that runs this exact run again (same file, seed, variant and target flags)."""
        if self.target_args:  # the user's server: no variant to switch, the same command or urls
            return f"harness run {self.source} --seed {self.seed} {shlex.join(self.target_args)}"
        if self.target_kind != "reference":  # the file names the user's server; its variant is not ours to set
            return f"harness run {self.source} --seed {self.seed}"
        return f"harness run {self.source} --seed {self.seed} --variant {self.variant}"


def run_dir_name(sc: Scenario, expanded: bool) -> str:
    return f"{sc.name}@{sc.variant_label}" if expanded else sc.name


def apply_overrides(sc: Scenario, variant_override: str | None, seed_override: int | None) -> Scenario:
    if seed_override is not None:
        sc = dataclasses.replace(sc, seed=seed_override, backend=dataclasses.replace(sc.backend, seed=seed_override))
    if variant_override is not None:
        vs = [] if variant_override == DEFAULT_VARIANT else [v for v in variant_override.split("+") if v]
        sc = sc.with_variants(vs)
    return sc


def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    variant_override: str | None = None,
    seed_override: int | None = None,
    *,
    run_name: str | None = None,
    progress: Progress | None = None,
    report: bool = True,
    target_args: list[str] | None = None,
    server_logs: Sequence[Path] = (),
    on_phase: Phase | None = None,
    ray: Any = None,
) -> RunResult:
    """Run one (already expanded) scenario live into ``out_dir/<name>``; never leaves a process behind.

    ``target_args`` are the command-line flags that set the target (``--server-cmd``, ``--url``...),
    for the replay line only: the scenario already carries the target they made.
    ``server_logs``: log files of a deployment the harness did not start (``--server-log``); only
    what they gain during the run is read, with the scenario's ``[target.logs]`` config.
    ``ray``: a :class:`harness.distributed.live.RayLive`: the sessions run on its agent actors (``--ray``).
    """
    sc = apply_overrides(scenario, variant_override, seed_override)
    run_dir = Path(out_dir) / (run_name or sc.name)
    res = RunResult(sc.name, sc.variant_label, sc.seed, run_dir, source=sc.source, target_args=list(target_args or []))
    res.target_kind = sc.target.kind
    t0 = time.perf_counter()  # seam-ok: wall-clock duration of the run for the summary table only
    # a stale log or verdict from an earlier run must not mix into this one; only a harness run folder is replaced
    prepare_run_dir(Path(out_dir), run_name or sc.name)
    procs: ProcessGroup | None = None
    try:
        plan_file = run_dir / "backend_plan.json"  # the fake the runner starts (reference and command targets)
        if sc.target.kind in ("reference", "command"):
            plan_file.write_text(json.dumps(sc.backend.plan(), indent=1))
        if sc.target.kind == "reference":
            procs = ProcessGroup.plan(
                run_dir / "logs",
                processes=sc.target.processes,
                seed=sc.backend.seed,
                plan_file=plan_file,
                variants=sc.target.variants,
                tokenizer=sc.target.tokenizer,
                server_args=sc.target.server_args,
                startup_timeout_s=sc.target.startup_timeout_s,
            )
        elif sc.target.kind == "command":
            procs = ProcessGroup.command(
                run_dir,
                cmd=sc.target.cmd,
                processes=sc.target.processes,
                seed=sc.backend.seed,
                plan_file=plan_file,
                tokenizer=sc.target.tokenizer,
                env=sc.target.env,
                cwd=sc.target.cwd,
                health_path=sc.target.health_path,
                startup_timeout_s=sc.target.startup_timeout_s,
            )
        # written first, so that a run cut by a signal leaves a folder `harness check` can read
        (run_dir / RUN_FILES["scenario"]).write_text(json.dumps(sc.to_plain(), indent=2, sort_keys=True, default=str))
        offsets = {str(p): p.stat().st_size if p.is_file() else 0 for p in map(Path, server_logs)}
        with (run_dir / RUN_FILES["history"]).open("w") as sink:
            data, execs, own_logs = asyncio.run(_run_async(sc, procs, res, progress, sink, ray, run_dir))
        try:
            _save(data, run_dir, sc, res, execs, own_logs, list(map(Path, server_logs)), offsets)
        finally:
            if execs is not None:
                execs.close()
        res.events = data.event_count
    except KeyboardInterrupt:
        res.status, res.error = "error", "interrupted"
        raise
    except Exception as exc:
        res.status = "error"
        res.error = f"{type(exc).__name__}: {exc}"
        (run_dir / "error.txt").write_text(traceback.format_exc())
    finally:
        if procs is not None:
            procs.stop()
        res.duration_s = time.perf_counter() - t0  # seam-ok: see above
    finish_run(res, sc, report=report, on_phase=on_phase)
    return res


def _save(
    data: RunData,
    run_dir: Path,
    sc: Scenario,
    res: RunResult,
    execs: ExecutionsFile | None,
    own_logs: list[Path],
    extra_logs: list[Path],
    offsets: Mapping[str, int],
) -> None:
    """The run folder: ``RunData.save``, with the two files that grow with the run written without holding
    them (issue 13): the backend's execution log (``execs``, fetched a page at a time) and the servers' log
    lines (``own_logs``: the processes the runner started; ``extra_logs``: ``--server-log``, from ``offsets``),
    merged as ``read_server_logs`` would (merge_server_logs). Both are written beside the folder's files
    first, then put over save's placeholders (``{}``, an empty file) whole, with ``os.replace``; the
    harness's self-measurement (harness_self.json, the same bytes as save's) is written last, as save does."""
    execs_tmp = run_dir / (RUN_FILES["backend_executions"] + ".tmp")
    logs_tmp = run_dir / (RUN_FILES["server_logs"] + ".merged")
    try:
        if execs is not None:
            execs.write(execs_tmp)
        groups: list[tuple[Sequence[Path], Mapping[str, int] | None]] = []
        if own_logs:
            groups.append(([f for f in own_logs if f.is_file()], None))
        if extra_logs:
            groups.append((extra_logs, offsets))

        def own_unreadable(gi: int, exc: OSError) -> bool:
            if gi == 0 and own_logs:  # as collect_server_logs: noted, no lines
                res.notes.append(f"server logs unreadable: {exc}")
                return True
            return False  # --server-log: bad input, the run errors (as before)

        stats = merge_server_logs(groups, sc.target.logs, logs_tmp, on_error=own_unreadable) if groups else []
        if own_logs and stats and stats[0] is not None and stats[0].skipped:
            res.notes.append(f"server logs: {stats[0].summary()}")
        if extra_logs and stats and stats[-1] is not None:
            res.notes.append(f"--server-log: {stats[-1].summary()}")
        harness_self, data.harness = data.harness, {}
        try:
            data.save(run_dir)
        finally:
            data.harness = harness_self
        if execs is not None:
            os.replace(execs_tmp, run_dir / RUN_FILES["backend_executions"])
        if groups:
            os.replace(logs_tmp, run_dir / RUN_FILES["server_logs"])
        if harness_self:  # save's last file, last here too: once it is there the folder is whole
            (run_dir / RUN_FILES["harness"]).write_text(json.dumps(harness_self, indent=1, sort_keys=True))
    finally:
        for tmp in (execs_tmp, logs_tmp):
            tmp.unlink(missing_ok=True)


def finish_run(res: RunResult, sc: Scenario, *, report: bool, on_phase: Phase | None = None) -> None:
    """The tail every mode shares: verdicts into the run folder, the report (unless the run errored), and
    the run's one verdict (harness/verdict.py) in ``res.judgement``. ``on_phase`` hears "checking", "reporting"."""
    if res.status != "error":
        if on_phase is not None:
            on_phase("checking")
        _check(res, sc)
        if report:
            if on_phase is not None:
                on_phase("reporting")
            _report(res)
    try:
        from harness.verdict import judge
    except ImportError:
        return
    try:
        res.judgement = judge(res.run_dir, verdicts=res.verdicts if res.status != "error" else None, error=res.error)
    except (OSError, ValueError) as exc:  # a run folder cut short: the run's own status stands
        res.notes.append(f"verdict: {type(exc).__name__}: {exc}")
        return
    res.slo = str(res.judgement.slo.get("status") or "none")


async def _run_async(
    sc: Scenario,
    procs: ProcessGroup | None,
    res: RunResult,
    progress: Progress | None,
    sink: IO[str] | None = None,
    ray: Any = None,
    run_dir: Path | None = None,
) -> tuple[RunData, ExecutionsFile | None, list[Path]]:
    """The run's processes, workload and collection; returns what the collection gathered, the backend's
    execution log when it was streamed to a file, and the server log files to merge (once every process stopped)."""
    try:
        if procs is not None:
            await procs.start()
            servers = [s.url for s in procs.servers]
            backend_url: str | None = procs.backend.url if procs.backend else None
        else:
            servers = list(sc.target.urls)
            backend_url = sc.target.backend_url
        faults_applied = True
        if procs is None:
            faults_applied = await _push_plan(sc, backend_url, res)
        try:
            if ray is not None:  # issue 15: the sessions on Ray agent actors (docs/distributed.md)
                from harness.distributed.live import drive_on_ray

                out = await drive_on_ray(
                    sc,
                    servers,
                    ray,
                    backend_url=backend_url,
                    processes=procs,
                    faults_applied=faults_applied,
                    history_sink=sink,
                )
            else:
                out = await drive(
                    sc,
                    servers,
                    backend_url=backend_url,
                    processes=procs,
                    progress=progress,
                    faults_applied=faults_applied,
                    history_sink=sink,
                    self_monitor=SelfMonitor(),
                    stream_to=run_dir if sink is not None else None,  # the sink is run_dir's history.jsonl
                )
        finally:
            if procs is None and faults_applied and backend_url:
                await _put_plan(backend_url, {})  # leave the deployment's fake without this scenario's faults
        res.sessions, res.workload = out.sessions, out.workload
        res.notes.extend(out.notes)
        if procs is None:  # a deployment's fake serves others too (earlier runs): keep this run's sessions only
            ours = out.session_ids
            if ours is None:
                ours = {str(e["session"]) for e in out.data.history if e.get("session")}
            out.data.backend_executions = {k: v for k, v in out.data.backend_executions.items() if k in ours}
        logs: list[Path] = []
        if procs is not None:
            procs.stop()  # flush the servers' logs before reading them
            logs = procs.server_log_files()
        return out.data, out.executions, logs  # executions: None when the RunData holds them (--ray)
    finally:
        if procs is not None:
            procs.stop()


async def _put_plan(backend_url: str, plan: dict[str, Any]) -> str | None:
    """``PUT /admin/plan`` on a fake SGLang; the reason it failed, or None."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as c:
            r = await c.put(f"{backend_url}/admin/plan", json=plan)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if r.status_code != 200:
        return f"PUT /admin/plan answered {r.status_code}: {r.text[:200]}"
    return None


async def _push_plan(sc: Scenario, backend_url: str | None, res: RunResult) -> bool:
    """An external deployment: give its fake this scenario's fault plan, or say loudly that it cannot."""
    if backend_url is None:
        why = "no backend url (--backend-url / target.backend_url)"
    else:
        why = await _put_plan(backend_url, sc.backend.plan()) or ""
        if not why:
            return True
    msg = (
        f"the fault plan did not reach the backend ({why}): faults {sc.fault_classes() or '[]'} and the plan's "
        "latency are not applied, so fault-driven checks are unknown"
    )
    res.notes.append(msg)
    print(f"harness run: {sc.name}: {msg}", file=sys.stderr)
    return False


def collect_server_logs(
    files: list[Path], config: LogConfig | None = None, notes: list[str] | None = None
) -> list[dict[str, Any]]:
    """The servers' log lines of one run, from the files the processes wrote or the output the runner captured.

    The one place a run turns server output into ``RunData.server_logs``: JSON or key=value text
    lines, read by harness.serverlog with the scenario's ``[target.logs]`` and merged by timestamp.
    Unreadable files and malformed lines are skipped; when lines were skipped, ``notes`` gets the counts.
    """
    readable = [f for f in files if f.is_file()]
    try:
        lines, stats = read_logs(readable, config)
    except OSError as exc:
        if notes is not None:
            notes.append(f"server logs unreadable: {exc}")
        return []
    if notes is not None and stats.skipped:
        notes.append(f"server logs: {stats.summary()}")
    return lines


@dataclass
class _Spilled:
    """One group of log files after the first pass: where each sorted run of lines is in the spill file."""

    stats: LogStats
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (file index, start, end) in the spill
    ports: dict[Any, set[Any]] = field(default_factory=dict)  # pid -> worker ports (fill_worker_ports's map)
    names: list[str] = field(default_factory=list)  # file index -> its name, for "file:line"


def _spill_group(
    files: Sequence[Path], config: LogConfig | None, offsets: Mapping[str, int] | None, spill: IO[bytes]
) -> _Spilled:
    """Pass 1 over one group: every line parsed once (harness.serverlog.parse_line), its normalized event
    encoded as ``json.dumps(ev, sort_keys=True)`` (the dedup key and, but for a filled worker port, the
    output line) into ``spill`` as ``ts line_no fill key``; a file's lines form one run while their times do
    not go back (a new run where they do). Raises OSError as read_server_logs does."""
    out = _Spilled(LogStats())
    stats, ports = out.stats, out.ports
    for fi, path in enumerate(files):
        out.names.append(path.name)
        start = spill.tell()
        prev: float | None = None
        with path.open("rb") as fh:
            if offsets and str(path) in offsets:
                fh.seek(offsets[str(path)])
            for n, raw in enumerate(fh, 1):  # split on b"\n" only, as read_events splits the decoded text
                line = raw.decode("utf-8", errors="replace")
                if not line.strip():
                    continue
                stats.lines += 1
                ev, reason, fmt = parse_line(line[:-1] if line.endswith("\n") else line, config)
                if ev is None:
                    stats.skip(reason or "not_json", f"{path.name}:{n}")
                    continue
                stats.formats[fmt] += 1
                ts = float(ev["ts"])
                if ev.get("pid") is not None and isinstance(ev.get("worker_port"), int):
                    ports.setdefault(ev["pid"], set()).add(ev["worker_port"])
                if prev is not None and ts < prev:  # out of time order: the file's next sorted run starts here
                    here = spill.tell()
                    out.runs.append((fi, start, here))
                    start = here
                prev = ts
                key = json.dumps(ev, sort_keys=True, default=str)
                spill.write(f"{ts!r} {n} {int(ev.get('worker_port') is None)} {key}\n".encode("ascii"))
        if spill.tell() > start:
            out.runs.append((fi, start, spill.tell()))
    return out


def _spilled_lines(fd: int, start: int, end: int) -> Iterator[bytes]:
    """The spill's lines in ``[start, end)``, read 64 KB at a time (a short run reads only its own bytes)."""
    rest = b""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(65536, end - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        *lines, rest = (rest + chunk).split(b"\n")
        yield from lines
    if rest:
        yield rest


def merge_server_logs(
    groups: Sequence[tuple[Sequence[Path], Mapping[str, int] | None]],
    config: LogConfig | None,
    out: Path,
    *,
    on_error: Callable[[int, OSError], bool] | None = None,
) -> list[LogStats | None]:
    """``server_logs.jsonl`` from the servers' log files without holding their lines (issue 13).

    Writes the bytes ``RunData.save`` writes for ``read_server_logs`` of each group (``(files, offsets)``),
    the groups' lines merged by time (a tie: the earlier group first): each group deduplicated and its
    worker ports filled within itself, lines ordered by ``ts``, stably. Pass 1 parses every line once into an
    unlinked spill file beside ``out`` (one JSON line each, as written); pass 2 merges the files' sorted runs
    (one per file when its times never go back, as a server's own log) with a heap, and dedups among the
    lines of one timestamp (identical lines have the same ``ts``, so that is where every duplicate is). In
    memory: one pending line per run, the lines of one timestamp, each process's ports.

    A group whose files cannot be read: ``on_error(index, exc)`` True leaves it out (its stats None), else
    (or without ``on_error``) the OSError is raised. Returns each group's stats (``used`` = lines written).
    """
    with tempfile.TemporaryFile(dir=out.parent) as spill:
        spilled: list[_Spilled | None] = []
        for gi, (files, offsets) in enumerate(groups):
            try:
                spilled.append(_spill_group(files, config, offsets, spill))
            except OSError as exc:
                if on_error is None or not on_error(gi, exc):
                    raise
                spilled.append(None)
        spill.flush()
        fd = spill.fileno()
        heap: list[tuple[float, int, int, int, int, bytes, Iterator[bytes]]] = []

        def push(gi: int, fi: int, it: Iterator[bytes]) -> None:
            raw = next(it, None)
            if raw is not None:
                ts, n, fill, key = raw.split(b" ", 3)
                heapq.heappush(heap, (float(ts), gi, fi, int(n), int(fill), key, it))

        for gi, sp in enumerate(spilled):
            for fi, start, end in sp.runs if sp is not None else ():
                push(gi, fi, _spilled_lines(fd, start, end))
        first_dup: dict[int, tuple[int, int]] = {}
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("wb") as fh:
            while heap:
                ts = heap[0][0]
                same: list[tuple[int, int, int, int, bytes]] = []
                while heap and heap[0][0] == ts:  # every line of this time, from every run
                    _, gi, fi, n, fill, key, it = heapq.heappop(heap)
                    same.append((gi, fi, n, fill, key))
                    push(gi, fi, it)
                same.sort()  # group, file, line: read_events's order, kept by its stable sort on ts
                kept: Counter[bytes] = Counter()  # read_events's dedup, within one timestamp
                here: Counter[bytes] = Counter()
                at: tuple[int, int] | None = None
                for gi, fi, n, fill, key in same:
                    if at is None or at[0] != gi:
                        kept, here = Counter(), Counter()
                    elif at[1] != fi:
                        for k, c in here.items():
                            kept[k] = max(kept[k], c)
                        here = Counter()
                    at = (gi, fi)
                    here[key] += 1
                    sp = spilled[gi]
                    assert sp is not None
                    if here[key] <= kept[key]:
                        sp.stats.skipped["duplicate"] += 1
                        first_dup[gi] = min(first_dup.get(gi, (fi, n)), (fi, n))
                        continue
                    sp.stats.used += 1
                    if fill:
                        ev = json.loads(key)
                        if ev.get("worker_port") is None and len(sp.ports.get(ev.get("pid"), ())) == 1:
                            ev["worker_port"] = next(iter(sp.ports[ev["pid"]]))
                            key = json.dumps(ev, sort_keys=True).encode("ascii")
                    fh.write(key + b"\n")
        os.replace(tmp, out)
    for gi, (fi, n) in first_dup.items():
        sp = spilled[gi]
        assert sp is not None
        sp.stats.examples.setdefault("duplicate", f"{sp.names[fi]}:{n}")
    return [sp.stats if sp is not None else None for sp in spilled]


def read_server_logs(files: list[Path], config: LogConfig | None = None) -> list[dict[str, Any]]:
    """Every log line of every server process (JSON or text), merged by timestamp; malformed lines skipped."""
    return collect_server_logs(files, config)


def _check(res: RunResult, sc: Scenario) -> None:
    try:
        from harness.verdict import check_folder, write_verdicts
    except ImportError:
        res.notes.append("harness.checkers not available: no verdicts")
        return
    # the one checker path (harness/verdict.py), per session where a checker can (same verdicts, less memory)
    checked = check_folder(res.run_dir)
    verdicts = checked.verdicts
    del checked  # the loaded run is not kept past the check
    write_verdicts(res.run_dir, verdicts)
    res.verdicts = verdicts
    statuses = [str(v.get("status")) for v in verdicts]
    if "invalid" in statuses:
        res.status = "invalid"
    elif "unknown" in statuses or not statuses:
        res.status = "unknown"
    else:
        res.status = "valid"


def _report(res: RunResult) -> None:
    try:
        from harness.report import build_run_report
    except ImportError:
        return
    try:
        summary = build_run_report(res.run_dir)
    except Exception as exc:  # a report bug must not hide the verdicts
        res.notes.append(f"report failed: {type(exc).__name__}: {exc}")
        return
    slo = summary.get("slo") if isinstance(summary, dict) else None
    if isinstance(slo, dict) and slo.get("status") in ("pass", "fail"):
        for c in slo.get("checks") or []:
            if c.get("status") == "fail":
                bound, seen = c.get("threshold_ms"), c.get("observed_ms")
                res.notes.append(f"SLO {c.get('series')} {c.get('key')} <= {bound} ms: observed {seen} ms")
