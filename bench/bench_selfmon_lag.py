"""Probe: every event-loop timer sample late by > 30 ms during live runs, to see *when* the harness is late.

Why (issue 15): the saturation warning (harness/runner/_selfmon.py) fired on a quiet box; this prints each
late sample as (seconds since the monitor started, ms late) so start-up stalls and sustained lag can be told
apart, and the run's saturation note (if any).

Run: ``.venv/bin/python bench/bench_selfmon_lag.py litellm_abort_remap multi_backend_race tool_retry_rollback``
(scenario names under scenarios/; run folders go to a temporary directory). Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.runner import _selfmon, run_scenario  # noqa: E402
from harness.scenario import load_scenario  # noqa: E402

samples: list[tuple[float, float]] = []


async def _run(self: _selfmon.SelfMonitor) -> None:  # the monitor's own loop, also keeping each sample's time
    while True:
        before = self._mono()
        await asyncio.sleep(self.interval_s)
        late = max(0.0, self._mono() - before - self.interval_s) * 1000.0
        self.lags_ms.append(late)
        samples.append((round(before - self._t0, 3), round(late, 1)))


def main() -> None:
    _selfmon.SelfMonitor._run = _run  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as out:
        for name in sys.argv[1:]:
            samples.clear()
            res = run_scenario(load_scenario(ROOT / "scenarios" / f"{name}.toml"), Path(out), report=False)
            late = [s for s in samples if s[1] > 30.0]
            notes = [n for n in res.notes if n.startswith(_selfmon.SATURATED_NOTE)]
            print(f"{name}: {res.status}, {len(samples)} samples, late > 30 ms: {late}; {notes or 'not saturated'}")


if __name__ == "__main__":
    main()
