"""Simulation mode: one scenario run on the deterministic loop, a pure function of (scenario, seed, strategy).

Why: a race that shows up once a week under production load needs one
particular interleaving of a handful of tasks. Live mode waits for the OS to
produce it; simulation *chooses* interleavings from a seed, thousands per
minute, and when one breaks an invariant it replays exactly from that seed.

A run is :func:`harness.runner.drive` (the very agents, workload and nemesis
of live mode) against :func:`harness.sim.world.build_world` (the fake SGLang
and N servers as in-process ASGI apps) on a :class:`~harness.sim.loop.SimLoop`
whose scheduling strategy is seeded from the run seed. It leaves the same run
folder as live mode plus ``trace.txt`` (one line per scheduling step) and
``sim.json`` (seed, strategy, digests), and is judged by the same checkers
and reports. Latency buckets are virtual time, so a p99 is deterministic and
CI can gate on it exactly.

What makes the history replayable (each was a real divergence):
``time.time`` and ``uuid4`` are never read (every clock is ``LoopClock``
at a fixed epoch, every id an ``IdSource`` seeded from the run seed),
``os.getpid()`` is replaced by a pid derived from the process index, and the
trace labels tasks by coroutine name and first-seen order, never by asyncio's
process-global task counter. :func:`history_digest` and the loop's trace
digest are the two fingerprints the determinism tests compare.

``pct`` needs a horizon k (the number of steps over which its change points
fall). It is taken from the step count of a first ``fifo`` run of the
scenario at seed 0, so explore and replay agree on it without passing it
around.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.rundata import RunData
from harness.runfolder import prepare_run_dir
from harness.runner._drive import Progress, drive
from harness.runner._live import Phase, RunResult, apply_overrides, finish_run
from harness.scenario import Scenario
from harness.seams import LoopClock
from harness.sim.loop import SimLoop, run
from harness.sim.strategies import Strategy, make_strategy
from harness.sim.world import EPOCH, build_world, running

__all__ = [
    "SIM_FILES",
    "SimOutcome",
    "SimResult",
    "history_digest",
    "pct_horizon",
    "run_scenario",
    "run_sim",
    "simulate",
]

SIM_FILES = {"trace": "trace.txt", "sim": "sim.json"}
STRATEGIES = ("random", "pct", "fifo")
DEFAULT_DEPTH = 3


@dataclass
class SimOutcome:
    """One simulated run in memory: the collected data and the loop's fingerprints."""

    sc: Scenario
    seed: int
    strategy: str
    depth: int
    horizon: int | None
    data: RunData | None
    steps: int
    virtual_s: float
    trace: list[str]
    trace_digest: str
    history_digest: str
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class SimResult:
    """What :func:`run_sim` returns: the run (verdicts, folder) plus how to replay it."""

    run: RunResult
    seed: int
    strategy: str
    depth: int
    horizon: int | None
    steps: int
    virtual_s: float
    trace_digest: str
    history_digest: str

    @property
    def status(self) -> str:
        return self.run.status

    def replay_command(self, scenario_path: str, target: str | None = None, variant: str | None = None) -> str:
        cmd = f"harness replay {scenario_path} --seed {self.seed} --strategy {self.strategy}"
        if self.strategy == "pct":
            cmd += f" --depth {self.depth}"
        if variant:
            cmd += f" --variant {variant}"
        if target:
            cmd += f" --target {target}"
        return cmd


def history_digest(data: RunData) -> str:
    """sha256 over the history and the servers' log lines as canonical JSON: equal means the same run."""
    h = hashlib.sha256()
    for ev in data.history:
        h.update(json.dumps(ev, sort_keys=True, default=str).encode())
        h.update(b"\n")
    h.update(b"--logs--\n")
    for ln in data.server_logs:
        h.update(json.dumps(ln, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


_HORIZONS: dict[tuple[str, str | None], int] = {}


def pct_horizon(sc: Scenario, target: str | None = None) -> int:
    """k for PCT: the step count of a ``fifo`` run of ``sc`` at seed 0 (cached per process).

    A function of the scenario alone (not of the seed explored), so explore,
    replay and ``harness run --mode sim`` agree on it without passing it around.
    """
    base = with_seed(sc, 0)
    key = (json.dumps(base.to_plain(), sort_keys=True, default=str), target)
    k = _HORIZONS.get(key)
    if k is None:
        out = simulate(base, 0, "fifo", target=target, trace=False)
        k = _HORIZONS[key] = max(1, out.steps)
    return k


def _strategy(name: str, seed: int, depth: int, horizon: int | None) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    if name == "pct":
        return make_strategy("pct", seed, depth=depth, horizon=horizon or 10_000)
    return make_strategy(name, seed)


def _plain_json(x: Any) -> Any:
    """What the run folder would give back: checkers see JSON types only, as after RunData.load."""
    return json.loads(json.dumps(x, default=str))


def simulate(
    sc: Scenario,
    seed: int,
    strategy: str = "random",
    *,
    depth: int = DEFAULT_DEPTH,
    horizon: int | None = None,
    target: str | None = None,
    trace: bool = True,
    progress: Progress | None = None,
) -> SimOutcome:
    """Run ``sc`` once on a SimLoop.

    The world (workload, chaos plan, backend draws, server ids) follows
    ``sc.seed``; ``seed`` seeds the strategy. The commands pass one number for
    both (:func:`with_seed`); keeping ``sc`` fixed and varying ``seed``
    explores the interleavings of one workload.
    """
    if strategy == "pct" and horizon is None:
        horizon = pct_horizon(sc, target)
    strat = _strategy(strategy, seed, depth, horizon)
    world = build_world(sc, sc.seed, target=target)
    notes = list(world.notes)
    if any(k == "aiohttp" and w > 0 for k, w in sc.agent.clients.items()):
        notes.append("aiohttp agents run on httpx in simulation (aiohttp cannot take an in-process transport)")

    async def main() -> RunData:
        async with running(world):
            out = await drive(
                sc,
                world.servers,
                backend_url=world.backend_url,
                transport=world.network,
                clock=LoopClock(epoch=EPOCH),
                processes=world.processes,
                progress=progress,
            )
        notes.extend(out.notes)
        out.data.server_logs = world.server_logs()
        return out.data

    loop: SimLoop | None = None
    data: RunData | None = None
    error: str | None = None
    try:
        data, loop = run(main(), strategy=strat)
    except Exception as exc:  # a Deadlock or a boundary crossing is a finding, reported with its trace
        error = f"{type(exc).__name__}: {exc}"
        notes.append(traceback.format_exc())
    if data is not None:
        meta = _sim_meta(seed, strategy, depth, horizon)
        if target:  # a user's own server, not the reference one the scenario's target names
            meta["target"] = target
        data.scenario = _plain_json({**data.scenario, "mode": "sim", "sim": meta})
        data.history = _plain_json(data.history)
        data.server_logs = _plain_json(data.server_logs)
        data.final_states = _plain_json(data.final_states)
        data.backend_executions = _plain_json(data.backend_executions)
    steps = loop.steps if loop is not None else 0
    return SimOutcome(
        sc=sc,
        seed=seed,
        strategy=strategy,
        depth=depth,
        horizon=horizon,
        data=data,
        steps=steps,
        virtual_s=loop.time() if loop is not None else 0.0,
        trace=loop.trace if loop is not None and trace else [],
        trace_digest=loop.digest() if loop is not None else "",
        history_digest=history_digest(data) if data is not None else "",
        notes=notes,
        error=error,
    )


def _sim_meta(seed: int, strategy: str, depth: int, horizon: int | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"seed": seed, "strategy": strategy}
    if strategy == "pct":
        meta.update(depth=depth, horizon=horizon)
    return meta


def with_seed(sc: Scenario, seed: int | None, variant: str | None = None) -> Scenario:
    """The scenario as run with ``seed`` (workload, chaos and backend all follow it) and a variant override."""
    return apply_overrides(sc, variant, seed)


def check(out: SimOutcome) -> list[dict[str, Any]]:
    """The scenario's enabled checkers over an in-memory run (no folder needed)."""
    from harness.verdict import run_checkers

    if out.data is None:
        return []
    return run_checkers(out.data)  # the one checker path (harness/verdict.py): enabled checkers + untestable


def compose_status(verdicts: list[dict[str, Any]], error: str | None = None) -> str:
    if error is not None:
        return "error"
    statuses = [str(v.get("status")) for v in verdicts]
    if "invalid" in statuses:
        return "invalid"
    if "unknown" in statuses or not statuses:
        return "unknown"
    return "valid"


def save_outcome(out: SimOutcome, run_dir: Path) -> None:
    """The run folder (as live), plus trace.txt and sim.json."""
    prepare_run_dir(run_dir.parent, run_dir.name)  # replaces an earlier harness run folder only
    if out.data is not None:
        out.data.save(run_dir)
    (run_dir / SIM_FILES["trace"]).write_text("\n".join(out.trace) + ("\n" if out.trace else ""))
    meta = {
        **_sim_meta(out.seed, out.strategy, out.depth, out.horizon),
        "scenario": out.sc.name,
        "source": out.sc.source,
        "variant": out.sc.variant_label,
        "steps": out.steps,
        "virtual_s": round(out.virtual_s, 9),
        "trace_digest": out.trace_digest,
        "history_digest": out.history_digest,
        "error": out.error,
    }
    (run_dir / SIM_FILES["sim"]).write_text(json.dumps(meta, indent=1, sort_keys=True))
    if out.error is not None:
        (run_dir / "error.txt").write_text("\n".join(out.notes))


def run_sim(
    scenario: Scenario,
    out_dir: Path,
    seed: int | None = None,
    strategy: str = "random",
    depth: int = DEFAULT_DEPTH,
    *,
    horizon: int | None = None,
    variant: str | None = None,
    target: str | None = None,
    run_name: str | None = None,
    progress: Progress | None = None,
    report: bool = True,
    on_phase: Phase | None = None,
) -> SimResult:
    """One simulated run into ``out_dir/<name>``: folder, trace, digests, verdicts and (optionally) the report."""
    sc = with_seed(scenario, seed, variant)
    run_dir = Path(out_dir) / (run_name or sc.name)
    res = RunResult(sc.name, sc.variant_label, sc.seed, run_dir, source=sc.source)
    t0 = time.perf_counter()  # seam-ok: wall-clock duration for the summary table, never in the history
    out = simulate(sc, sc.seed, strategy, depth=depth, horizon=horizon, target=target, progress=progress)
    save_outcome(out, run_dir)
    res.notes.extend(n for n in out.notes if "\n" not in n)
    res.sessions = sc.workload.sessions
    res.events = len(out.data.history) if out.data is not None else 0
    if out.error is not None:
        res.status, res.error = "error", out.error
    finish_run(res, sc, report=report, on_phase=on_phase)
    res.duration_s = time.perf_counter() - t0  # seam-ok: see above
    return SimResult(
        run=res,
        seed=sc.seed,
        strategy=strategy,
        depth=depth,
        horizon=out.horizon,
        steps=out.steps,
        virtual_s=out.virtual_s,
        trace_digest=out.trace_digest,
        history_digest=out.history_digest,
    )


def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    variant_override: str | None = None,
    seed_override: int | None = None,
    *,
    run_name: str | None = None,
    progress: Progress | None = None,
    report: bool = True,
    strategy: str = "random",
    depth: int = DEFAULT_DEPTH,
    target: str | None = None,
    on_phase: Phase | None = None,
) -> RunResult:
    """The live runner's signature, so ``harness run --mode sim`` (harness.runner._suite) can dispatch here.

    A scenario or ``--target`` that simulation cannot build (live URLs, an
    unimportable factory) is an ``error`` run naming the fix, not a traceback.
    """
    try:
        r = run_sim(
            scenario,
            out_dir,
            seed_override,
            strategy,
            depth,
            variant=variant_override,
            target=target,
            run_name=run_name,
            progress=progress,
            report=report,
            on_phase=on_phase,
        )
    except ValueError as exc:
        sc = with_seed(scenario, seed_override, variant_override)
        res = RunResult(sc.name, sc.variant_label, sc.seed, Path(out_dir) / (run_name or sc.name), source=sc.source)
        res.status, res.error = "error", str(exc)
        return res
    r.run.notes.append(
        f"sim: seed {r.seed}, strategy {r.strategy}, {r.steps} steps, {r.virtual_s:.3f} virtual s, "
        f"history digest {r.history_digest[:16]}"
    )
    return r.run
