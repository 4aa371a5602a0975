"""``harness run``: run scenarios, check them, report; exit codes from the one verdict (harness/verdict.py).

0 pass, 1 a violation / failed SLO / regression / crashed run, 2 bad input,
3 cannot judge (only with ``--fail-on-unknown`` or ``[checks] fail_on_unknown``).

Every input is validated before anything starts (scenario files, ``--variant``,
``--target``, ``--tokenizer``, the target flags, ``--server-log``, the run
folders): bad input is one line naming what and the fix, exit 2, no replay
line for a run that never happened. A bad scenario is the user's input
error, not a crash: it is printed as one line naming the file, the key and
the fix, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.distributed import add_ray_option
from harness.runfolder import RunFolderError
from harness.runner._live import RunResult
from harness.runner._suite import check_variant, expand, find_scenarios, load_for_target, run_suite
from harness.scenario import ScenarioError, parse_scenario
from harness.verdict import EXIT_BAD_INPUT, Judgement, judge, suite_exit

__all__ = ["main"]


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
        "--fail-on-unknown",
        action="store_true",
        help="a run with an unknown verdict (or an SLO without samples) cannot be judged: exit 3 instead of 0, "
        "as checks.fail_on_unknown does",
    )
    p.add_argument("--no-report", action="store_true", help="write and judge the verdicts, skip the reports")
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="latency gate: judge each run against DIR/<run name> (a baseline run folder, e.g. reports/baselines; "
        "runs without one are not gated); a regression fails the run (exit 1), a refusal is unknown",
    )
    p.add_argument(
        "--server-log",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="live: a log file of the server under test (repeatable); what it gains during the run is read",
    )
    add_ray_option(p, "live: run the sessions on Ray agent actors (a local head on 127.0.0.1, or a cluster ADDRESS)")
    p.add_argument("--agents-per-node", type=int, default=1, metavar="K", help="with --ray: agent actors per node")
    sim = p.add_argument_group("sim mode (docs/sim.md)")
    sim.add_argument("--strategy", default="random", choices=("random", "pct", "fifo"), help="scheduling strategy")
    sim.add_argument("--depth", type=int, default=3, help="pct: bug depth d (d-1 priority change points)")
    sim.add_argument("--target", help="asgi:module:factory: your own ASGI session server instead of the reference")
    return p


REDELIVER_S = 0.05  # a KeyboardInterrupt Python dropped is raised again this long after (SIGTERM once more)


class _Interrupt:
    """SIGTERM (a CI job cancelled, ``kill``) takes the Ctrl-C path (every server process is stopped), and is
    never lost.

    Raised straight from the signal handler, the ``KeyboardInterrupt`` landed in whatever frame ran: inside a
    weakref callback or a ``__del__`` Python prints "Exception ignored in ..." and drops it, and the run went
    on to check and report (seen in bench_rss_growth, issue 13). So the signal is first remembered
    (``terminated``), then:

    - while an asyncio loop runs (the workload, the collection), the loop is woken
      (``call_soon_threadsafe``, its self-pipe) and raises it from its own dispatch, never from a callback
      deep in a frame; asyncio.run then cancels every task, whose ``finally`` blocks stop the processes;
    - otherwise (saving, checking, reporting: plain code) it is raised where the handler runs, and if
      Python drops it (``sys.unraisablehook`` sees a dropped ``KeyboardInterrupt``) a timer thread sends
      the main thread SIGTERM again ``REDELIVER_S`` later (``signal.pthread_kill``: it wakes a ``sleep`` or
      a ``select`` as the first one did), so it is raised once more in another frame;
    - and a run that ends with a SIGTERM remembered but never raised through (``pending``) ends as
      interrupted all the same (``_run``).

    SIGALRM is not touched (it used to carry the re-raise): it is pytest-timeout's and anyone's, with their
    timer. The timer thread is tooling (this CLI, never protocol code, never in a simulation); it only ever
    sends a signal, under ``_lock``, while installed and the interrupt is still pending, and ``restore``
    cancels it.
    """

    def __init__(self) -> None:
        self.terminated = False
        self.delivered = False
        self._previous: Any = None
        self._previous_hook: Any = None
        self._lock = threading.RLock()  # re-entrant: a weakref callback can run (GC) while it is held
        self._installed = False
        self._timer: threading.Timer | None = None
        self._redelivering = False

    @property
    def pending(self) -> bool:
        return self.terminated and not self.delivered

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        self._previous = signal.signal(signal.SIGTERM, self._on_term)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable
        self._installed = True
        return self.restore

    def restore(self) -> None:
        with self._lock:  # a redelivery is sent under it: none after this
            self._installed = False
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self._previous_hook is not None:
            sys.unraisablehook = self._previous_hook
            self._previous_hook = None
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_term(self, signum: int, frame: Any) -> None:
        if self._redelivering:  # our own SIGTERM again: only if the interrupt is still owed
            self._redelivering = False
            if not self.pending:
                return
        self.terminated = True
        self._deliver()

    def _deliver(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._raise)  # raised by the loop's dispatch, not inside this frame
            return
        self._raise()

    def _raise(self) -> None:
        raise KeyboardInterrupt

    def _on_unraisable(self, unraisable: Any) -> None:
        if self._previous_hook is not None:
            self._previous_hook(unraisable)
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.pending:
            self._redeliver_later()  # dropped where it landed: again, elsewhere

    def _redeliver_later(self) -> None:
        with self._lock:
            if not self._installed or (self._timer is not None and self._timer.is_alive()):
                return
            timer = threading.Timer(REDELIVER_S, self._redeliver)  # seam-ok: tooling (the CLI), see the docstring
            timer.daemon = True
            self._timer = timer
        timer.start()

    def _redeliver(self) -> None:
        main = threading.main_thread().ident
        with self._lock:
            self._timer = None
            if not self._installed or not self.pending or main is None:
                return
            self._redelivering = True
            if hasattr(signal, "pthread_kill"):
                signal.pthread_kill(main, signal.SIGTERM)  # delivered to the main thread: a sleep there wakes
            else:  # pragma: no cover - no POSIX threads' signals (Windows): the handler runs at the next bytecode
                import _thread

                _thread.interrupt_main(signal.SIGTERM)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """SIGTERM takes the Ctrl-C path and is never lost (:class:`_Interrupt`); returns the undo."""
    return _Interrupt().install()


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
    console = Console()  # COLUMNS wide (80 in a log)
    width = max(40, console.width)
    for sc in scenarios:
        runs = len(sc.target.compare) or 1
        facts = ["default suite" if sc.default else "", f"{runs} run{'s' if runs > 1 else ''}"]
        needs = _needs(sc)
        if needs:
            facts.append(f"needs {needs}")
        print(f"{sc.name}  ({', '.join(f for f in facts if f)})")
        desc = " ".join(sc.description.split())
        # word boundaries only: a long word (a header name, a path) overflows rather than being cut
        for line in textwrap.wrap(
            desc,
            width=width,
            initial_indent="    ",
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        ):
            print(line)
    print(f"{len(scenarios)} scenario(s); `harness run NAME` runs one, `--suite default` the default suite")
    return 0


def _check_sim_target(spec: str | None, scenarios: list[Any]) -> None:
    """``--target asgi:module:factory`` importable and callable before anything starts (ScenarioError)."""
    if spec is None or not scenarios:
        return
    from harness.sim.world import load_target

    try:
        load_target(spec, scenarios[0])
    except ValueError as exc:
        raise ScenarioError("--target", "", str(exc).removeprefix(f"--target {spec!r}: ")) from None
    except Exception as exc:  # the user's module raised while importing: still their input, not our crash
        raise ScenarioError("--target", "", f"importing {spec!r} raised {type(exc).__name__}: {exc}") from None


def _validate(args: argparse.Namespace) -> tuple[list[Path], list[Any], dict[str, Any] | None, list[str]]:
    """Every command-line input, before anything starts; ScenarioError (or RunFolderError) is exit 2."""
    from harness.runfolder import check_run_dir

    if args.depth < 1:
        raise ScenarioError("--depth", "", f"must be >= 1, got {args.depth}")
    if args.seed is not None and args.seed < 0:
        raise ScenarioError("--seed", "", f"must be >= 0, got {args.seed}")
    if args.mode != "sim":
        for flag, value in (("--target", args.target), ("--strategy", None if args.strategy == "random" else 1)):
            if value is not None:
                raise ScenarioError(flag, "", "only goes with --mode sim")
    check_variant(args.variant)
    if args.tokenizer is not None:
        from harness.tokenizer import TokenizerError, resolve_tokenizer

        try:
            resolve_tokenizer(args.tokenizer)
        except TokenizerError as exc:
            raise ScenarioError("--tokenizer", "", str(exc).removeprefix("--tokenizer ")) from None
    target, target_args = _target_from_args(args)
    paths = find_scenarios(args.scenarios, args.suite)
    if not paths:
        raise ScenarioError("harness run", "", "no scenarios given (name files, or --suite default)")
    loaded = [load_for_target(p, target) for p in paths]
    missing = [str(f) for f in args.server_log if not f.is_file()]
    if missing or (args.server_log and args.mode == "sim"):
        why = f"no such file: {', '.join(missing)}" if missing else "needs --mode live (a simulation has no log files)"
        raise ScenarioError("--server-log", "", why)
    if args.mode == "sim":
        _check_sim_target(args.target, loaded)
    if args.baseline is not None and not args.baseline.is_dir():
        raise ScenarioError("--baseline", "", f"no such folder: {args.baseline}")
    for sc in loaded:  # every run folder can be written (a user's own folder is never replaced)
        for _one, name in expand(sc, args.variant):
            check_run_dir(Path(args.out), name)
    return paths, loaded, target, target_args


def _replay(args: argparse.Namespace, r: RunResult) -> str:
    replay = r.replay + (f" --mode sim --strategy {args.strategy}" if args.mode == "sim" else "")
    if args.mode == "sim" and args.strategy == "pct":
        replay += f" --depth {args.depth}"
    if args.mode == "sim" and args.target:
        replay += f" --target {args.target}"
    if args.tokenizer is not None:
        replay += f" --tokenizer {args.tokenizer}"
    return replay


class _Overall:
    """One progress line over the whole suite: runs done, sessions done, the phase, elapsed and ETA.

    A terminal gets a live bar (rich); a log (not a tty) gets a plain line per run and phase, with the
    ETA estimated from the sessions done so far, so a CI log shows what is running and what is left.
    """

    def __init__(self, console: Console, runs: list[tuple[str, int]], quiet: bool) -> None:
        self.console, self.runs, self.quiet = console, runs, quiet
        self.total = max(1, sum(n for _, n in runs))
        self.base = 0  # sessions of the runs already done
        self.index = 0
        self.name = ""
        self.live = console.is_terminal and not quiet
        self.t0 = time.monotonic()  # seam-ok: the CLI's own ETA, never in a history
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=self.total)

    def __enter__(self) -> _Overall:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def _label(self, phase: str) -> str:
        return f"[{self.index}/{len(self.runs)}] {self.name}: {phase}"

    def _plain(self, phase: str) -> None:
        if self.quiet or self.live:
            return
        elapsed = time.monotonic() - self.t0  # seam-ok: see __init__
        eta = ""
        if self.base:
            eta = f", ETA {max(0.0, elapsed / self.base * (self.total - self.base)):.0f} s"
        self.console.print(f"{self._label(phase)} (elapsed {elapsed:.0f} s{eta})", markup=False, highlight=False)

    def start(self, name: str, sessions: int) -> None:
        if self.index:
            self.base += self.runs[self.index - 1][1]
        self.index += 1
        self.name = name
        self.bar.update(self.task, completed=self.base, description=self._label("running"))
        self._plain("running")

    def progress(self, done: int, total: int) -> None:
        current = self.runs[self.index - 1][1] if self.index else total
        self.bar.update(self.task, completed=self.base + min(done, current))

    def phase(self, run: str, phase: str) -> None:
        if not run:  # the suite's own report, after the last run
            self.base, self.index, self.name = self.total, len(self.runs), "suite"
        self.bar.update(self.task, description=self._label(phase))
        self._plain(phase)

    def done(self, line: str) -> None:
        if not self.quiet:
            self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()  # COLUMNS wide (80 in a log): the summary is written for 80 columns
    if args.mode == "sim":
        try:
            importlib.import_module("harness.sim.runner")
        except ImportError:
            print("harness run: --mode sim is not available in this build (harness.sim.runner)", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.list:
        return _list(args.scenarios, args.suite)
    try:
        paths, loaded, target, target_args = _validate(args)
    except (ScenarioError, RunFolderError) as exc:
        print(f"harness run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _warn_target(target, loaded)
    live_options: dict[str, Any] = {"server_logs": args.server_log} if args.server_log else {}
    if args.ray is not None:
        try:
            ray_live, why = _ray_live(args)
        except KeyboardInterrupt:  # Ctrl-C while the Ray head started: it was shut down once up (distributed/pool.py)
            console.print("[bold red]interrupted[/]: the Ray head was shut down; no run was started")
            return 130
        if ray_live is None:
            print(f"harness run: {why}", file=sys.stderr)
            return EXIT_BAD_INPUT
        live_options["ray"] = ray_live
    elif args.agents_per_node != 1:
        print("harness run: --agents-per-node needs --ray", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _run(args, console, paths, loaded, target, target_args, live_options)
    finally:
        if "ray" in live_options:
            live_options["ray"].shutdown()


def _ray_live(args: argparse.Namespace) -> tuple[Any, str]:
    """``--ray``: the agent actors' Ray connection, or (None, why not)."""
    if args.mode != "live":
        return None, "--ray runs live sessions on agent actors: not with --mode sim (harness explore --ray is)"
    if args.agents_per_node < 1:
        return None, f"--agents-per-node must be >= 1, not {args.agents_per_node}"
    from harness.distributed.live import RayLive
    from harness.distributed.pool import RayUnavailable

    try:
        return RayLive(None if args.ray == "local" else args.ray, args.agents_per_node), ""
    except (RayUnavailable, ConnectionError, RuntimeError, ValueError) as exc:  # no Ray, or no cluster there
        return None, f"--ray {args.ray}: {exc}" if not isinstance(exc, RayUnavailable) else str(exc)


def _run(
    args: argparse.Namespace,
    console: Console,
    paths: list[Path],
    loaded: list[Any],
    target: dict[str, Any] | None,
    target_args: list[str],
    live_options: dict[str, Any],
) -> int:
    out = Path(args.out)
    runs = [(name, one.workload.sessions) for sc in loaded for one, name in expand(sc, args.variant)]
    results: list[RunResult] = []
    interrupt = _Interrupt()
    restore = interrupt.install()
    with _Overall(console, runs, args.quiet) as overall:

        def on_done(r: RunResult) -> None:
            j = r.judgement
            word = j.verdict.upper() if j is not None else "FAIL"
            why = f" ({r.error})" if r.error else ""
            overall.done(f"[{overall.index}/{len(runs)}] {r.run_dir.name}: {word} in {r.duration_s:.1f} s{why}")

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
                live_options=live_options or None,
                strict=args.strict,
                fail_on_unknown=args.fail_on_unknown,
                report=not args.no_report,
                on_start=overall.start,
                on_progress=overall.progress,
                on_phase=overall.phase,
                on_done=on_done,
            )
        except (ScenarioError, RunFolderError) as exc:
            print(f"harness run: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            interrupt.delivered = True
            console.print("[bold red]interrupted[/]: every server process was stopped")
            return 130
        finally:
            restore()
    if interrupt.pending:  # a SIGTERM whose interrupt Python dropped and the run outran: not lost
        console.print("[bold red]interrupted[/] (SIGTERM): every server process was stopped")
        return 130
    return _summarize(console, args, results, out)


def _summarize(console: Console, args: argparse.Namespace, results: list[RunResult], out: Path) -> int:
    """The k6-like end-of-run summary (harness/runner/_summary.py) and the suite's exit code."""
    from harness.runner._summary import render_run, render_suite

    judgements: list[Judgement] = []
    width = console.width
    for r in results:
        j = r.judgement
        if j is None:  # the run never reached its verdict (it crashed before writing a folder)
            j = judge(r.run_dir, verdicts=[], error=r.error or "no verdict", strict=args.strict)
        elif args.baseline is not None and (args.baseline / r.run_dir.name).is_dir() and not r.error:
            from harness.verdict import gate_for_run

            j = judge(r.run_dir, verdicts=j.verdicts, gate=gate_for_run(args.baseline / r.run_dir.name, r.run_dir))
        judgements.append(j)
        report = r.run_dir / "report.html"
        lines = render_run(
            j,
            width=width,
            duration_s=r.duration_s,
            report=report if report.is_file() else None,
            replay=_replay(args, r) if j.exit_code != 0 else None,
            history=r.run_dir / "history.jsonl" if j.exit_code != 0 else None,
            notes=r.notes,
        )
        console.print("")
        for line in lines:
            console.print(line, soft_wrap=True, highlight=False)
    code = suite_exit(judgements)
    console.print("")
    suite_report = not args.no_report and (out / "report.html").is_file()
    for line in render_suite(judgements, code, out_dir=out, report=suite_report, width=width):
        console.print(line, soft_wrap=True, highlight=False)
    return code
