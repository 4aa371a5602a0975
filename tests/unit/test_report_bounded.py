"""The report's memory and plots stay bounded however long the run (issue 13): per-request series in columns,
no object per request; the timeline and CDF plots draw a bounded, deterministic subset past a documented size,
and the figures (percentiles, counts) still come from every request. Synthetic data only; ~2 s.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.report import plots
from harness.report.buckets import ClientRequest, Column, ServerRequest, extract
from harness.report.plots import MAX_CDF_POINTS, MAX_TIMELINE_POINTS, cdf_ranks, timeline_sample
from harness.report.scan import SpilledRecords, lean_run
from harness.report.summary import series_summary
from harness.rundata import RunData


def _history(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in range(n):
        inv = {"type": "invoke", "op": k, "f": "chat", "process": f"agent-{k % 64}", "session": f"{k // 4:032x}"}
        inv.update(turn=k % 4, attempt=0, time=k * 0.01, intended=k * 0.01, request_id=f"{k:016x}")
        done = {**inv, "type": "ok", "time": k * 0.01 + 0.02 + (k % 97) * 1e-4, "status": 200}
        done.update(aborted=k % 50 == 0, headers={"x-req-id": f"{k:08x}"})
        out += [inv, done]
    for i, ev in enumerate(out):
        ev["index"] = i
    return out


def _logs(n: int) -> list[dict[str, Any]]:
    return [
        {"event": "chat_done", "req_id": f"{k:08x}", "session_id": f"{k // 4:032x}", "outcome": "ok", "status": 200}
        | {"pid": 7, "worker_port": 8101, "ts": 1.0 + k, "total_ms": 20.0 + k % 13, "lock_wait_ms": 0.5}
        for k in range(n)
    ]


def test_the_subsamples_are_bounded_deterministic_and_everything_when_small() -> None:
    assert list(timeline_sample(50, MAX_TIMELINE_POINTS, 3)) == list(range(50))
    a, b = timeline_sample(10**6, 1000, 3), timeline_sample(10**6, 1000, 3)
    assert a.size == 1000 and np.array_equal(a, b) and np.all(np.diff(a) > 0)  # sorted, distinct, repeatable
    assert not np.array_equal(a, timeline_sample(10**6, 1000, 4))  # from the run's seed
    assert list(cdf_ranks(100)) == list(range(100))
    r = cdf_ranks(10**6)
    assert r.size <= MAX_CDF_POINTS and r[0] == 0 and r[-1] == 10**6 - 1
    assert np.array_equal(r[-MAX_CDF_POINTS // 2 :], np.arange(10**6 - MAX_CDF_POINTS // 2, 10**6))  # the tail


def test_a_large_series_is_held_in_columns_and_its_figures_come_from_every_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plots, "MAX_TIMELINE_POINTS", 500)  # the bounded figure, at a size a test can afford
    n = 5_000
    run = RunData(scenario={"seed": 5}, history=_history(n), server_logs=_logs(n))
    gc.collect()
    data = extract(run)
    alive = sum(1 for o in gc.get_objects() if isinstance(o, ClientRequest | ServerRequest))
    assert alive == 0  # no object per request kept
    assert len(data.requests) == len(data.server) == n and len(data.inflight) == 2 * n
    assert data.requests.nbytes() / n < 110 and data.server.nbytes() / n < 120  # bytes per request
    assert all(c.typed for c in data.requests.cols.values())
    first = data.requests[0]
    assert first.request_id == f"{0:016x}" and first.req_id == f"{0:08x}" and first.outcome == "aborted"
    # percentiles from every request, not the plot's sample
    assert series_summary(data, "total_ms")["all"]["n"] == n
    assert series_summary(data, "client_request_ms")["by_outcome"]["aborted"]["n"] == n // 50
    fig = plots._timeline_sampled(data, title="", seed=5)
    title = fig.axes[0].get_title()
    assert f"500 of {n:,} requests drawn (10.0%" in title
    drawn = sum(len(c.get_offsets()) for c in fig.axes[0].collections if hasattr(c, "get_offsets"))
    assert drawn == 500
    counts = fig.axes[1].get_lines()
    aborted = next(ln for ln in counts if "aborted requests" in str(ln.get_label()))
    assert int(np.sum(aborted.get_ydata())) == n // 50  # every aborted request counted per time bin


def test_a_column_gives_back_what_was_put_in() -> None:
    vals: list[Any] = ["00ab", "f" * 16, "0", "hello", "", None, "ABCD", "0" * 17]
    c = Column("x")
    for v in vals:
        c.append(v)
    c.seal()
    c.append("hello")
    assert list(c) == [*vals, "hello"] and [c[k] for k in range(len(c))] == [*vals, "hello"]
    f = Column("f")
    for v in (1.5, None, -0.0, math.inf):
        f.append(v)
    assert f.typed and list(f) == [1.5, None, -0.0, math.inf] and math.copysign(1, f[2]) < 0
    f.append(3)  # an int in a float column: kept as an int, the column becomes a list
    assert not f.typed and type(f[4]) is int


def test_the_lean_history_is_spilled_not_held(tmp_path: Path) -> None:
    run = RunData(scenario={"seed": 1}, history=_history(2_000), server_logs=_logs(2_000))
    run.save(tmp_path / "run")
    lean = lean_run(tmp_path / "run")
    assert isinstance(lean.history, SpilledRecords) and len(lean.history) == 4_000
    assert lean.history.nbytes() <= 9 * 4_001  # an offset per record
    assert list(lean.history)[7] == lean.history[7] == lean.history[-3993]
    assert not (tmp_path / "run" / ".harness-tmp").exists()  # the file has no name: nothing left
