"""Tables and charts for model runs: bucket percentiles, and the capacity-planning sweep."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._sim import BUCKETS, CLIENT, ModelResult

__all__ = ["SweepPoint", "percentile_table", "plot_buckets", "plot_sweep", "sweep_table"]

PCTS = (50.0, 90.0, 99.0)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def percentile_table(result: ModelResult, percentiles: Sequence[float] = PCTS) -> str:
    head = f"{'bucket':<19}{'n':>9}" + "".join(f"{f'p{p:g} ms':>12}" for p in percentiles)
    lines = [head]
    for b in (*BUCKETS, CLIENT):
        st = result.stats(b)
        lines.append(f"{b:<19}{st.n:>9}" + "".join(f"{_fmt(st.get(p)):>12}" for p in percentiles))
    return "\n".join(lines)


def plot_buckets(result: ModelResult, path: Path, *, title: str = "") -> Path:
    """Grouped bars: p50 / p90 / p99 of each bucket (log scale), with the sample count."""
    import numpy as np

    from harness.report.plots import new_figure, png_bytes

    fig = new_figure(10, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    names = [*BUCKETS, CLIENT]
    x = np.arange(len(names))
    width = 0.26
    for i, p in enumerate(PCTS):
        vals = []
        for b in names:
            v = result.stats(b).get(p)
            vals.append(max(v, 1e-3) if not math.isnan(v) else 1e-3)
        ax.bar(x + (i - 1) * width, vals, width, label=f"p{p:g}")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{b}\nn={result.stats(b).n}" for b in names], fontsize=8)
    ax.set_ylabel("ms (log)")
    ax.legend()
    ax.set_title(title or f"model: {result.params.name}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


SweepPoint = Mapping[str, Any]  # {"processes", "agents", "sessions", "requests", "p50_ms", "p99_ms", ...}


def sweep_table(points: Sequence[SweepPoint], slo_ms: float | None, bucket: str) -> str:
    agents = sorted({int(p["agents"]) for p in points})
    procs = sorted({int(p["processes"]) for p in points})
    by = {(int(p["agents"]), int(p["processes"])): p for p in points}
    lines = [f"p99 {bucket} (ms) by agents (rows) and processes (columns)"]
    lines.append(f"{'agents':>8}" + "".join(f"{n:>10}" for n in procs) + ("   min processes" if slo_ms else ""))
    for a in agents:
        row = f"{a:>8}"
        best: int | None = None
        for n in procs:
            p = by.get((a, n))
            v = float(p["p99_ms"]) if p else math.nan
            row += f"{_fmt(v):>10}"
            if slo_ms is not None and best is None and not math.isnan(v) and v <= slo_ms:
                best = n
        if slo_ms is not None:
            row += f"   {best if best is not None else '> ' + str(procs[-1])}"
        lines.append(row)
    if slo_ms is not None:
        lines.append(f"(min processes: the fewest that keep p99 {bucket} <= {slo_ms:g} ms)")
    return "\n".join(lines)


def plot_sweep(points: Sequence[SweepPoint], path: Path, *, slo_ms: float | None, bucket: str, title: str = "") -> Path:
    """p99 against processes, one line per agent count, the SLO as a dashed line."""
    from harness.report.plots import new_figure, png_bytes

    fig = new_figure(9, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    for a in sorted({int(p["agents"]) for p in points}):
        pts = sorted((int(p["processes"]), float(p["p99_ms"])) for p in points if int(p["agents"]) == a)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"{a} agents")
    if slo_ms is not None:
        ax.axhline(slo_ms, color="#d62728", ls="--", lw=1.5, label=f"SLO p99 {slo_ms:g} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("session-server processes")
    ax.set_ylabel(f"p99 {bucket} (ms, log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"capacity: p99 {bucket} against processes and agents", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path
