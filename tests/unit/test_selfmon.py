"""The harness's self-monitor: a starved client loop is called saturated, an idle one is not (issue 15)."""

from __future__ import annotations

import asyncio
import time

from harness.runner._selfmon import SATURATED_NOTE, SelfMonitor


async def _monitored(block_s: float, blocks: int) -> dict[str, object]:
    mon = SelfMonitor(interval_s=0.01)
    mon.start()
    for _ in range(blocks):
        await asyncio.sleep(0.03)
        if block_s:
            time.sleep(block_s)  # noqa: ASYNC251 - on purpose: the loop cannot run timers, as with a CPU-bound agent
    return await mon.stop()


def test_a_blocked_loop_is_saturated_and_says_so() -> None:
    s = asyncio.run(_monitored(0.25, 8))
    assert s["saturated"] is True
    assert float(s["lag_p99_ms"]) >= 200.0  # type: ignore[arg-type]
    note = SelfMonitor.note(s)
    assert note is not None and note.startswith(SATURATED_NOTE) and "event-loop lag p99" in note


def test_a_loop_that_only_waits_is_not_saturated() -> None:
    s = asyncio.run(_monitored(0.0, 20))
    assert int(s["samples"]) > 10  # type: ignore[call-overload]
    assert float(s["cpu_fraction"]) < 0.95  # type: ignore[arg-type]
    # lag on a shared box can spike, but never to the blocked case's quarter second
    assert float(s["lag_max_ms"]) < 200.0  # type: ignore[arg-type]


def test_cpu_bound_harness_is_saturated_by_cpu() -> None:
    ticks = iter(range(1000))
    mon = SelfMonitor(monotonic=lambda: float(next(ticks)), cpu_time=lambda: 0.0)
    mon._t0, mon._c0 = 0.0, 0.0
    mon._t1, mon._c1 = 10.0, 9.9  # 9.9 CPU seconds in 10 wall seconds
    s = mon.summary()
    assert s["saturated"] is True and "CPU" in str(s["reasons"])


def _from_lags(lags_ms: list[float]) -> dict[str, object]:
    mon = SelfMonitor(monotonic=lambda: 0.0, cpu_time=lambda: 0.0)
    mon.lags_ms = list(lags_ms)
    mon._t0, mon._c0, mon._t1, mon._c1 = 0.0, 0.0, 10.0, 1.0
    return mon.summary()


def test_one_stall_in_a_short_run_is_not_saturation() -> None:
    """A p99 over 60 samples is the worst one: a single 800 ms stall is shown (lag_max) but is no saturation."""
    s = _from_lags([2.0] * 59 + [800.0])
    assert s["lag_p99_ms"] == 800.0 and s["lag_max_ms"] == 800.0 and s["late_samples"] == 1
    assert s["saturated"] is False and SelfMonitor.note(s) is None


def test_a_loop_late_again_and_again_is_saturated() -> None:
    s = _from_lags([2.0] * 57 + [150.0, 300.0, 120.0])
    assert s["saturated"] is True and s["late_samples"] == 3
    assert "3 of 60 samples late" in str(s["reasons"])


def test_few_long_stalls_that_block_a_quarter_of_the_run_are_saturation() -> None:
    """Agents that block the loop together make one long stall per burst: 2 late samples of 1.5 s in a 10 s run."""
    s = _from_lags([2.0] * 58 + [1500.0, 1500.0])
    assert s["late_samples"] == 2 and s["saturated"] is True
    assert "blocked 30% of the run" in str(s["reasons"])
    assert _from_lags([2.0] * 58 + [600.0, 600.0])["saturated"] is False  # 12% of the run: two stalls only
    assert _from_lags([2.0] * 59 + [4000.0])["saturated"] is False  # one stall, however long, is a stall
