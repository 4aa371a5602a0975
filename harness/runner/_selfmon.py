"""The harness watches itself: a slow client must never be reported as a slow server.

Why: every latency the harness reports from the client side includes the time
the harness's own event loop took to get round to the request, send its body
and read the answer. When the agents (not the server) are the bottleneck, a
10^4-session soak reported a client p99 of 1,107 ms against the server's own
212 ms, and nothing said so. So, during a live run, a small task measures

- event-loop lag: how late a timer fires (``interval`` asked, more observed);
  a loop that is busy or starved of CPU fires late, and every request it
  drives is late by the same amount;
- the harness process's CPU: CPU seconds per wall second; near 1.0 means one
  core is saturated by the harness itself.

When lag p99 exceeds ``LAG_P99_LIMIT_MS`` (in at least ``MIN_LATE_SAMPLES``
samples), or two or more stalls over that limit add up to more than
``BLOCKED_LIMIT`` of the run, or CPU exceeds ``CPU_LIMIT`` the run is *harness saturated*: the
report and the terminal summary say that client latency is not attributable
to the server (server-side buckets from the server's own log lines still are).

Why ``MIN_LATE_SAMPLES``: a p99 over fewer than a few hundred samples is the
worst one or two of them, so one stall (a GC pause, the kernel paging a
library in) would make a short run "saturated". Saturation is a loop that is
late again and again; a single stall still shows as ``lag_max_ms``. The
start-up stalls that fired this warning on a quiet box (``import openai`` and
building the HTTP clients inside the first session: 0.5-4.4 s, issue 15) are
gone from the measured window: ``drive`` builds every client kind before t = 0.

This is tooling, not protocol code: it reads the process's CPU clock and the
monotonic clock directly (``seam-ok``), and it never runs in simulation
(virtual time has no lag and a timer task would change the schedule).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["BLOCKED_LIMIT", "CPU_LIMIT", "LAG_P99_LIMIT_MS", "MIN_LATE_SAMPLES", "SATURATED_NOTE", "SelfMonitor"]

LAG_P99_LIMIT_MS = 100.0
MIN_LATE_SAMPLES = 3  # separate late timer firings before a lag p99 over the limit counts (see the docstring)
BLOCKED_LIMIT = 0.25  # share of the run the loop spent in stalls over the lag limit (at least 2 of them)
CPU_LIMIT = 0.95
SATURATED_NOTE = "harness saturated: client latency not attributable to the server"


def _p(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class SelfMonitor:
    """Samples the running loop's timer lag and the process CPU until ``stop()``."""

    def __init__(
        self,
        *,
        interval_s: float = 0.02,
        monotonic: Callable[[], float] = time.monotonic,  # seam-ok: tooling, see the module docstring
        cpu_time: Callable[[], float] = time.process_time,  # seam-ok: tooling
        lag_limit_ms: float = LAG_P99_LIMIT_MS,
        cpu_limit: float = CPU_LIMIT,
        min_late: int = MIN_LATE_SAMPLES,
    ) -> None:
        self.interval_s = interval_s
        self._mono = monotonic
        self._cpu = cpu_time
        self.lag_limit_ms = lag_limit_ms
        self.cpu_limit = cpu_limit
        self.min_late = min_late
        # one sample per interval for the whole run: 8 bytes each in an array (a list of floats is 32; the values
        # and the summary are the same), ~1.4 MB an hour at 20 ms
        self.lags_ms: array[float] = array("d")
        self._t0 = 0.0
        self._c0 = 0.0
        self._t1: float | None = None
        self._c1 = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._t0, self._c0 = self._mono(), self._cpu()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="harness-self-monitor")

    async def _run(self) -> None:
        while True:
            before = self._mono()
            await asyncio.sleep(self.interval_s)
            late = self._mono() - before - self.interval_s
            self.lags_ms.append(max(0.0, late) * 1000.0)

    async def stop(self) -> dict[str, Any]:
        self._t1, self._c1 = self._mono(), self._cpu()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        return self.summary()

    def summary(self) -> dict[str, Any]:
        t1 = self._mono() if self._t1 is None else self._t1
        c1 = self._cpu() if self._t1 is None else self._c1
        wall = max(1e-9, t1 - self._t0)
        cpu = (c1 - self._c0) / wall
        lag_p99 = _p(self.lags_ms, 0.99)
        late = sum(1 for lag in self.lags_ms if lag > self.lag_limit_ms)
        reasons = []
        if lag_p99 > self.lag_limit_ms and late >= self.min_late:
            reasons.append(
                f"event-loop lag p99 {lag_p99:.1f} ms > {self.lag_limit_ms:g} ms"
                f" ({late} of {len(self.lags_ms)} samples late)"
            )
        stalled_s = sum(lag for lag in self.lags_ms if lag > self.lag_limit_ms) / 1000.0
        if not reasons and late >= 2 and stalled_s > BLOCKED_LIMIT * wall:
            # few but long stalls: agents that block the loop together (one stall per burst of turns) make
            # few late samples, each late by many intervals; a loop blocked for a quarter of the run is
            # saturated however its lateness is spread (one stall alone is still only a stall)
            reasons.append(
                f"event loop blocked {stalled_s / wall:.0%} of the run ({late} stalls over {self.lag_limit_ms:g} ms)"
            )
        if cpu > self.cpu_limit:
            reasons.append(f"harness CPU {cpu:.0%} of a core > {self.cpu_limit:.0%}")
        return {
            "samples": len(self.lags_ms),
            "interval_ms": self.interval_s * 1000.0,
            "lag_p50_ms": round(_p(self.lags_ms, 0.50), 3),
            "lag_p99_ms": round(lag_p99, 3),
            "lag_max_ms": round(max(self.lags_ms, default=0.0), 3),
            "late_samples": late,
            "cpu_fraction": round(cpu, 4),
            "wall_s": round(wall, 3),
            "lag_limit_ms": self.lag_limit_ms,
            "min_late_samples": self.min_late,
            "cpu_limit": self.cpu_limit,
            "saturated": bool(reasons),
            "reasons": reasons,
        }

    @staticmethod
    def note(summary: dict[str, Any]) -> str | None:
        """The one line the terminal and the report print when the harness was the bottleneck."""
        if not summary.get("saturated"):
            return None
        return f"{SATURATED_NOTE} ({'; '.join(summary.get('reasons') or [])})"
