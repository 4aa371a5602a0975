"""Model against live: the same percentiles of the same buckets, and the relative error of each.

Both sides go through :func:`harness.report.stats.latency_stats` (HdrHistogram,
nearest rank), so a difference is the model's, not two percentile
definitions disagreeing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report.stats import latency_stats
from harness.rundata import RunData

from ._sim import BUCKETS, ModelResult

__all__ = ["compare_live", "format_comparison", "live_buckets"]


def live_buckets(run: RunData | str | Path) -> dict[str, list[float]]:
    """Every ``chat_done`` line's buckets (all outcomes, as the model records them)."""
    data = run if isinstance(run, RunData) else RunData.load(Path(run))
    out: dict[str, list[float]] = {b: [] for b in BUCKETS}
    for ln in data.server_logs:
        if ln.get("event") != "chat_done":
            continue
        for b in BUCKETS:
            v = ln.get(b)
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[b].append(float(v))
    return out


def _err(model: float, live: float) -> float:
    if math.isnan(model) or math.isnan(live) or live == 0:
        return math.nan
    return (model - live) / live


def compare_live(
    result: ModelResult,
    live: Mapping[str, Sequence[float]],
    percentiles: Sequence[float] = (50.0, 99.0),
) -> dict[str, dict[str, Any]]:
    """bucket -> {n_live, n_model, p50_live, p50_model, p50_err, ...}; err = (model - live) / live."""
    out: dict[str, dict[str, Any]] = {}
    for b in BUCKETS:
        ls = latency_stats(live.get(b, []), percentiles=percentiles)
        ms = latency_stats(result.series(b), percentiles=percentiles)
        row: dict[str, Any] = {"n_live": ls.n, "n_model": ms.n}
        for p in percentiles:
            lv, mv = ls.get(p), ms.get(p)
            k = f"p{p:g}"
            row[f"{k}_live"] = lv
            row[f"{k}_model"] = mv
            row[f"{k}_err"] = _err(mv, lv)
        out[b] = row
    return out


def format_comparison(cmp: Mapping[str, Mapping[str, Any]], percentiles: Sequence[float] = (50.0, 99.0)) -> str:
    head = f"{'bucket':<18}{'n live':>8}{'n model':>9}"
    for p in percentiles:
        k = f"p{p:g}"
        head += f"{k + ' live':>12}{k + ' model':>12}{'err':>8}"
    lines = [head]
    for b, row in cmp.items():
        line = f"{b:<18}{row['n_live']:>8}{row['n_model']:>9}"
        for p in percentiles:
            k = f"p{p:g}"
            e = row[f"{k}_err"]
            es = "n/a" if math.isnan(e) else f"{e * 100:+.0f}%"
            line += f"{row[k + '_live']:>12.3f}{row[k + '_model']:>12.3f}{es:>8}"
        lines.append(line)
    return "\n".join(lines)
