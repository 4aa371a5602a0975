"""Percentiles against exact ground truth, out-of-range counting, bootstrap intervals."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from harness.report.stats import (
    HIGHEST_US,
    PERCENTILES,
    bootstrap_percentile_ci,
    latency_stats,
    nearest_rank,
    percentile_key,
)


def _tolerance(truth_ms: float) -> float:
    # 3 significant digits: a value's bucket is at most ~0.1% wide; +1 us for rounding to whole us.
    return truth_ms * 1e-3 + 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_sorted_ground_truth_within_hdr_precision(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(math.log(40.0), 1.2) for _ in range(10_000)]
    stats = latency_stats(values)
    ordered = sorted(values)
    assert stats.n == len(values)
    for p in PERCENTILES:
        truth = nearest_rank(ordered, p)
        assert abs(stats.get(p) - truth) <= _tolerance(truth), (p, stats.get(p), truth)
    assert abs(stats.max_ms - ordered[-1]) <= _tolerance(ordered[-1])
    assert stats.mean_ms == pytest.approx(float(np.mean(values)))


def test_percentiles_agree_with_numpy_where_ranks_are_exact() -> None:
    rng = np.random.default_rng(7)
    values = rng.exponential(25.0, size=20_000)
    stats = latency_stats(values.tolist())
    for p in (50.0, 90.0, 99.0):  # (q * n in floating point can land one rank off for 99.9)
        truth = float(np.quantile(values, p / 100, method="inverted_cdf"))
        assert abs(stats.get(p) - truth) <= _tolerance(truth)


def test_out_of_range_values_are_counted_not_dropped_silently() -> None:
    hour_ms = HIGHEST_US / 1000
    stats = latency_stats([5.0, -1.0, hour_ms + 1.0, None, 7.0, float("nan"), hour_ms])
    assert stats.n == 3  # 5, 7 and exactly one hour
    assert stats.out_of_range == 2
    assert stats.missing == 2
    out = stats.to_json()
    assert out["out_of_range"] == 2 and out["n"] == 3


def test_every_percentile_travels_with_its_sample_count() -> None:
    out = latency_stats([1.0, 2.0, 3.0]).to_json()
    assert out["n"] == 3
    for p in PERCENTILES:
        assert f"{percentile_key(p)}_ms" in out
    assert {"max_ms", "min_ms", "mean_ms"} <= set(out)
    assert percentile_key(99.9) == "p99_9"


def test_empty_series_gives_n_zero_and_null_values() -> None:
    out = latency_stats([]).to_json()
    assert out["n"] == 0
    assert out["p99_ms"] is None and out["max_ms"] is None


def test_sub_microsecond_values_are_recorded() -> None:
    stats = latency_stats([0.0, 0.0004, 0.002])
    assert stats.n == 3 and stats.out_of_range == 0
    assert stats.get(50) == pytest.approx(0.0, abs=1e-3)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(3.0, 0.8) for _ in range(2000)]
    lo1, hi1 = bootstrap_percentile_ci(values, [50.0, 99.0], seed=11)
    lo2, hi2 = bootstrap_percentile_ci(values, [50.0, 99.0], seed=11)
    assert (lo1, hi1) == (lo2, hi2)
    ordered = sorted(values)
    for i, p in enumerate((50.0, 99.0)):
        assert lo1[i] <= nearest_rank(ordered, p) <= hi1[i]
        assert lo1[i] < hi1[i]
    stats = latency_stats(values, ci=True, seed=11)
    lo, hi = stats.ci_ms["p99"]
    assert lo <= stats.get(99) * 1.001 and stats.get(99) <= hi * 1.001
    assert stats.to_json()["ci"]["level"] == 0.95


def test_closed_form_order_statistic_bootstrap_matches_explicit_resampling() -> None:
    from harness.report.stats import bootstrap_order_statistic

    rng = np.random.default_rng(5)
    data = np.sort(rng.lognormal(3.0, 0.7, size=400))
    rank = int(0.99 * data.size + 0.5) - 1
    closed = bootstrap_order_statistic(data, rank, 20_000, np.random.default_rng(1))
    explicit = np.sort(data[np.random.default_rng(2).integers(0, data.size, size=(20_000, data.size))], axis=1)[:, rank]
    for q in (0.025, 0.5, 0.975):
        # same distribution: quantiles agree up to Monte Carlo noise (ranks differ by at most one or two)
        a, b = np.quantile(closed, q), np.quantile(explicit, q)
        assert abs(np.searchsorted(data, a) - np.searchsorted(data, b)) <= 2, (q, a, b)
    assert set(np.unique(closed)) <= set(data)
