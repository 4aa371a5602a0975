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
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from harness.rundata import RUN_FILES, RunData
from harness.runfolder import prepare_run_dir
from harness.runner._drive import Progress, drive
from harness.runner._procs import ProcessGroup
from harness.runner._selfmon import SelfMonitor
from harness.scenario import DEFAULT_VARIANT, Scenario
from harness.serverlog import LogConfig
from harness.serverlog import read_server_logs as read_logs
from harness.workload import WorkloadResult

Phase = Callable[[str], None]  # "checking", "reporting": what a run is doing after its workload

__all__ = ["RunResult", "apply_overrides", "collect_server_logs", "finish_run", "run_dir_name", "run_scenario"]


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
            data = asyncio.run(_run_async(sc, procs, res, progress, sink, ray, run_dir))
        if server_logs:
            extra, stats = read_logs(list(server_logs), sc.target.logs, offsets=offsets)
            data.server_logs = sorted([*data.server_logs, *extra], key=lambda ln: float(ln["ts"]))
            res.notes.append(f"--server-log: {stats.summary()}")
        data.save(run_dir)
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
) -> RunData:
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
        if procs is not None:
            procs.stop()  # flush the servers' logs before reading them
            out.data.server_logs = collect_server_logs(procs.server_log_files(), sc.target.logs, res.notes)
        return out.data
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
