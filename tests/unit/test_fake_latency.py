"""Latency models: each draw's distribution, seeding per identity, aborts mid-way, and the app honouring them."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from typing import Any

import httpx
import pytest

from harness.fake_sglang import create_app, plan_from_text
from harness.fake_sglang.generate import Identity
from harness.fake_sglang.latency import ZERO, Delay, draw_delay, tokens_at
from harness.fake_sglang.plan import LatencySpec


def draws(spec: LatencySpec, n: int = 4000) -> list[float]:
    rng = random.Random(5)
    return [draw_delay(spec, rng).ttft_s * 1000 for _ in range(n)]


def test_none_is_zero() -> None:
    assert draw_delay(LatencySpec(), random.Random(1)) is ZERO and ZERO.is_zero


def test_fixed() -> None:
    assert set(draws(LatencySpec(model="fixed", ms=25.0), 50)) == {25.0}


def test_uniform_bounds_and_spread() -> None:
    xs = draws(LatencySpec(model="uniform", min_ms=10, max_ms=30))
    assert 10 <= min(xs) < 11 and 29 < max(xs) <= 30
    assert statistics.mean(xs) == pytest.approx(20, abs=0.5)


def test_lognormal_median_and_p99() -> None:
    xs = sorted(draws(LatencySpec(model="lognormal", median_ms=100, p99_ms=1000), 20000))
    assert xs[len(xs) // 2] == pytest.approx(100, rel=0.05)
    assert xs[int(len(xs) * 0.99)] == pytest.approx(1000, rel=0.12)
    capped = draws(LatencySpec(model="lognormal", median_ms=100, p99_ms=1000, cap_ms=300))
    assert max(capped) == 300


def test_per_token() -> None:
    d = draw_delay(LatencySpec(model="per_token", ttft_ms=50, itl_ms=10), random.Random(1))
    assert (d.ttft_s, d.itl_s) == (0.05, 0.01)
    assert d.total(11) == pytest.approx(0.15)
    assert tokens_at(d, 0.04, 11) == 0 and tokens_at(d, 0.05, 11) == 1 and tokens_at(d, 0.085, 11) == 4
    assert tokens_at(d, 10, 11) == 11


def test_spikes() -> None:
    spec = LatencySpec(model="fixed", ms=10, spike_probability=0.1, spike_ms=500)
    xs = draws(spec)
    assert set(xs) == {10.0, 510.0}
    assert xs.count(510.0) / len(xs) == pytest.approx(0.1, abs=0.02)
    forced = draw_delay(LatencySpec(), random.Random(1), spike_ms=70)
    assert forced.ttft_s == pytest.approx(0.07) and forced.spike_s == pytest.approx(0.07)


def test_tokens_at_even_models() -> None:
    d = Delay(ttft_s=1.0)
    assert [tokens_at(d, t, 10) for t in (0, 0.25, 0.5, 2.0)] == [0, 2, 5, 10]
    assert tokens_at(ZERO, 1.0, 10) == 10


def test_seeded_per_identity() -> None:
    spec = LatencySpec(model="lognormal", median_ms=100, p99_ms=1000)
    a = Identity(1, "s", 0, 0, "ab")
    same = draw_delay(spec, a.rng("latency")), draw_delay(spec, Identity(1, "s", 0, 0, "ab").rng("latency"))
    assert same[0] == same[1]
    others = {draw_delay(spec, Identity(1, "s", t, 0, "ab").rng("latency")).ttft_s for t in range(20)}
    assert len(others) == 20
    assert draw_delay(spec, Identity(2, "s", 0, 0, "ab").rng("latency")) != same[0]


@pytest.mark.parametrize(
    ("plan", "lo", "hi"),
    [
        ('model = "fixed"\nms = 120', 0.12, 0.6),
        ('model = "uniform"\nmin_ms = 100\nmax_ms = 140', 0.1, 0.6),
        ('model = "per_token"\nttft_ms = 20\nitl_ms = 10', 0.02 + 0.01 * 3, 1.5),
        ('model = "lognormal"\nmedian_ms = 100\np99_ms = 101', 0.09, 0.6),
    ],
)
async def test_app_waits_the_drawn_latency(plan: str, lo: float, hi: float) -> None:
    app = create_app(seed=1, plan=plan_from_text(f"[latency]\n{plan}", "<t>"))
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://f") as c:
        t0 = loop.time()
        r = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        took = loop.time() - t0
    assert r.status_code == 200
    e: dict[str, Any] = app.executions["-"][0]
    assert lo <= took < hi
    assert math.isclose(e["latency_ms"] / 1000, took, abs_tol=0.08)
