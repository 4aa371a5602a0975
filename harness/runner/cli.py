"""``harness run``: run scenarios, check them, report; exit 0 all valid, 1 a violation, 2 bad input.

A bad scenario is the user's input error, not a crash: it is printed as one
line naming the file, the key and the fix, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.runfolder import RunFolderError
from harness.runner._live import RunResult
from harness.runner._suite import find_scenarios, load_for_target, run_suite
from harness.scenario import ScenarioError, parse_scenario

__all__ = ["main"]

_STYLE = {"valid": "green", "invalid": "bold red", "unknown": "yellow", "error": "bold magenta"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness run", description="Run scenarios against a session server.")
    p.add_argument("scenarios", nargs="*", help="scenario files, folders, or names under scenarios/")
    p.add_argument(
        "--suite",
        metavar="NAME",
        help="add a named suite of scenarios/: default, all, or a profile in scenarios/suites/ (ci)",
    )
    p.add_argument("--variant", help="run every scenario against this server variant (a+b for several; default)")
    p.add_argument("--seed", type=int, help="override every scenario's seed")
    p.add_argument("--out", default="reports/latest", help="output folder (default reports/latest)")
    p.add_argument("--mode", default="live", choices=("live", "sim"), help="live (processes, sockets) or sim")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--tokenizer",
        metavar="NAME|DIR",
        help="override every scenario's tokenizer (fake and servers): a shipped family or a local tokenizer dir",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios (name, default suite, description) and exit")
    yours = p.add_argument_group("your own server (docs/your_server.md); replaces every scenario's [target]")
    yours.add_argument(
        "--server-cmd",
        metavar="CMD",
        help="start your server with this command, one process per scenario process: placeholders {port} "
        "{host} {backend_url} {tokenizer} {index} {log_file} {python}",
    )
    yours.add_argument("--processes", type=int, help="with --server-cmd: this many processes (default: the scenario's)")
    yours.add_argument(
        "--url", action="append", metavar="URL", help="a running session-server process (repeat for each process)"
    )
    yours.add_argument(
        "--backend-url", metavar="URL", help="with --url: the fake SGLang behind it (each scenario's plan is pushed)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="unknown verdicts and declared-but-not-exercised faults fail the run (exit 1), as checks.strict does",
    )
    p.add_argument(
        "--server-log",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="live: a log file of the server under test (repeatable); what it gains during the run is read",
    )
    sim = p.add_argument_group("sim mode (docs/sim.md)")
    sim.add_argument("--strategy", default="random", choices=("random", "pct", "fifo"), help="scheduling strategy")
    sim.add_argument("--depth", type=int, default=3, help="pct: bug depth d (d-1 priority change points)")
    sim.add_argument("--target", help="asgi:module:factory: your own ASGI session server instead of the reference")
    return p


def _table(results: list[RunResult]) -> tuple[Table, list[str]]:
    """Runs as rows, checkers as numbered columns (a legend follows: names are long)."""
    checkers: list[str] = []
    for r in results:
        for v in r.verdicts:
            if v["checker"] not in checkers:
                checkers.append(v["checker"])
    t = Table(title="scenario x checker (v valid, X invalid (violations), ? unknown)")
    t.add_column("run", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("s", justify="right", no_wrap=True)
    t.add_column("slo", no_wrap=True)
    for i, _ in enumerate(checkers, 1):
        t.add_column(str(i), justify="center")
    marks = {"valid": "v", "invalid": "X", "unknown": "?"}
    for r in results:
        by = {v["checker"]: v for v in r.verdicts}
        cells = []
        for c in checkers:
            cell = by.get(c)
            if cell is None:
                cells.append("-")
                continue
            st = str(cell["status"])
            n = len(cell.get("violations") or [])
            cells.append(f"[{_STYLE.get(st, '')}]{marks.get(st, st)}{n if n else ''}[/]")
        slo = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]"}.get(r.slo, "-")
        t.add_row(r.run_dir.name, f"[{_STYLE.get(r.status, '')}]{r.status}[/]", f"{r.duration_s:.1f}", slo, *cells)
    legend = [f"{i}={c}" for i, c in enumerate(checkers, 1)]
    return t, legend


def _sigterm_as_interrupt() -> Callable[[], None]:
    """SIGTERM (a CI job cancelled, ``kill``) takes the Ctrl-C path: every server process is stopped."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _target_from_args(args: argparse.Namespace) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``[target]`` table that ``--server-cmd`` / ``--url`` ask for, and those flags for the replay line.

    Raises ScenarioError (exit 2) for flags that do not go together or a command or URL that cannot work.
    """
    flag = "--server-cmd" if args.server_cmd is not None else "--url" if args.url else None
    if flag is None:
        for name, value in (("--processes", args.processes), ("--backend-url", args.backend_url)):
            if value is not None:
                needs = "--server-cmd" if name == "--processes" else "--url"
                raise ScenarioError(name, "", f"only goes with {needs}")
        return None, []
    if args.server_cmd is not None and args.url:
        raise ScenarioError("--server-cmd", "", "give --server-cmd (the harness starts your server) or --url, not both")
    if args.mode == "sim":
        raise ScenarioError(flag, "", "live mode only; in sim mode give --target asgi:module:factory")
    if args.variant is not None:
        msg = f"the harness cannot switch your server's variant; leave --variant out with {flag}"
        raise ScenarioError("--variant", "", msg)
    if args.server_cmd is not None:
        if args.backend_url is not None:
            msg = "only goes with --url (with --server-cmd the harness starts the fake)"
            raise ScenarioError("--backend-url", "", msg)
        if args.processes is not None and not 1 <= args.processes <= 64:
            raise ScenarioError("--processes", "", f"must be 1..64, got {args.processes}")
        table: dict[str, Any] = {"kind": "command", "cmd": args.server_cmd}
        if args.processes is not None:
            table["processes"] = args.processes
        parse_scenario({"target": table}, "--server-cmd")  # the command on its own: quotes, placeholders, {port}
        replay = ["--server-cmd", args.server_cmd]
        if args.processes is not None:
            replay += ["--processes", str(args.processes)]
        return table, replay
    if args.processes is not None:
        raise ScenarioError("--processes", "", "only goes with --server-cmd (with --url, one process per --url)")
    table = {"kind": "urls", "urls": list(args.url)}
    if args.backend_url is not None:
        table["backend_url"] = args.backend_url
    parse_scenario({"target": table}, flag)  # http(s) URLs
    for u in args.url:
        try:
            httpx.get(f"{u.rstrip('/')}/health", timeout=5.0)
        except httpx.HTTPError as exc:
            msg = f"cannot reach {u}/health ({type(exc).__name__}); is the server running?"
            raise ScenarioError("--url", "", msg) from None
    replay = [x for u in args.url for x in ("--url", u)]
    if args.backend_url is not None:
        replay += ["--backend-url", args.backend_url]
    return table, replay


def _warn_target(table: dict[str, Any] | None, scenarios: list[Any]) -> None:
    """Say before anything runs what this target cannot do, on stderr: the user must not miss it."""
    if table is None or table.get("kind") != "urls":
        return
    backend = table.get("backend_url")
    why = None
    if backend is None:
        why = "no --backend-url"
    else:
        try:
            r = httpx.get(f"{backend.rstrip('/')}/admin/plan", timeout=5.0)
            if r.status_code != 200:
                why = f"{backend} answers {r.status_code} to GET /admin/plan (not a fake SGLang?)"
        except httpx.HTTPError as exc:
            why = f"cannot reach {backend}/admin/plan ({type(exc).__name__})"
    if why is not None:
        print(
            f"harness run: {why}: the scenarios' fault plans cannot be applied to the backend; "
            "their fault-driven checks will be unknown",
            file=sys.stderr,
        )
    kills = [sc.name for sc in scenarios if sc.chaos.kill_restart]
    if kills:
        print(
            f"harness run: {', '.join(kills)} kill and restart server processes, which the harness cannot do to "
            "servers it did not start (--url): reported unknown; use --server-cmd to test them",
            file=sys.stderr,
        )


def _needs(sc: Any) -> str:
    """What a scenario needs from its target, for ``run --list``."""
    out = []
    if sc.chaos.kill_restart:
        out.append("process control")
    n = sc.target.processes if sc.chaos.wrong_process_probes > 0 else 1
    n = max([n] + [k.process + 1 for k in sc.chaos.kill_restart])
    if n > 1:
        out.append(f">= {n} processes")
    if sc.fault_classes():
        out.append("backend faults")
    return ", ".join(out)


def _list(names: list[str], suite: str | None) -> int:
    from harness.scenario import load_scenario

    try:
        paths = find_scenarios(names, suite or ("all" if not names else None))
        scenarios = [load_scenario(p) for p in paths]
    except ScenarioError as exc:
        print(f"harness run: {exc}", file=sys.stderr)
        return 2
    t = Table(title="scenarios")
    t.add_column("name", no_wrap=True)
    t.add_column("default")
    t.add_column("runs", justify="right")
    t.add_column("needs")
    t.add_column("description")
    for sc in scenarios:
        runs = len(sc.target.compare) or 1
        desc = " ".join(sc.description.split())[:160]
        t.add_row(sc.name, "yes" if sc.default else "", str(runs), _needs(sc), desc)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(t)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # logs and CI: room for one column per checker
    if args.mode == "sim":
        try:
            importlib.import_module("harness.sim.runner")
        except ImportError:
            print("harness run: --mode sim is not available in this build (harness.sim.runner)", file=sys.stderr)
            return 2
    if args.list:
        return _list(args.scenarios, args.suite)
    if args.tokenizer is not None:
        from harness.tokenizer import TokenizerError, resolve_tokenizer

        try:
            resolve_tokenizer(args.tokenizer)
        except TokenizerError as exc:
            print(f"harness run: {exc}", file=sys.stderr)
            return 2
    try:
        target, target_args = _target_from_args(args)
        paths = find_scenarios(args.scenarios, args.suite)
        if not paths:
            print("harness run: no scenarios given (name files, or --suite default)", file=sys.stderr)
            return 2
        loaded = [load_for_target(p, target) for p in paths]
    except ScenarioError as exc:
        print(f"harness run: {exc}", file=sys.stderr)
        return 2
    missing = [str(f) for f in args.server_log if not f.is_file()]
    if missing or (args.server_log and args.mode == "sim"):
        why = f"no such file: {', '.join(missing)}" if missing else "needs --mode live (a simulation has no log files)"
        print(f"harness run: --server-log {why}", file=sys.stderr)
        return 2
    _warn_target(target, loaded)
    out = Path(args.out)
    results: list[RunResult] = []
    restore = _sigterm_as_interrupt()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=1)

        def on_start(name: str, sessions: int) -> None:
            bar.reset(task, total=sessions, description=name)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def on_done(r: RunResult) -> None:
            line = f"{r.run_dir.name}: {r.status} in {r.duration_s:.1f} s"
            if r.error:
                line += f" ({r.error})"
            bar.console.print(line)

        try:
            results = run_suite(
                paths,
                out,
                mode=args.mode,
                variant=args.variant,
                seed=args.seed,
                tokenizer=args.tokenizer,
                sim_options={"strategy": args.strategy, "depth": args.depth, "target": args.target}
                if args.mode == "sim"
                else None,
                target=target,
                target_args=target_args,
                live_options={"server_logs": args.server_log} if args.server_log else None,
                on_start=on_start,
                on_progress=on_progress,
                on_done=on_done,
            )
        except (ScenarioError, RunFolderError) as exc:
            print(f"harness run: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: every server process was stopped")
            return 130
        finally:
            restore()
    from harness.report.summary import attention

    strict_failed = False
    table, legend = _table(results)
    console.print(table)
    if legend:
        console.print("  ".join(legend))
    for r in results:
        for v in r.verdicts:
            if v["status"] != "valid":
                first = (v.get("violations") or [{}])[0].get("message") or v.get("notes", "")
                console.print(f"[{_STYLE.get(str(v['status']), '')}]{r.run_dir.name} {v['checker']}[/]: {first}")
        for n in r.notes:
            console.print(f"[yellow]{r.run_dir.name}[/]: {n}")
        att = attention(r.run_dir, r.verdicts) if r.status != "error" else None
        if att is not None and att.lines:
            strict_here = args.strict or att.scenario_strict
            style = "bold red" if strict_here else "bold yellow"
            for line in att.lines:
                console.print(f"[{style}]{r.run_dir.name} {line}[/]", soft_wrap=True)
            if strict_here:
                strict_failed = True
        if r.status in ("invalid", "error") or r.slo == "fail":
            replay = r.replay + (f" --mode sim --strategy {args.strategy}" if args.mode == "sim" else "")
            if args.mode == "sim" and args.strategy == "pct":
                replay += f" --depth {args.depth}"
            if args.mode == "sim" and args.target:
                replay += f" --target {args.target}"
            if args.tokenizer is not None:
                replay += f" --tokenizer {args.tokenizer}"
            console.print(f"  replay: {replay}  (history: {r.run_dir}/history.jsonl)", soft_wrap=True)
    console.print(f"run folders under {out}/")
    if any(r.status == "invalid" for r in results):
        return 1
    if any(r.status == "error" or r.slo == "fail" for r in results):
        return 1
    if strict_failed:
        console.print("[bold red]strict[/]: unknown verdicts or unexercised faults fail the run")
        return 1
    return 0
