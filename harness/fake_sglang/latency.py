"""Latency models for the fake SGLang: how long one answer takes.

Why several: a session server's timing buckets only mean something against a
backend whose latency looks like a real one. ``fixed`` and ``uniform`` make
tests easy to reason about; ``lognormal`` (given by median and p99, the two
figures people quote from production dashboards) has the long right tail that
makes p99 interesting; ``per_token`` (time to first token plus inter-token
latency per generated token) makes long answers slow, as decoding does;
random ``spikes`` model a stalled engine (weight sync, preemption).

Every draw takes a ``random.Random`` seeded from the request's identity (see
generate.py), never the global generator, so a request's latency is the same in
every run with the same seed, whatever else is in flight. Waiting happens
with ``asyncio.sleep`` in the app, on the loop's clock, so a virtual-time loop
makes all of this instantaneous.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .plan import LatencySpec

__all__ = ["Delay", "draw_delay", "tokens_at"]

# z such that P(N(0,1) <= z) = 0.99: lognormal sigma from median and p99.
Z99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class Delay:
    """Seconds: ``ttft_s`` before the first token, then ``itl_s`` per further token."""

    ttft_s: float = 0.0
    itl_s: float = 0.0
    spike_s: float = 0.0

    def total(self, tokens: int) -> float:
        return self.ttft_s + self.itl_s * max(0, tokens - 1)

    @property
    def is_zero(self) -> bool:
        return self.ttft_s <= 0.0 and self.itl_s <= 0.0


ZERO = Delay()


def base_ms(spec: LatencySpec, rng: random.Random) -> float:
    """The model's draw in milliseconds, before spikes (per_token: the time to first token)."""
    m = spec.model
    if m == "none":
        return 0.0
    if m == "fixed":
        return spec.ms
    if m == "uniform":
        return rng.uniform(spec.min_ms, spec.max_ms)
    if m == "lognormal":
        mu = math.log(spec.median_ms)
        sigma = (math.log(spec.p99_ms) - mu) / Z99
        v = rng.lognormvariate(mu, sigma)
        return min(v, spec.cap_ms) if spec.cap_ms is not None else v
    if m == "per_token":
        return spec.ttft_ms
    raise ValueError(f"unknown latency model {m!r}")


def draw_delay(spec: LatencySpec, rng: random.Random, *, spike_ms: float | None = None) -> Delay:
    """Draw one request's delay. ``spike_ms`` forces a spike (the ``spike`` fault)."""
    ttft = base_ms(spec, rng)
    # Always consume the spike draw, so forcing a spike does not shift other draws.
    spiked = spec.spike_probability > 0 and rng.random() < spec.spike_probability
    spike = spike_ms if spike_ms is not None else (spec.spike_ms if spiked else 0.0)
    itl = spec.itl_ms if spec.model == "per_token" else 0.0
    if ttft == 0.0 and itl == 0.0 and spike == 0.0:
        return ZERO
    return Delay(ttft_s=(ttft + spike) / 1000.0, itl_s=itl / 1000.0, spike_s=spike / 1000.0)


def tokens_at(delay: Delay, elapsed_s: float, tokens: int) -> int:
    """How many of ``tokens`` had been generated ``elapsed_s`` into the answer (for aborts).

    Per-token models decode one token per ``itl``; the others are modelled as
    decoding evenly across the whole delay.
    """
    if tokens <= 0 or elapsed_s <= 0:
        return 0
    if delay.itl_s > 0:
        if elapsed_s < delay.ttft_s:
            return 0
        return min(tokens, 1 + int((elapsed_s - delay.ttft_s) / delay.itl_s))
    total = delay.total(tokens)
    if total <= 0:
        return tokens
    return min(tokens, int(tokens * elapsed_s / total))
