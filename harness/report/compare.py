"""The CI latency gate: did a percentile of a bucket regress against a baseline?

A single p99 against a single number is noise on a shared 2-core CI box, so
the gate is built to be honest rather than twitchy:

- **Refuse below a minimum sample count.** A p99 needs samples beyond it; by
  default a side needs ``10 / (1 - p)`` samples (1000 for p99, 20 for p50).
  Fewer, and the answer is "cannot judge" (exit 3), never a pass or a fail.
- **Bootstrap the difference.** The statistic is the relative change
  ``current / baseline - 1`` of the percentile. Its confidence interval comes
  from resampling both sides (seeded). A regression is called only when the
  interval's *lower* bound exceeds the threshold; a point estimate over the
  threshold with an interval that reaches below it is "inconclusive" (exit 0,
  said loudly).
- **Repeated runs.** Each side may be several run folders. ``pooled`` treats
  all their samples as one set; ``per-run`` resamples runs first and then
  samples within them (a hierarchical bootstrap), so between-run variance (a
  noisy neighbour during one run) widens the interval instead of hiding.
- **A/B on one machine.** ``ab`` mode pairs baseline run i with current run i
  (run them interleaved: A1 B1 A2 B2 ...). Each pair's ratio cancels the
  machine's drift; the statistic is the geometric mean of the pair ratios.
  Against a baseline recorded elsewhere, use a generous threshold; to gate on
  small effects, run both builds here with ``ab``.

- **Say when the machine moved.** With one run per side the interval only
  covers sampling noise within a run, and the result says so (``--min-runs``
  refuses outright). The backend's own latency is seeded, so its median
  (``proxy_elapsed_ms`` p50) is a control: when it moved beyond the threshold
  between the sides, a ``control:`` note warns that the machine was not
  equally loaded.

- **Exact for deterministic runs.** Simulation runs (``sim.json`` in the run
  folder) measure virtual time: the same code and seed give the same samples
  on any machine, so there is no noise to bootstrap. When every run on both
  sides is a simulation run the gate compares the percentiles exactly
  (``exact`` mode): a regression is a change above the threshold, full stop.

- **Every bucket, each with two bounds.** :func:`gate_verdict` judges every
  bucket the scenario's ``[gate]`` names (default: the five server buckets at
  p99) in one call. A bucket regressed only when its percentile rose by more
  than its relative ``threshold`` *and* by more than its absolute
  ``floor_ms``: a near-zero bucket (``lock_wait_ms`` about 0.001 ms) has
  enormous relative noise, and only the floor tells 0.001 -> 0.3 ms (noise)
  from 0.001 -> 13 ms (a lock held across the backend call).

Exit codes: 0 no regression (pass, improved or inconclusive), 1 regression,
2 bad input, 3 refused (too few samples or runs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.report.buckets import SERIES, LatencyData, extract, run_variant
from harness.report.build import find_runs, is_run_dir
from harness.report.scan import lean_run
from harness.report.stats import HIGHEST_US, bootstrap_order_statistic, nearest_rank
from harness.rundata import RUN_FILES
from harness.scenario import GATE_BUCKETS, BucketGate
from harness.verdict import EXIT_BAD_INPUT as V_BAD_INPUT
from harness.verdict import EXIT_CANNOT_JUDGE, EXIT_FAIL, EXIT_PASS, worst_exit

__all__ = [
    "DEFAULT_FLOOR_MS",
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_REGRESSION",
    "MODES",
    "BucketBounds",
    "CompareError",
    "Comparison",
    "GateResult",
    "compare",
    "compare_samples",
    "default_min_samples",
    "exit_code",
    "gate_verdict",
    "load_samples",
    "resolve_gate",
    "resolve_runs",
    "scenario_gate",
]

# the exit codes of every command (harness/verdict.py): pass, regression, bad input, cannot judge
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_REFUSED = EXIT_PASS, EXIT_FAIL, V_BAD_INPUT, EXIT_CANNOT_JUDGE
MODES = ("pooled", "per-run", "ab", "exact")
_FLOOR_MS = 1e-3  # 1 us: a percentile of 0 compares as 1 us, not as a division by zero
CONTROL_BUCKET = "proxy_elapsed_ms"
DEFAULT_FLOOR_MS = BucketGate().floor_ms  # the gate's absolute floor unless [gate] or --floor-ms says otherwise


class CompareError(ValueError):
    """Bad input: missing folders, unknown bucket, unpaired A/B runs."""


@dataclass
class Comparison:
    scenario: str
    bucket: str
    percentile: float
    threshold: float
    mode: str
    verdict: str  # pass | improved | inconclusive | regression | refused
    message: str
    baseline_runs: list[str]
    current_runs: list[str]
    baseline_n: int
    current_n: int
    min_samples: int
    baseline_ms: float | None = None
    current_ms: float | None = None
    change: float | None = None  # current / baseline - 1
    ci: tuple[float, float] | None = None
    floor_ms: float = 0.0  # a regression must also exceed this absolute change
    abs_change_ms: float | None = None  # current - baseline
    abs_ci_ms: tuple[float, float] | None = None
    level: float = 0.95
    resamples: int = 0
    runs: tuple[int, int] = (0, 0)  # runs on each side
    control: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"regression": EXIT_REGRESSION, "refused": EXIT_REFUSED}.get(self.verdict, EXIT_OK)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci else None
        out["abs_ci_ms"] = list(self.abs_ci_ms) if self.abs_ci_ms else None
        out["exit_code"] = self.exit_code
        return out

    def line(self) -> str:
        head = f"[{self.verdict.upper()}] {self.scenario} {self.bucket} p{self.percentile:g} ({self.mode})"
        return f"{head}: {self.message}"


def _scenario(run_dir: Path) -> Any:
    """A run folder's scenario as RunData.load reads it (``{}`` without one), without loading the run."""
    p = run_dir / RUN_FILES["scenario"]
    return json.loads(p.read_text()) if p.exists() else {}


def default_min_samples(percentile: float) -> int:
    """Enough samples that about 10 of them lie beyond the percentile."""
    tail = max(1e-9, 1.0 - percentile / 100.0)
    return max(20, math.ceil(round(10.0 / tail, 6)))


def load_samples(run_dir: Path, bucket: str, *, outcome: str | None = None) -> list[float]:
    """One run's samples of a bucket (ms), in range, missing values dropped."""
    if bucket not in SERIES:
        raise CompareError(f"unknown bucket {bucket!r}; known: {', '.join(SERIES)}")
    return _in_range(extract(lean_run(run_dir)), bucket, outcome)


def _in_range(data: LatencyData, bucket: str, outcome: str | None) -> list[float]:
    limit = HIGHEST_US / 1000.0
    return [float(v) for v in data.values(bucket, outcome=outcome) if v is not None and 0 <= v <= limit]


def _control(base: list[LatencyData], cur: list[LatencyData], threshold: float) -> tuple[dict[str, Any], str | None]:
    """How much the backend call's median moved: a yardstick for machine noise.

    The fake backend's latency is a pure function of the seed, so on an equally
    loaded machine ``proxy_elapsed_ms`` p50 barely moves between runs of one
    scenario. When it moves by more than the threshold, the machine (or the
    event loop timing the call) was not the same on both sides, and any
    other bucket's change is suspect. A note, never a verdict.
    """
    b = [v for d in base for v in _in_range(d, CONTROL_BUCKET, None)]
    c = [v for d in cur for v in _in_range(d, CONTROL_BUCKET, None)]
    if not b or not c:
        return {}, None
    pb, pc = _pct(np.sort(b), 50.0), _pct(np.sort(c), 50.0)
    change = pc / pb - 1.0
    info = {"bucket": CONTROL_BUCKET, "percentile": 50.0, "baseline_ms": pb, "current_ms": pc, "change": change}
    if abs(change) <= threshold:
        return info, None
    return info, (
        f"control: {CONTROL_BUCKET} p50 moved {change:+.1%} ({pb:.3f} -> {pc:.3f} ms) although the backend's "
        "latency is seeded: the two sides ran under different machine load; repeat runs or run A/B interleaved"
    )


def _identity(run_dir: Path) -> tuple[str, str]:
    """(scenario name, variant) from the run's scenario.json."""
    path = run_dir / "scenario.json"
    try:
        scenario = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        scenario = {}
    return str(scenario.get("name") or run_dir.name), run_variant(scenario)


def resolve_runs(dirs: Sequence[Path]) -> dict[str, list[Path]]:
    """Group run folders by run name; each folder is a run, a folder of repeats, or a suite.

    - a run folder is one run, named by its folder;
    - a folder whose runs are all the same scenario and variant (``run-1/``,
      ``run-2/`` ...) is repeated runs of one, named by that folder;
    - any other folder of runs is a suite: each run is named by its folder
      (unique in a suite, unlike scenario names: one scenario, several variants).

    The same name given in several folders (``--baseline suite1 suite2``) pools.
    """
    groups: dict[str, list[Path]] = {}
    for d in dirs:
        if not d.is_dir():
            raise CompareError(f"{d}: no such folder")
        if is_run_dir(d):
            groups.setdefault(d.name, []).append(d)
            continue
        runs = find_runs(d)
        if not runs:
            raise CompareError(f"{d}: neither a run folder nor a folder of runs (no history.jsonl found)")
        if len({_identity(r) for r in runs}) == 1:
            groups.setdefault(d.name, []).extend(runs)
        else:
            for r in runs:
                groups.setdefault(r.name, []).append(r)
    return groups


def _pct(sorted_values: np.ndarray, p: float) -> float:
    return max(nearest_rank(sorted_values, p), _FLOOR_MS)


def _boot_pooled(samples: list[np.ndarray], p: float, b: int, rng: np.random.Generator) -> np.ndarray:
    """Pooled samples, resampled: the exact order-statistic bootstrap."""
    data = np.sort(np.concatenate(samples))
    n = data.size
    rank = min(max(int(p * n / 100.0 + 0.5), 1), n) - 1
    out: np.ndarray = np.maximum(bootstrap_order_statistic(data, rank, b, rng), _FLOOR_MS)
    return out


def _boot_hier(samples: list[np.ndarray], p: float, b: int, rng: np.random.Generator) -> np.ndarray:
    """Resample runs, then samples within each chosen run; pooled percentile."""
    out = np.empty(b)
    k = len(samples)
    for i in range(b):
        picks = rng.integers(0, k, size=k)
        pooled = np.concatenate([samples[j][rng.integers(0, samples[j].size, size=samples[j].size)] for j in picks])
        rank = min(max(int(p * pooled.size / 100.0 + 0.5), 1), pooled.size) - 1
        out[i] = max(float(np.partition(pooled, rank)[rank]), _FLOOR_MS)
    return out


def _boot_run(sample: np.ndarray, p: float, b: int, rng: np.random.Generator) -> np.ndarray:
    return _boot_pooled([sample], p, b, rng)


def compare_samples(
    baseline: Sequence[Sequence[float]],
    current: Sequence[Sequence[float]],
    *,
    scenario: str = "",
    bucket: str = "total_ms",
    percentile: float = 99.0,
    threshold: float = 0.10,
    min_samples: int | None = None,
    mode: str = "pooled",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    baseline_runs: Sequence[str] = (),
    current_runs: Sequence[str] = (),
    min_runs: int = 1,
    floor_ms: float = 0.0,
) -> Comparison:
    """Compare per-run sample lists (ms) of two sides; see the module docstring.

    A regression needs the relative change above ``threshold`` and the absolute
    change (ms) above ``floor_ms`` (with the bootstrap: both intervals' lower bounds).
    """
    if floor_ms < 0:
        raise CompareError(f"floor_ms must be >= 0, got {floor_ms}")
    if mode not in MODES:
        raise CompareError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    if not 0 < percentile < 100:
        raise CompareError(f"percentile must be in (0, 100), got {percentile}")
    if not baseline or not current:
        raise CompareError("each side needs at least one run")
    if mode == "ab" and len(baseline) != len(current):
        raise CompareError(f"ab mode pairs runs: {len(baseline)} baseline vs {len(current)} current runs")
    need = default_min_samples(percentile) if min_samples is None else min_samples
    base = [np.asarray(s, dtype=float) for s in baseline]
    cur = [np.asarray(s, dtype=float) for s in current]
    nb, nc = sum(s.size for s in base), sum(s.size for s in cur)
    cmp = Comparison(
        scenario=scenario,
        bucket=bucket,
        percentile=percentile,
        threshold=threshold,
        mode=mode,
        verdict="refused",
        message="",
        baseline_runs=list(baseline_runs),
        current_runs=list(current_runs),
        baseline_n=nb,
        current_n=nc,
        min_samples=need,
        level=level,
        floor_ms=floor_ms,
    )
    cmp.runs = (len(base), len(cur))
    if min(cmp.runs) < min_runs:
        cmp.message = (
            f"too few runs to judge: baseline {len(base)}, current {len(cur)}; each side needs >= {min_runs} "
            "(between-run noise is only measurable across runs). Not a pass, not a fail."
        )
        return cmp
    per_run_min = min(s.size for s in [*base, *cur])
    if nb < need or nc < need or (mode == "ab" and per_run_min < need):
        where = "each A/B run" if mode == "ab" else "each side"
        cmp.message = (
            f"too few samples to judge p{percentile:g}: baseline n={nb}, current n={nc}"
            + (f", smallest run n={per_run_min}" if mode == "ab" else "")
            + f"; {where} needs >= {need}. Run longer or repeat runs; not a pass, not a fail."
        )
        return cmp

    if mode == "exact":
        return _exact(cmp, base, cur, percentile, threshold, floor_ms)
    rng = np.random.default_rng(seed)
    if mode == "ab":
        ratios = np.array(
            [_pct(np.sort(c), percentile) / _pct(np.sort(b), percentile) for b, c in zip(base, cur, strict=True)]
        )
        point = float(np.exp(np.mean(np.log(ratios)))) - 1.0
        diffs = [_pct(np.sort(c), percentile) - _pct(np.sort(b), percentile) for b, c in zip(base, cur, strict=True)]
        abs_point = float(np.mean(diffs))
        logr = np.empty((resamples, len(base)))
        absd = np.empty((resamples, len(base)))
        for j, (b, c) in enumerate(zip(base, cur, strict=True)):
            bc, bb = _boot_run(c, percentile, resamples, rng), _boot_run(b, percentile, resamples, rng)
            logr[:, j] = np.log(bc) - np.log(bb)
            absd[:, j] = bc - bb
        if len(base) > 1:  # resample the pairs too: between-pair variance counts
            picks = rng.integers(0, len(base), size=(resamples, len(base)))
            logr = np.take_along_axis(logr, picks, axis=1)
            absd = np.take_along_axis(absd, picks, axis=1)
        dist = np.exp(logr.mean(axis=1)) - 1.0
        abs_dist = absd.mean(axis=1)
        cmp.baseline_ms = float(np.median([_pct(np.sort(b), percentile) for b in base]))
        cmp.current_ms = float(np.median([_pct(np.sort(c), percentile) for c in cur]))
    else:
        pb = _pct(np.sort(np.concatenate(base)), percentile)
        pc = _pct(np.sort(np.concatenate(cur)), percentile)
        point, abs_point = pc / pb - 1.0, pc - pb
        boot = _boot_hier if mode == "per-run" and (len(base) > 1 or len(cur) > 1) else _boot_pooled
        bc, bb = boot(cur, percentile, resamples, rng), boot(base, percentile, resamples, rng)
        dist, abs_dist = bc / bb - 1.0, bc - bb
        cmp.baseline_ms, cmp.current_ms = pb, pc
        if mode == "per-run" and len(base) == 1 and len(cur) == 1:
            cmp.notes.append("per-run mode with one run per side is the pooled bootstrap")
    alpha = (1.0 - level) / 2.0
    lo, hi = float(np.quantile(dist, alpha)), float(np.quantile(dist, 1.0 - alpha))
    alo, ahi = float(np.quantile(abs_dist, alpha)), float(np.quantile(abs_dist, 1.0 - alpha))
    cmp.change, cmp.ci, cmp.resamples = point, (lo, hi), resamples
    cmp.abs_change_ms, cmp.abs_ci_ms = abs_point, (alo, ahi)
    if len(base) == 1 or len(cur) == 1:
        cmp.notes.append(
            "one run on a side: the interval covers sampling noise within a run, not machine noise between runs"
        )
    desc = (
        f"baseline {cmp.baseline_ms:.3f} ms (n={nb}, {len(base)} run(s)) -> current {cmp.current_ms:.3f} ms "
        f"(n={nc}, {len(cur)} run(s)): change {point:+.1%}, {level:.0%} CI [{lo:+.1%}, {hi:+.1%}], "
        f"threshold +{threshold:.0%}; {abs_point:+.3f} ms, CI [{alo:+.3f}, {ahi:+.3f}] ms, floor {floor_ms:g} ms"
    )
    if lo > threshold and alo > floor_ms:
        cmp.verdict, cmp.message = "regression", desc + ": both intervals are above their bounds"
    elif point > threshold and abs_point > floor_ms:
        cmp.verdict = "inconclusive"
        cmp.message = desc + ": the estimate is above the bounds but an interval reaches below them (noise?)"
    elif point > threshold:
        cmp.verdict, cmp.message = "pass", desc + ": above the threshold but within the absolute floor"
    elif hi < -threshold and ahi < -floor_ms:
        cmp.verdict, cmp.message = "improved", desc
    else:
        cmp.verdict, cmp.message = "pass", desc
    return cmp


def _exact(
    cmp: Comparison, base: list[np.ndarray], cur: list[np.ndarray], percentile: float, threshold: float, floor: float
) -> Comparison:
    pb = _pct(np.sort(np.concatenate(base)), percentile)
    pc = _pct(np.sort(np.concatenate(cur)), percentile)
    point, diff = pc / pb - 1.0, pc - pb
    cmp.baseline_ms, cmp.current_ms, cmp.change, cmp.abs_change_ms = pb, pc, point, diff
    desc = (
        f"baseline {pb:.3f} ms (n={cmp.baseline_n}) -> current {pc:.3f} ms (n={cmp.current_n}): "
        f"change {point:+.1%} ({diff:+.3f} ms), threshold +{threshold:.0%} and floor {floor:g} ms "
        "(deterministic runs: exact, no interval)"
    )
    if point > threshold and diff > floor:
        cmp.verdict, cmp.message = "regression", desc
    elif point > threshold:
        cmp.verdict, cmp.message = "pass", desc + ": above the threshold but within the absolute floor"
    elif point < -threshold and diff < -floor:
        cmp.verdict, cmp.message = "improved", desc
    else:
        cmp.verdict, cmp.message = "pass", desc
    return cmp


def is_deterministic_run(run_dir: Path) -> bool:
    """A simulation run folder: its samples are virtual time, a pure function of code and seed."""
    return (run_dir / "sim.json").exists()


def _as_dirs(x: Sequence[Path | str] | Path | str) -> list[Path]:
    return [Path(x)] if isinstance(x, str | Path) else [Path(p) for p in x]


def _pairs(
    baseline: Sequence[Path | str] | Path | str, current: Sequence[Path | str] | Path | str
) -> tuple[list[tuple[str, list[Path], list[Path]]], list[str]]:
    """(name, baseline runs, current runs) for every scenario on both sides, and notes on the rest."""
    bgroups, cgroups = resolve_runs(_as_dirs(baseline)), resolve_runs(_as_dirs(current))
    notes: list[str] = []
    if len(bgroups) == 1 and len(cgroups) == 1:
        (bname, bruns), (cname, cruns) = next(iter(bgroups.items())), next(iter(cgroups.items()))
        if bname == cname:
            return [(cname, bruns, cruns)], notes
        bid, cid = _identity(bruns[0]), _identity(cruns[0])
        if bid == cid:  # e.g. two suite folders of one scenario: name it by the scenario, not a folder
            return [(cid[0] if cid[1] == "default" else f"{cid[0]}@{cid[1]}", bruns, cruns)], notes
        notes.append(f"comparing different scenarios: baseline {bname!r}, current {cname!r}")
        return [(cname, bruns, cruns)], notes
    common = sorted(set(bgroups) & set(cgroups))
    if not common:
        raise CompareError(f"no scenario in common: baseline {sorted(bgroups)}, current {sorted(cgroups)}")
    for name in sorted(set(cgroups) - set(bgroups)):
        notes.append(f"{name}: no baseline, not compared")
    for name in sorted(set(bgroups) - set(cgroups)):
        notes.append(f"{name}: in the baseline only, not compared")
    return [(name, bgroups[name], cgroups[name]) for name in common], notes


@dataclass(frozen=True)
class BucketBounds:
    """One bucket's gate: a regression is a change of the percentile above both bounds."""

    bucket: str
    percentile: float = 99.0
    threshold: float = 0.10
    floor_ms: float = DEFAULT_FLOOR_MS


def scenario_gate(scenario: Mapping[str, Any]) -> dict[str, BucketBounds]:
    """The ``[gate]`` a run's ``scenario.json`` declares; runs recorded before ``[gate]`` get the defaults."""
    gate = scenario.get("gate")
    table = gate.get("buckets") if isinstance(gate, Mapping) else None
    if not isinstance(table, Mapping) or not table:
        return {b: BucketBounds(b) for b in GATE_BUCKETS}
    out = {}
    order = {b: i for i, b in enumerate(SERIES)}
    for b in sorted(table, key=lambda k: (order.get(str(k), len(order)), str(k))):  # scenario.json sorts its keys
        v = table[b] if isinstance(table[b], Mapping) else {}
        out[str(b)] = BucketBounds(
            str(b),
            float(v.get("percentile", 99.0)),
            float(v.get("threshold", 0.10)),
            float(v.get("floor_ms", DEFAULT_FLOOR_MS)),
        )
    return out


def resolve_gate(
    declared: Mapping[str, BucketBounds],
    *,
    buckets: Sequence[str] | None = None,
    percentile: float | None = None,
    threshold: float | None = None,
    floor_ms: float | None = None,
    thresholds: Mapping[str, float] | None = None,
    floors: Mapping[str, float] | None = None,
) -> list[BucketBounds]:
    """The scenario's gate with the command line's flags on top (a flag wins; a per-bucket flag wins over all).

    ``buckets`` restricts (or extends) the judged buckets; a bucket the scenario does not gate gets the defaults.
    """
    names = list(buckets) if buckets else list(declared)
    for b in [*names, *(thresholds or {}), *(floors or {})]:
        if b not in SERIES:
            raise CompareError(f"unknown bucket {b!r}; known: {', '.join(SERIES)}")
    for b in [*(thresholds or {}), *(floors or {})]:
        if b not in names:
            raise CompareError(f"a bound for {b!r}, which is not judged; judged: {', '.join(names)}")
    out = []
    for b in names:
        g = declared.get(b, BucketBounds(b))
        g = BucketBounds(
            b,
            g.percentile if percentile is None else percentile,
            (thresholds or {}).get(b, g.threshold if threshold is None else threshold),
            (floors or {}).get(b, g.floor_ms if floor_ms is None else floor_ms),
        )
        if not 0 < g.percentile < 100 or g.threshold < 0 or g.floor_ms < 0:
            raise CompareError(f"{b}: need 0 < percentile < 100, threshold >= 0, floor_ms >= 0, got {g}")
        out.append(g)
    return out


@dataclass
class GateResult:
    """Every bucket of every scenario judged: the structured answer of :func:`gate_verdict`.

    ``verdict``: ``regression`` (exit 1) when any bucket regressed, else ``refused`` (exit 3) when any
    bucket could not be judged, else ``pass`` (exit 0); ``bad_input`` (exit 2) when nothing could be
    compared (``message`` says why).
    """

    verdict: str
    exit_code: int
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the pairing (each comparison has its own notes)
    message: str = ""

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "regression"]

    @property
    def refusals(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "refused"]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "message": self.message,
            "notes": list(self.notes),
            "histogram_max_ms": HIGHEST_US / 1000,
            "comparisons": [c.to_json() for c in self.comparisons],
        }


def _judge(
    pairs: list[tuple[str, list[Path], list[Path]]],
    bounds_for: Callable[[list[Path]], list[BucketBounds]],
    *,
    min_samples: int | None,
    mode: str,
    outcome: str | None,
    resamples: int,
    seed: int,
    level: float,
    min_runs: int,
    control_threshold: float | None,
) -> list[Comparison]:
    out: list[Comparison] = []
    for name, bruns, cruns in pairs:
        deterministic = all(is_deterministic_run(r) for r in [*bruns, *cruns])
        run_mode = mode
        if mode == "exact" and not deterministic:
            raise CompareError(f"{name}: exact mode needs simulation runs (sim.json) on both sides, not live runs")
        if mode == "pooled" and deterministic:
            run_mode = "exact"
        bounds = bounds_for(cruns)
        bdata = [extract(lean_run(r)) for r in bruns]
        cdata = [extract(lean_run(r)) for r in cruns]
        cthreshold = control_threshold if control_threshold is not None else max(g.threshold for g in bounds)
        control, warning = _control(bdata, cdata, cthreshold)
        for g in bounds:
            result = compare_samples(
                [_in_range(d, g.bucket, outcome) for d in bdata],
                [_in_range(d, g.bucket, outcome) for d in cdata],
                scenario=name,
                bucket=g.bucket,
                percentile=g.percentile,
                threshold=g.threshold,
                floor_ms=g.floor_ms,
                min_samples=min_samples,
                mode=run_mode,
                resamples=resamples,
                seed=seed,
                level=level,
                baseline_runs=[str(r) for r in bruns],
                current_runs=[str(r) for r in cruns],
                min_runs=min_runs,
            )
            if g.bucket != CONTROL_BUCKET:
                result.control = control
                if warning:
                    result.notes.append(warning)
            out.append(result)
    return out


def compare(
    baseline: Sequence[Path | str] | Path | str,
    current: Sequence[Path | str] | Path | str,
    *,
    bucket: str = "total_ms",
    percentile: float = 99.0,
    threshold: float = 0.10,
    floor_ms: float = 0.0,
    min_samples: int | None = None,
    mode: str = "pooled",
    outcome: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_runs: int = 1,
) -> list[Comparison]:
    """One bucket with the bounds given, scenario by scenario (:func:`gate_verdict` judges every bucket).

    Runs are grouped by name on each side (:func:`resolve_runs`); names present
    on both sides are compared. With exactly one group per side, they are
    compared whatever their names.
    """
    pairs, notes = _pairs(baseline, current)
    if bucket not in SERIES:
        raise CompareError(f"unknown bucket {bucket!r}; known: {', '.join(SERIES)}")
    bounds = [BucketBounds(bucket, percentile, threshold, floor_ms)]
    out = _judge(
        pairs,
        lambda _runs: bounds,
        min_samples=min_samples,
        mode=mode,
        outcome=outcome,
        resamples=resamples,
        seed=seed,
        level=level,
        min_runs=min_runs,
        control_threshold=threshold,
    )
    for r in out:
        r.notes = notes + r.notes
    return out


def gate_verdict(
    baseline: Sequence[Path | str] | Path | str,
    current: Sequence[Path | str] | Path | str,
    *,
    buckets: Sequence[str] | None = None,
    percentile: float | None = None,
    threshold: float | None = None,
    floor_ms: float | None = None,
    thresholds: Mapping[str, float] | None = None,
    floors: Mapping[str, float] | None = None,
    min_samples: int | None = None,
    mode: str = "pooled",
    outcome: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_runs: int = 1,
) -> GateResult:
    """The regression gate: every gated bucket of every scenario on both sides, in one verdict.

    Each scenario's buckets and bounds come from the current run's ``[gate]``
    (``scenario.json``; older runs: the five server buckets at p99, +10% and
    1 ms), with the arguments on top: ``percentile``, ``threshold`` and
    ``floor_ms`` for every bucket, ``thresholds`` / ``floors`` per bucket,
    ``buckets`` to choose which are judged. Never raises for bad input: that
    is ``verdict="bad_input"``, exit 2.
    """
    try:
        if mode not in MODES:
            raise CompareError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        pairs, notes = _pairs(baseline, current)

        def bounds_for(runs: list[Path]) -> list[BucketBounds]:
            declared = scenario_gate(_scenario(runs[0]) if runs else {})
            return resolve_gate(
                declared,
                buckets=buckets,
                percentile=percentile,
                threshold=threshold,
                floor_ms=floor_ms,
                thresholds=thresholds,
                floors=floors,
            )

        comparisons = _judge(
            pairs,
            bounds_for,
            min_samples=min_samples,
            mode=mode,
            outcome=outcome,
            resamples=resamples,
            seed=seed,
            level=level,
            min_runs=min_runs,
            control_threshold=threshold,
        )
    except (CompareError, OSError, ValueError) as exc:  # ValueError: a run folder with broken JSON
        return GateResult("bad_input", EXIT_BAD_INPUT, message=str(exc))
    code = exit_code(comparisons)
    verdict = {EXIT_REGRESSION: "regression", EXIT_REFUSED: "refused"}.get(code, "pass")
    res = GateResult(verdict, code, comparisons, notes)
    if verdict == "regression":
        res.message = "regression in " + ", ".join(f"{c.scenario} {c.bucket}" for c in res.regressions)
    elif verdict == "refused":
        res.message = "refused to judge (too few samples or runs): " + ", ".join(
            f"{c.scenario} {c.bucket}" for c in res.refusals
        )
    else:
        res.message = f"no regression in {len(comparisons)} bucket(s)"
    return res


def exit_code(results: Sequence[Comparison]) -> int:
    """Regression beats refusal beats pass (the one order every command uses: :func:`harness.verdict.worst_exit`)."""
    return worst_exit(r.exit_code for r in results)
