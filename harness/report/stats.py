"""Latency percentiles that say how much they can be trusted.

Every figure the report prints comes from here. Values are recorded into an
HdrHistogram in whole microseconds over 1 us .. 1 h with 3 significant digits,
so a percentile is exact to about 0.1% whatever the spread. A value outside
that range (negative, or longer than an hour: a broken clock or a hung
request) is *counted* and reported as ``out_of_range``, never silently
dropped or clamped, because a hidden outlier is exactly what a p99 report
exists to show. A percentile always travels with its sample count ``n``:
a p99.9 over 40 samples is the max, and the reader must be able to see that.

Confidence intervals come from a percentile bootstrap on the raw samples with
a seeded generator, using the same nearest-rank definition as HdrHistogram so
the interval brackets the point estimate it belongs to. The bootstrap of one
order statistic has a closed form (a Beta-distributed rank), so it costs
O(resamples) rather than O(resamples x n): a 10^5-request run reports in
seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = [
    "HIGHEST_US",
    "LOWEST_US",
    "PERCENTILES",
    "SIGNIFICANT_DIGITS",
    "LatencyStats",
    "bootstrap_distribution",
    "bootstrap_order_statistic",
    "bootstrap_percentile_ci",
    "latency_stats",
    "nearest_rank",
    "percentile_key",
]

LOWEST_US = 1
HIGHEST_US = 3600 * 1_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 20240601


def percentile_key(p: float) -> str:
    """50 -> "p50", 99.9 -> "p99_9" (the names used in summary.json)."""
    text = f"{p:g}".replace(".", "_")
    return f"p{text}"


def nearest_rank(sorted_values: Sequence[float] | np.ndarray, p: float) -> float:
    """The percentile as HdrHistogram defines it, on exact sorted data."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = max(int(p * n / 100.0 + 0.5), 1)
    return float(sorted_values[min(rank, n) - 1])


@dataclass
class LatencyStats:
    """Percentiles of one series, in milliseconds."""

    n: int
    out_of_range: int
    missing: int
    percentiles_ms: dict[str, float]
    max_ms: float
    min_ms: float
    mean_ms: float
    ci_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_level: float = 0.95

    def get(self, p: float) -> float:
        return self.percentiles_ms[percentile_key(p)]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "out_of_range": self.out_of_range, "missing": self.missing}
        for key, value in self.percentiles_ms.items():
            out[f"{key}_ms"] = _num(value)
        out["max_ms"] = _num(self.max_ms)
        out["min_ms"] = _num(self.min_ms)
        out["mean_ms"] = _num(self.mean_ms)
        if self.ci_ms:
            out["ci"] = {
                "level": self.ci_level,
                **{f"{k}_ms": [_num(lo), _num(hi)] for k, (lo, hi) in self.ci_ms.items()},
            }
        return out


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def _split(values_ms: Iterable[float | None]) -> tuple[list[int], list[float], int, int]:
    """-> (in-range values in us, the same in ms, out-of-range count, missing count)."""
    us: list[int] = []
    ms: list[float] = []
    out_of_range = 0
    missing = 0
    for v in values_ms:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing += 1
            continue
        value_us = round(float(v) * 1000.0)
        if value_us < 0 or value_us > HIGHEST_US:
            out_of_range += 1
            continue
        us.append(value_us)
        ms.append(float(v))
    return us, ms, out_of_range, missing


def latency_stats(
    values_ms: Iterable[float | None],
    *,
    percentiles: Sequence[float] = PERCENTILES,
    ci: bool = False,
    resamples: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> LatencyStats:
    """HdrHistogram percentiles of ``values_ms`` (milliseconds)."""
    us, ms, out_of_range, missing = _split(values_ms)
    hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for value in us:
        hist.record_value(value)
    n = int(hist.get_total_count())
    if n == 0:
        nan = math.nan
        return LatencyStats(0, out_of_range, missing, {percentile_key(p): nan for p in percentiles}, nan, nan, nan)
    by_p = hist.get_percentile_to_value_dict(list(percentiles))
    pct = {percentile_key(p): by_p[p] / 1000.0 for p in percentiles}
    stats = LatencyStats(
        n=n,
        out_of_range=out_of_range,
        missing=missing,
        percentiles_ms=pct,
        max_ms=hist.get_max_value() / 1000.0,
        min_ms=hist.get_min_value() / 1000.0,
        mean_ms=float(np.mean(ms)),
        ci_level=level,
    )
    if ci:
        lows, highs = bootstrap_percentile_ci(ms, percentiles, resamples=resamples, seed=seed, level=level)
        stats.ci_ms = {percentile_key(p): (lo, hi) for p, lo, hi in zip(percentiles, lows, highs, strict=True)}
    return stats


def bootstrap_order_statistic(
    sorted_values: np.ndarray, rank: int, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """The bootstrap distribution of the ``rank``-th (0-based) order statistic, exactly, in O(resamples).

    A resample is n draws with replacement, i.e. ``x[ceil(n * U_i) - 1]`` for
    uniform ``U_i``; the map is monotone, so the resample's ``rank``-th value is
    ``x[ceil(n * U_(rank+1)) - 1]``, and that uniform order statistic is
    ``Beta(rank + 1, n - rank)``. Same distribution as resampling n values
    B times and sorting each, without the O(B n log n).
    """
    n = sorted_values.size
    u = rng.beta(rank + 1, n - rank, size=resamples)
    idx = np.clip(np.ceil(n * u).astype(np.int64) - 1, 0, n - 1)
    out: np.ndarray = sorted_values[idx]
    return out


def bootstrap_distribution(
    values: Sequence[float] | np.ndarray,
    percentiles: Sequence[float],
    *,
    resamples: int = DEFAULT_BOOTSTRAP,
    rng: np.random.Generator,
) -> np.ndarray:
    """Shape (resamples, len(percentiles)): each percentile's bootstrap distribution (nearest rank).

    Columns are exact marginals (:func:`bootstrap_order_statistic`); use them
    one percentile at a time, not jointly.
    """
    data = np.sort(np.asarray(values, dtype=float))
    n = data.size
    out = np.empty((resamples, len(percentiles)))
    if n == 0:
        out.fill(np.nan)
        return out
    for j, p in enumerate(percentiles):
        rank = min(max(int(p * n / 100.0 + 0.5), 1), n) - 1
        out[:, j] = bootstrap_order_statistic(data, rank, resamples, rng)
    return out


def bootstrap_percentile_ci(
    values_ms: Sequence[float] | np.ndarray,
    percentiles: Sequence[float],
    *,
    resamples: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[list[float], list[float]]:
    """Percentile-bootstrap interval for each percentile; NaN when there is no data."""
    rng = np.random.default_rng(seed)
    dist = bootstrap_distribution(values_ms, percentiles, resamples=resamples, rng=rng)
    if len(values_ms) == 0:
        return [math.nan] * len(percentiles), [math.nan] * len(percentiles)
    alpha = (1.0 - level) / 2.0
    lo = np.quantile(dist, alpha, axis=0)
    hi = np.quantile(dist, 1.0 - alpha, axis=0)
    return [float(x) for x in lo], [float(x) for x in hi]
