"""Bucket series out of chat_done lines; client latency from the intended start."""

from __future__ import annotations

from typing import Any

import pytest

from harness.report.buckets import SERVER_BUCKETS, extract, run_variant
from harness.rundata import RunData

try:
    from tests.unit.report_fixtures import make_run
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import make_run  # type: ignore[no-redef]


def test_every_chat_done_line_becomes_one_server_sample_per_bucket() -> None:
    run, _ = make_run(seed=5, sessions=12, processes=3)
    data = extract(run)
    lines = [line for line in run.server_logs if line["event"] == "chat_done"]
    assert len(data.server) == len(lines) > 0
    for bucket in SERVER_BUCKETS:
        assert data.values(bucket) == [line[bucket] for line in lines]
    assert {r.process for r in data.server} == {f"{line['pid']}@{line['worker_port']}" for line in lines}
    assert len({r.process for r in data.server}) > 1


def test_split_by_outcome_keeps_every_sample() -> None:
    run, _ = make_run(seed=1, sessions=30)
    data = extract(run)
    outcomes = {r.outcome for r in data.server}
    assert {"committed", "aborted"} <= outcomes
    total = sum(len(data.values("total_ms", outcome=o)) for o in outcomes)
    assert total == len(data.server)
    client = {s.outcome for s in data.series("client_request_ms")}
    assert {"ok", "aborted"} <= client


def test_variant_comes_from_the_scenario_target() -> None:
    assert run_variant({"target": {"variants": ["lock_restoration", "conflict_surface"]}}) == (
        "lock_restoration+conflict_surface"
    )
    assert run_variant({}) == "default"
    run, _ = make_run(seed=2, sessions=3, variants=["lock_restoration"])
    assert {s.variant for s in extract(run).series("total_ms")} == {"lock_restoration"}


def _ev(index: int, kind: str, op: int, t: float, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "index": index,
        "type": kind,
        "op": op,
        "process": "agent-0",
        "f": "chat",
        "session": "s1",
        "server": "http://127.0.0.1:9",
        "turn": 0,
        "attempt": 0,
        "request_id": f"r{op}",
        "intended": t,
        "time": t,
    }
    base.update(extra)
    return base


def test_request_latency_is_measured_from_the_intended_start_so_stalls_count() -> None:
    history = [
        # intended at 1.0 s, but the client could only send at 3.0 s: the server saw 100 ms
        _ev(0, "invoke", 1, 3.0, intended=1.0),
        _ev(1, "ok", 1, 3.1, status=200, aborted=False),
    ]
    data = extract(RunData(scenario={}, history=history))
    (req,) = data.requests
    assert req.latency_ms == pytest.approx(2100.0)
    assert req.service_ms == pytest.approx(100.0)
    assert data.values("client_request_ms") == [pytest.approx(2100.0)]


def test_turn_latency_includes_retries_from_the_first_intended_start() -> None:
    history = [
        _ev(0, "invoke", 1, 0.0),
        _ev(1, "ok", 1, 0.5, status=200, aborted=True),
        _ev(2, "invoke", 2, 0.6, attempt=1),
        _ev(3, "info", 2, 5.6, attempt=1, error="timeout"),
        _ev(4, "invoke", 3, 5.7, attempt=2),
        _ev(5, "ok", 3, 5.9, attempt=2, status=200, aborted=False),
        # another turn, single attempt
        _ev(6, "invoke", 4, 6.0, turn=1),
        _ev(7, "ok", 4, 6.05, turn=1, status=200),
    ]
    data = extract(RunData(scenario={}, history=history))
    assert [r.outcome for r in data.requests] == ["aborted", "unknown", "ok", "ok"]
    turn0, turn1 = data.turns
    assert (turn0.turn, turn0.attempts, turn0.outcome) == (0, 3, "ok")
    assert turn0.latency_ms == pytest.approx(5900.0)
    assert turn1.latency_ms == pytest.approx(50.0)


def test_in_flight_count_and_marked_events() -> None:
    history = [
        _ev(0, "invoke", 1, 0.0),
        _ev(1, "invoke", 2, 0.1, session="s2"),
        {
            "index": 2,
            "type": "invoke",
            "op": 9,
            "f": "chaos",
            "process": "nemesis",
            "time": 0.15,
            "intended": 0.15,
            "value": {"kind": "delete_during_proxy"},
        },
        {
            "index": 3,
            "type": "info",
            "op": 9,
            "f": "chaos",
            "process": "nemesis",
            "time": 0.16,
            "intended": 0.15,
            "value": {"kind": "delete_during_proxy"},
        },
        {
            "index": 4,
            "type": "invoke",
            "op": 10,
            "f": "fault",
            "process": "nemesis",
            "time": 0.17,
            "intended": 0.17,
            "value": "abort",
        },
        _ev(5, "ok", 1, 0.2, status=200),
        _ev(6, "fail", 2, 0.3, session="s2", status=404),
    ]
    data = extract(RunData(scenario={}, history=history))
    assert [level for _, level in data.inflight] == [1, 2, 1, 0]
    assert [(e.kind, e.label) for e in data.events] == [("chaos", "delete_during_proxy"), ("fault", "abort")]
    assert [r.outcome for r in data.requests] == ["ok", "fail"]


def test_backend_faults_are_marked_when_their_request_completed() -> None:
    history = [_ev(0, "invoke", 1, 0.0, request_id="abc"), _ev(1, "ok", 1, 0.25, request_id="abc", status=502)]
    executions = {"s1": [{"turn": 0, "attempt": 0, "request_id": "abc", "fault": "http_502"},
                         {"turn": 1, "attempt": 0, "request_id": "zzz", "fault": None}]}  # fmt: skip
    data = extract(RunData(scenario={}, history=history, backend_executions=executions))
    assert [(e.time, e.kind, e.label) for e in data.events] == [(0.25, "fault", "http_502")]


def test_unmatched_invokes_are_counted() -> None:
    data = extract(RunData(scenario={}, history=[_ev(0, "invoke", 1, 0.0)]))
    assert data.unmatched_invokes == 1 and data.requests == []
