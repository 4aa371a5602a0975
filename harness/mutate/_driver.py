"""The mutation driver: isolated mutated trees, a baseline, the kill test per mutant, timeouts, a budget.

Why a baseline first: a mutant is "killed" only if the checkers see a
difference. The unmutated ``reference_impl`` is run through the very same
machinery (a copied tree, a forked child) on every case; a case that is not
valid there (a harness false alarm, a scenario aimed at a known-bad variant)
is dropped from the kill test and listed in the summary, and the cases that
stay are ordered cheapest first by their measured baseline seconds, so a
killable mutant dies on the cheapest case that can see it.

Isolation: per mutant, a fresh temp dir holding a copy of ``reference_impl/``
with the one mutated module written into it; nothing in the repository is
ever written. The child is forked from a fork server that pre-imported the
harness (not ``reference_impl``) and loaded the tokenizer, puts the tree first
on ``sys.path`` and checks that ``reference_impl`` really came from it
(harness.mutate._kill). A child that runs past its timeout is killed; its
mutant is ``timeout`` (with the case it was in). ``--budget-s`` stops
starting new mutants; those not started are ``not_run`` and excluded from the
score.

Stage 2 (``live=True``): every stage-1 survivor gets ``harness run --suite
default`` (live: processes and loopback sockets) with the tree first on
``PYTHONPATH`` and the temp dir as working directory (so ``python -m
reference_impl`` in the child processes imports the mutant, not the repo).
Locally one survivor at a time; with ``ray`` each survivor's suite is a Ray
task (``--jobs`` in flight), judged by the same code (docs/distributed.md).

This module is tooling: it reads the wall clock and starts processes, the
protocol code it tests never does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.mutate._equivalent import DEFAULT_EQUIVALENT_FILE, DEFAULT_OUT_OF_CONTRACT_FILE, load_equivalents
from harness.mutate._generate import PROTOCOL_MODULES, Mutant, Position, enumerate_positions, materialize
from harness.mutate._kill import Case, child_main

__all__ = ["MutantResult", "MutationConfig", "MutationRun", "library_cases", "run_mutation"]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "reference_impl"
DEFAULT_LIVE_SUITE = ("--suite", "default")  # stage 2: the ``harness run`` arguments that pick the suite


@dataclass
class MutationConfig:
    modules: Sequence[str] = PROTOCOL_MODULES
    sample: int | None = None  # a seeded choice of this many mutants; None = all
    seed: int = 0
    seeds: Sequence[int] = (0, 1)  # sim seeds per scenario (case)
    scenarios: Sequence[str] | None = None  # scenario names under scenarios/; None = the whole library
    jobs: int = 1
    budget_s: float | None = None
    timeout_s: float | None = None  # per mutant; None = 6 x the baseline's total + 60 s
    ids: Sequence[str] | None = None  # run only these mutant ids
    functions: Sequence[str] | None = None  # only mutants inside these functions ("Session.apply", "parse_answer")
    live: bool = False
    live_timeout_s: float = 900.0
    equivalent_file: Path = DEFAULT_EQUIVALENT_FILE
    out_of_contract_file: Path = DEFAULT_OUT_OF_CONTRACT_FILE
    root: Path = ROOT
    ray: str | None = None  # "local" (a private head) or a cluster address: the kill tests as Ray tasks (#15)
    live_suite: Sequence[str] = DEFAULT_LIVE_SUITE  # stage 2's ``harness run`` selection (tests: a small one)
    # PYTHONHASHSEED of the kill-test children, one round each: the first judges every mutant, each later one
    # re-runs only the survivors (a mutant whose behaviour follows a set's iteration order shows in some
    # processes and not others; a fixed seed makes the verdict reproducible, a second one catches those)
    hash_seeds: Sequence[int] = (0,)


@dataclass
class MutantResult:
    mutant: Mutant
    status: str  # killed | survived | timeout | equivalent | not_run | infra_error (the harness's, not judged)
    stage: str | None = None  # sim | live: the stage that killed (or last ran) it
    killed_by: dict[str, Any] | None = None  # case, checkers, error, first violation
    seconds_to_kill: float | None = None  # kill-test seconds (sum of the cases run, up to the kill)
    cases_run: int = 0
    wall_s: float = 0.0
    reason: str | None = None  # equivalent: why; timeout: in which case
    contract: str | None = None  # listed as out of contract: the promise CONTEXT.md does not make

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.mutant.describe(),
            "status": self.status,
            "stage": self.stage,
            "killed_by": self.killed_by,
            "seconds_to_kill": self.seconds_to_kill,
            "cases_run": self.cases_run,
            "wall_s": round(self.wall_s, 3),
            "reason": self.reason,
            "out_of_contract": self.contract,
        }


@dataclass
class MutationRun:
    config: MutationConfig
    positions: int
    annotation_skipped: int
    rejected: int  # no-op or non-compiling rewrites (not mutants)
    results: list[MutantResult]
    cases: list[Case]
    case_seconds: dict[str, float]
    excluded_cases: dict[str, str]
    timeout_s: float
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    live_baseline: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def score(self) -> float | None:
        """killed / (killed + survived + timeout): equivalent, not-run and infra_error mutants are not counted."""
        c = self.counts()
        judged = c.get("killed", 0) + c.get("survived", 0) + c.get("timeout", 0)
        return c.get("killed", 0) / judged if judged else None

    @property
    def score_in_contract(self) -> float | None:
        """The score without the survivors listed as out of contract (observable, but nothing CONTEXT.md fixes)."""
        c = self.counts()
        judged = c.get("killed", 0) + c.get("survived", 0) + c.get("timeout", 0)
        judged -= sum(1 for r in self.results if r.status == "survived" and r.contract is not None)
        return c.get("killed", 0) / judged if judged else None


def library_cases(root: Path, names: Sequence[str] | None, seeds: Sequence[int]) -> list[Case]:
    """(scenario, variant, seed) for every library scenario (``target.compare`` expanded), every seed.

    A name may carry a shipped tokenizer family, ``tool_retry_rollback:reasoning``: the case runs the fake
    and the server on that family instead of the scenario's (the TITO code paths that only other chat
    templates reach: reasoning blocks, tool turns, header-style turn markers, trailing tokens).
    """
    from harness.scenario import load_scenario
    from harness.tokenizer import SHIPPED

    paths = sorted((root / "scenarios").glob("*.toml"))
    by_name = {p.stem: p for p in paths}
    chosen: list[tuple[Path, str | None]] = [(p, None) for p in paths]
    if names is not None:
        split = [(n.partition(":")[0], n.partition(":")[2] or None) for n in names]
        missing = [n for n, _ in split if n not in by_name]
        if missing:
            raise ValueError(f"unknown scenario(s) {missing}; the library has: {', '.join(sorted(by_name))}")
        bad = [tok for _, tok in split if tok is not None and tok not in SHIPPED]
        if bad:
            raise ValueError(f"unknown tokenizer famil(ies) {bad} (scenario:family); shipped: {', '.join(SHIPPED)}")
        chosen = [(by_name[n], tok) for n, tok in split]
    out: list[Case] = []
    for p, tok in chosen:
        sc = load_scenario(p)
        variants: list[str | None] = list(sc.target.compare) if sc.target.compare else [None]
        for v in variants:
            for s in seeds:
                out.append(Case(str(p), sc.name, v, s, tokenizer=tok))
    return out


# -- isolated trees and children -----------------------------------------------------------


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["harness.mutate._preload"])
    return ctx


def _make_tree(root: Path, work: Path, mutant: Mutant | None) -> Path:
    tree = work / "tree"
    # __pycache__ comes along (copy2 keeps mtimes, so the unmutated modules' bytecode stays valid)
    shutil.copytree(root / PACKAGE, tree / PACKAGE)
    if mutant is not None:
        target = tree / mutant.module
        for stale in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
            stale.unlink()  # our own copy: never let the original's bytecode stand in for the mutant
        target.write_text(mutant.source, encoding="utf-8")
    return tree


@dataclass
class _Job:
    key: str  # mutant id or "baseline"
    mutant: Mutant | None
    work: Path
    cases: list[Case]
    stop_at_first: bool
    timeout_s: float
    proc: Any = None
    started: float = 0.0

    @property
    def results_file(self) -> Path:
        return self.work / "cases.jsonl"


def _start(ctx: Any, root: Path, job: _Job) -> None:
    job.work.mkdir(parents=True)
    tree = _make_tree(root, job.work, job.mutant)
    args = (
        str(tree),
        [asdict(c) for c in job.cases],
        str(job.results_file),
        str(job.work / "child.log"),
        job.stop_at_first,
    )
    job.proc = ctx.Process(target=child_main, args=args, name=f"mutate-{job.key}")
    job.started = time.monotonic()  # seam-ok: tooling
    job.proc.start()


def _read_events(job: _Job) -> list[dict[str, Any]]:
    if not job.results_file.exists():
        return []
    out = []
    for line in job.results_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def _run_jobs(
    ctx: Any,
    root: Path,
    jobs: list[_Job],
    parallel: int,
    deadline: float | None,
    on_done: Callable[[_Job, list[dict[str, Any]], bool, float], None],
) -> list[_Job]:
    """Run jobs ``parallel`` at a time; returns the jobs never started (the budget ran out)."""
    pending = list(jobs)
    running: list[_Job] = []
    try:
        _loop(ctx, root, pending, running, parallel, deadline, on_done)
    finally:  # an interrupt (Ctrl-C, a test timeout) must not leave a child running or a tree behind
        for job in running:
            if job.proc.is_alive():
                job.proc.kill()
            job.proc.join()
            shutil.rmtree(job.work, ignore_errors=True)
    return pending


def _loop(
    ctx: Any,
    root: Path,
    pending: list[_Job],
    running: list[_Job],
    parallel: int,
    deadline: float | None,
    on_done: Callable[[_Job, list[dict[str, Any]], bool, float], None],
) -> None:
    while pending or running:
        now = time.monotonic()  # seam-ok: tooling
        if deadline is not None and now >= deadline and pending and not running:
            return
        while pending and len(running) < max(1, parallel) and (deadline is None or now < deadline):
            job = pending.pop(0)
            _start(ctx, root, job)
            running.append(job)
        multiprocessing.connection.wait([j.proc.sentinel for j in running], timeout=0.5)
        for job in list(running):
            elapsed = time.monotonic() - job.started  # seam-ok: tooling
            timed_out = False
            if job.proc.is_alive():
                if elapsed <= job.timeout_s:
                    continue
                job.proc.kill()
                timed_out = True
            job.proc.join()
            running.remove(job)
            events = _read_events(job)
            shutil.rmtree(job.work, ignore_errors=True)
            on_done(job, events, timed_out, elapsed)


# -- stage 1 judgement ----------------------------------------------------------------------


def _judge_sim(result: MutantResult, events: list[dict[str, Any]], timed_out: bool) -> None:
    done = [e for e in events if e.get("event") == "case"]
    if any(e.get("event") == "isolation_error" for e in events):
        raise RuntimeError(f"mutant {result.mutant.id}: reference_impl was not imported from the mutated tree")
    result.cases_run = len(done)
    result.seconds_to_kill = round(sum(float(e.get("seconds") or 0.0) for e in done), 3)
    result.stage = "sim"
    for e in done:
        if e.get("status") in ("invalid", "error"):
            case = e.get("case") or {}
            result.status = "killed"
            result.killed_by = {
                "case": Case(**case).label if case else "import",
                "scenario": case.get("scenario"),
                "variant": case.get("variant"),
                "seed": case.get("seed"),
                "checkers": e.get("invalid") or [],
                "error": e.get("error"),
                "first_violation": e.get("first_violation"),
            }
            return
    if timed_out:
        started = [e for e in events if e.get("event") == "start"]
        result.status = "timeout"
        result.reason = f"in case {Case(**started[-1]['case']).label}" if started else "before the first case"
        return
    result.status = "survived"


# -- stage 2: the live default suite --------------------------------------------------------

LiveDone = Callable[[str, dict[str, Any]], None]  # (mutant id or "baseline", the suite's result)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started: the runner (its watchdog stops its servers)
    except ProcessLookupError:
        pass
    proc.wait()


def start_guarded(argv: Sequence[str], **popen: Any) -> tuple[subprocess.Popen[bytes], Any]:
    """``argv`` in a session of its own, watched by the runner's orphan watchdog (harness/runner/_watchdog.py).

    Why: a process that is SIGKILLed runs no ``except``/``finally``, so ``_kill_group`` never runs for it, and a
    child in its own session survives it with everything it started: ``ray.cancel(force=True)`` kills a Ray
    worker so, and a live suite's ``harness run`` (its fake, its servers) went on without it (#15). The watchdog
    holds a pipe from this process; when this process dies, however, the pipe closes and the watchdog kills the
    child's group (SIGTERM: the runner stops its servers; SIGKILL after a grace). Returns (child, watchdog);
    ``release_guarded`` after the child ended (or was killed) tells the watchdog to leave it and stops it.
    """
    from harness.runner._procs import _Watchdog

    guard = _Watchdog()
    proc = subprocess.Popen(list(argv), start_new_session=True, **popen)
    guard.send(f"+{proc.pid}")
    return proc, guard


def release_guarded(proc: subprocess.Popen[bytes], guard: Any) -> None:
    guard.send(f"-{proc.pid}")
    guard.close()


def _live_suite(
    root: Path, tree: Path, work: Path, timeout_s: float, suite: Sequence[str] = DEFAULT_LIVE_SUITE
) -> dict[str, Any]:
    """``harness run --suite default`` against ``tree``; exit code and the invalid checkers per run."""
    out = work / "live"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # only verdicts.json is read: no report.html per run (a quarter of a small run's CPU)
    argv = [sys.executable, "-m", "harness.cli", "run", *suite, "--out", str(out), "--quiet", "--no-report"]
    t0 = time.monotonic()  # seam-ok: tooling
    # guarded: a force-cancelled Ray task (its worker SIGKILLed) takes the suite's runner with it (start_guarded)
    proc, guard = start_guarded(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rc: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        rc = None
    except BaseException:  # Ctrl-C, SIGTERM's SystemExit, a cancelled Ray task: the runner must not outlive us
        _kill_group(proc)
        raise
    finally:
        release_guarded(proc, guard)
    invalid: dict[str, list[str]] = {}
    infra = _infra_failure(out) if rc not in (0, None) else None
    for verdicts in sorted(out.glob("*/verdicts.json")):
        try:
            data = json.loads(verdicts.read_text())
        except (OSError, ValueError):
            continue
        rows = data if isinstance(data, list) else data.get("verdicts", [])
        bad = [str(v.get("checker")) for v in rows if isinstance(v, dict) and v.get("status") == "invalid"]
        if bad:
            invalid[verdicts.parent.name] = bad
    res: dict[str, Any] = {"rc": rc, "invalid": invalid, "seconds": round(time.monotonic() - t0, 1)}  # seam-ok: tooling
    if infra is not None and not invalid:
        res["infra"] = infra
    return res


# A run that failed because a server could not take its port: another suite on the node was handed the same free
# port between the runner's ``bind(0)`` and the server's own bind (#15). The harness's failure, not the mutant's.
_BIND_FAILED = ("Address already in use", "EADDRINUSE", "[Errno 98]")
# A server that never answered its health check: a port race too (another process answers, or none), or the tree's
# own doing; told apart by one retry on fresh ports (``live_test``)
_NEVER_LISTENING = ("not healthy after",)


def _infra_failure(out: Path) -> dict[str, str] | None:
    """The first run error under ``out`` that says a server could not bind or never listened, else None."""
    for err in sorted(out.glob("*/error.txt")):
        try:
            text = err.read_text(errors="replace")
        except OSError:
            continue
        for kind, signs in (("bind", _BIND_FAILED), ("listen", _NEVER_LISTENING)):
            for line in text.splitlines():
                if any(sign in line for sign in signs):
                    return {"kind": kind, "run": err.parent.name, "line": line.strip()[:200]}
    return None


def live_test(
    root: Path, mutant: Mutant | None, work: Path, timeout_s: float, suite: Sequence[str] = DEFAULT_LIVE_SUITE
) -> dict[str, Any]:
    """One tree's live suite (``mutant=None``: the unmutated tree) in ``work``, removed after; adds ``wall_s``.

    The same function runs here (serially) and in a Ray task (``harness mutate --live --ray``): every call has
    its own tree and its own ``harness run``, whose servers bind free loopback ports of their own.
    """
    work.mkdir(parents=True)
    t0 = time.monotonic()  # seam-ok: tooling
    try:
        tree = _make_tree(root, work, mutant)
        res = _live_suite(root, tree, work, timeout_s, suite)
        first = res.get("infra")
        if first is not None:  # a server could not bind or never listened: once more, on fresh ports
            shutil.rmtree(work / "live", ignore_errors=True)
            res = _live_suite(root, tree, work, timeout_s, suite)
            res["retried_after"] = first["line"]
            again = res.get("infra")
            if again is not None and again["kind"] == "listen" and first["kind"] == "listen":
                del res["infra"]  # never listening twice on different ports: the tree's own doing, judged as such
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["wall_s"] = time.monotonic() - t0  # seam-ok: tooling
    return res


def _run_live_local(
    root: Path,
    items: list[tuple[str, Mutant | None]],
    base: Path,
    timeout_s: float,
    suite: Sequence[str],
    done: LiveDone,
) -> None:
    for key, mutant in items:
        done(key, live_test(root, mutant, base / f"live-{key}", timeout_s, suite))


def _judge_live(r: MutantResult, res: dict[str, Any]) -> None:
    r.wall_s += float(res.get("wall_s") or 0.0)
    r.stage = "live"
    if res["rc"] is None:
        r.status, r.reason = "timeout", "live default suite"
    elif res["rc"] != 0 and res.get("infra"):
        # the harness could not start a server (a port taken between bind(0) and the server's bind): not a kill
        r.status = "infra_error"
        r.reason = f"harness infrastructure, not the mutant ({res['infra']['run']}): {res['infra']['line']}"
    elif res["rc"] != 0:
        runs = sorted(res["invalid"])
        r.status = "killed"
        r.seconds_to_kill = res["seconds"]
        r.killed_by = {
            "case": f"live:{runs[0]}" if runs else "live",
            "scenario": runs[0] if runs else None,
            "variant": None,
            "seed": None,
            "checkers": res["invalid"].get(runs[0], []) if runs else [],
            "error": None if runs else f"harness run exited {res['rc']}",
            "first_violation": None,
        }


def _stage2(
    cfg: MutationConfig,
    survivors: list[MutantResult],
    base: Path,
    run: MutationRun,
    progress: Callable[[MutantResult], None] | None = None,
) -> None:
    """The live suite of the unmutated tree, then (if it was green) of every survivor: here one at a time, or
    with ``cfg.ray`` as Ray tasks, ``cfg.jobs`` in flight (harness.distributed.mutate.run_live_on_ray).

    Either way a survivor is judged by the same ``_judge_live`` on the same result of the same ``live_test``.
    """
    suite = tuple(cfg.live_suite)
    if cfg.ray is not None:
        from harness.distributed.mutate import run_live_on_ray

        address = None if cfg.ray == "local" else cfg.ray

        def run_items(items: list[tuple[str, Mutant | None]], done: LiveDone) -> None:
            run_live_on_ray(address, cfg.root, PACKAGE, items, cfg.jobs, cfg.live_timeout_s, suite, done, base)
    else:

        def run_items(items: list[tuple[str, Mutant | None]], done: LiveDone) -> None:
            _run_live_local(cfg.root, items, base, cfg.live_timeout_s, suite, done)

    got: dict[str, dict[str, Any]] = {}
    run_items([("baseline", None)], lambda key, res: got.__setitem__(key, res))
    baseline = {k: v for k, v in got["baseline"].items() if k != "wall_s"}
    run.live_baseline = baseline
    if baseline["rc"] != 0:
        run.notes.append(f"live stage skipped: the unmutated server's default suite was not green ({baseline})")
        return
    by_id = {r.mutant.id: r for r in survivors}

    def judged(key: str, res: dict[str, Any]) -> None:
        _judge_live(by_id[key], res)
        if progress is not None:
            progress(by_id[key])

    run_items([(r.mutant.id, r.mutant) for r in survivors], judged)


# -- the whole run ---------------------------------------------------------------------------


def _unique_ids(mutants: list[Mutant]) -> list[Mutant]:
    """Batches were materialized apart: a repeated id (two identical lines of one function) gets a suffix."""
    seen: set[str] = set()
    out = []
    for m in mutants:
        mid, n = m.id, 1
        while mid in seen:
            n += 1
            mid = f"{m.id}-{n}"
        seen.add(mid)
        out.append(m if mid == m.id else dataclasses.replace(m, id=mid))
    return out


def select_mutants(cfg: MutationConfig) -> tuple[list[Mutant], int, int, int]:
    """The mutants of this run (sampled, or by id); the numbers of positions, annotation skips, rejected.

    The sample is a seeded choice over the compiling mutants, so ``--sample N``
    gives N mutants, not N positions some of which do not compile.
    """
    positions, skipped = enumerate_positions(cfg.root, cfg.modules)
    if cfg.functions is not None:
        wanted_fns = set(cfg.functions)
        positions = [p for p in positions if p.function in wanted_fns]
    rejected: list[Position] = []
    if cfg.sample is not None and cfg.ids is None and cfg.sample < len(positions):
        rng = random.Random(cfg.seed)
        order = rng.sample(positions, len(positions))
        mutants: list[Mutant] = []
        i = 0
        while len(mutants) < cfg.sample and i < len(order):
            take = order[i : i + cfg.sample - len(mutants)]
            i += len(take)
            mutants.extend(materialize(cfg.root, take, rejected))
        mutants.sort(key=lambda m: (m.module, m.position.line, m.operator, m.position.occurrence))
        mutants = _unique_ids(mutants)
    else:
        mutants = materialize(cfg.root, positions, rejected)
    if cfg.ids is not None:
        wanted = set(cfg.ids)
        mutants = [m for m in mutants if m.id in wanted]
        missing = wanted - {m.id for m in mutants}
        if missing:
            raise ValueError(f"no mutant with id(s) {sorted(missing)} in {', '.join(cfg.modules)}")
    return mutants, len(positions), skipped, len(rejected)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so the ``finally`` blocks kill the children and remove the temp trees.

    (A background job started from a non-interactive shell ignores SIGINT, so TERM is how one is stopped.)
    """

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@dataclass
class _Baseline:
    kept: list[Case]  # the cases the unmutated tree is valid on, cheapest first
    seconds: dict[str, float]  # every case's baseline seconds
    excluded: dict[str, str]  # cases dropped (not valid on the unmutated tree), with why
    timeout: float  # per mutant


@contextlib.contextmanager
def _hash_seed(seed: int) -> Iterator[None]:
    """Children forked under ``PYTHONHASHSEED=seed``: the fork server is (re)started with it and stopped after.

    Forked children inherit the fork server's hash secret, and the fork server takes this process's
    environment when it starts; so one fork server per seed.
    """
    old = os.environ.get("PYTHONHASHSEED")
    _stop_forkserver()
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        yield
    finally:
        _stop_forkserver()
        if old is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = old


def _baseline(ctx: Any, pristine: Path, work: Path, cases: list[Case], timeout_s: float | None) -> _Baseline:
    """The unmutated tree through the same machinery, every case: which cases stay, their cost, the timeout."""
    events: list[dict[str, Any]] = []

    def keep(job: _Job, ev: list[dict[str, Any]], timed_out: bool, elapsed: float) -> None:
        if timed_out:
            raise RuntimeError(f"baseline kill test timed out after {elapsed:.0f} s")
        events.extend(ev)

    _run_jobs(ctx, pristine, [_Job("baseline", None, work, cases, False, 1800.0)], 1, None, keep)
    if any(e.get("event") == "isolation_error" for e in events):
        raise RuntimeError("baseline: reference_impl was not imported from the copied tree")
    done = {Case(**e["case"]).label: e for e in events if e.get("event") == "case" and e.get("case")}
    if len(done) != len(cases):
        raise RuntimeError(f"baseline ran {len(done)} of {len(cases)} cases: {events[-1:] or 'no output'}")
    excluded = {
        k: f"{e['status']}: {', '.join(e.get('invalid') or []) or e.get('error')}"
        for k, e in done.items()
        if e["status"] in ("invalid", "error")
    }
    kept = [c for c in cases if c.label not in excluded]
    kept.sort(key=lambda c: float(done[c.label]["seconds"]))
    seconds = {c.label: float(done[c.label]["seconds"]) for c in cases}
    total = sum(seconds[c.label] for c in kept)
    # generous: on a shared box a survivor's child (which runs every case) was measured at 10x the
    # baseline's case seconds, and a survivor reported as "timeout" is a verdict lost to load
    timeout = timeout_s if timeout_s is not None else 6.0 * total + 60.0
    return _Baseline(kept, seconds, excluded, timeout)


def _sim_round(
    cfg: MutationConfig,
    pristine: Path,
    work: Path,
    todo: list[Mutant],
    b: _Baseline,
    results: dict[str, MutantResult],
    hash_seed: int,
    n_round: int,
    deadline: float | None,
    progress: Callable[[MutantResult], None] | None,
) -> None:
    """One stage-1 round under one hash seed. Round 0 judges every mutant; a later round re-runs survivors, and
    only a kill changes their verdict (a timeout there leaves them survived, with the reason)."""
    work.mkdir(parents=True)
    jobs = [_Job(m.id, m, work / m.id, b.kept, True, b.timeout) for m in todo]

    def judged(job: _Job, ev: list[dict[str, Any]], timed_out: bool, elapsed: float) -> None:
        r = results[job.key]
        if n_round == 0:
            r.wall_s = elapsed
            _judge_sim(r, ev, timed_out)
        else:
            again = MutantResult(r.mutant, "not_run")
            _judge_sim(again, ev, timed_out)
            r.wall_s += elapsed
            if again.status == "killed":
                r.status, r.killed_by = "killed", again.killed_by
                r.seconds_to_kill = round((r.seconds_to_kill or 0.0) + (again.seconds_to_kill or 0.0), 3)
                r.cases_run += again.cases_run
            elif again.status == "timeout":
                r.reason = f"PYTHONHASHSEED={hash_seed}: timeout {again.reason}"
        if r.status == "killed" and r.killed_by is not None and cfg.ray is None:  # Ray workers keep their own
            r.killed_by.setdefault("hash_seed", hash_seed)
        if progress is not None and (n_round == 0 or r.status == "killed"):
            progress(r)

    # a seeded order: when the budget runs out, the mutants left are a random subset, not the last module
    random.Random(cfg.seed).shuffle(jobs)
    if cfg.ray is not None:
        from harness.distributed.mutate import run_jobs_on_ray

        address = None if cfg.ray == "local" else cfg.ray
        run_jobs_on_ray(address, pristine, PACKAGE, jobs, cfg.jobs, deadline, judged)
    else:
        _run_jobs(_context(), pristine, jobs, cfg.jobs, deadline, judged)


def run_mutation(cfg: MutationConfig, *, progress: Callable[[MutantResult], None] | None = None) -> MutationRun:
    for name in cfg.modules:
        if not name.startswith(PACKAGE + "/") or not (cfg.root / name).is_file():
            raise ValueError(f"--modules: {name!r} is not a module under {PACKAGE}/ (e.g. {PROTOCOL_MODULES[0]})")
    t_start = time.monotonic()  # seam-ok: tooling
    equivalents = load_equivalents(cfg.equivalent_file)
    uncontracted = load_equivalents(cfg.out_of_contract_file)
    both = sorted(set(equivalents) & set(uncontracted))
    if both:
        raise ValueError(
            f"{cfg.out_of_contract_file}: {', '.join(f'{m} {i}' for m, i in both)} also in {cfg.equivalent_file}; "
            "a mutant is either unobservable (equivalent) or observable but unconstrained (out of contract)"
        )
    cases = library_cases(cfg.root, cfg.scenarios, cfg.seeds)
    base = Path(tempfile.mkdtemp(prefix="harness-mutate-"))
    head = contextlib.ExitStack()
    try:
        if cfg.ray is not None:  # one head (or connection) for both stages: a local head costs 10-20 s to start
            from harness.distributed.pool import RayPool

            head.enter_context(RayPool(None if cfg.ray == "local" else cfg.ray, cfg.jobs))
        # one snapshot of the package: mutants and every tree come from it, so an edit to the working copy
        # during a long run (a merge, a colleague's save) cannot mix two versions of the server in one tree
        pristine = base / "pristine"
        shutil.copytree(cfg.root / PACKAGE, pristine / PACKAGE)
        mutants, n_positions, skipped, rejected = select_mutants(dataclasses.replace(cfg, root=pristine))
        results: dict[str, MutantResult] = {}
        for m in mutants:
            eq = equivalents.get((m.module, m.id))
            results[m.id] = (
                MutantResult(m, "equivalent", reason=eq.reason) if eq is not None else MutantResult(m, "not_run")
            )
            oc = uncontracted.get((m.module, m.id))
            results[m.id].contract = None if oc is None else oc.reason
        deadline = None if cfg.budget_s is None else t_start + cfg.budget_s
        first: _Baseline | None = None
        for n_round, hash_seed in enumerate(cfg.hash_seeds):
            if n_round == 0:
                todo = [m for m in mutants if results[m.id].status == "not_run"]
            else:
                todo = [m for m in mutants if results[m.id].status == "survived"]
                if not todo:
                    break
            with _hash_seed(hash_seed):
                b = _baseline(_context(), pristine, base / f"baseline-{n_round}", cases, cfg.timeout_s)
                _sim_round(
                    cfg, pristine, base / f"round-{n_round}", todo, b, results, hash_seed, n_round, deadline, progress
                )
            if first is None:
                first = b
            else:
                first.excluded.update({f"{k} (PYTHONHASHSEED={hash_seed})": v for k, v in b.excluded.items()})
        assert first is not None
        kept, seconds, excluded, timeout = first.kept, first.seconds, first.excluded, first.timeout
        run = MutationRun(
            cfg,
            n_positions,
            skipped,
            rejected,
            [results[m.id] for m in mutants],
            kept,
            seconds,
            excluded,
            timeout,
            0.0,
        )
        if cfg.live:
            survivors = [r for r in run.results if r.status == "survived"]
            _stage2(dataclasses.replace(cfg, root=pristine), survivors, base, run, progress)
        run.elapsed_s = time.monotonic() - t_start  # seam-ok: tooling
        return run
    finally:
        head.close()
        shutil.rmtree(base, ignore_errors=True)
        _stop_forkserver()


def _stop_forkserver() -> None:
    """The fork server would otherwise live as long as this process (a test session, say)."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()
