"""The merge of a sharded live run (harness/distributed/live.py; issue 15). No Ray needed, milliseconds."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from harness.distributed.live import (
    ClockSync,
    _latency_hdr,
    actor_of,
    merge_hdr,
    merge_histories,
    merge_self,
    shard_concurrency,
)
from harness.history import History, operations
from harness.report.buckets import extract
from harness.rundata import RunData
from harness.scenario import Scenario


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t


def _chat(h: History, clock: FakeClock, session: str, t0: float, t1: float) -> None:
    clock.t = t0
    op = h.invoke(process=f"agent-{session}", f="chat", session=session, server="s", turn=1, attempt=1)
    clock.t = t1
    h.ok(op, status=200)


def test_assignment_is_a_pure_balanced_function_of_seed_and_index() -> None:
    a = [actor_of(7, i, 3) for i in range(30)]
    assert a == [actor_of(7, i, 3) for i in range(30)]  # no state: the same seed gives the same shards
    assert sorted(a.count(k) for k in range(3)) == [10, 10, 10]
    assert {actor_of(s, 0, 2) for s in range(20)} == {0, 1}  # the seed rotates the assignment
    assert sum(shard_concurrency(10, 3)) == 10 and shard_concurrency(2, 2) == [1, 1]
    with pytest.raises(ValueError):  # more actors than sessions may run at once: the scenario's cap exceeded
        shard_concurrency(1, 2)


def test_the_best_ping_sets_offset_and_uncertainty() -> None:
    # actor clock = driver time + 100; pings of 10 ms, 2 ms and 6 ms round trip
    pings = [(1.0, 101.004, 1.010), (2.0, 102.001, 2.002), (3.0, 103.003, 3.006)]
    s = ClockSync.from_pings(pings)
    assert abs(s.start - 100.0) < 1e-9 and abs(s.uncertainty - 0.001) < 1e-9


def test_merge_widens_actor_ops_so_close_ops_of_two_processes_overlap() -> None:
    cd, ca = FakeClock(), FakeClock()
    driver, actor = History(cd), History(ca)
    cd.t = ca.t = 0.0
    driver.now(), actor.now()
    cd.t = 1.0
    kill = driver.invoke(process="nemesis", f="chaos", value="kill")
    cd.t = 1.001
    driver.ok(kill, value="kill")
    _chat(actor, ca, "a", 1.0015, 1.2)  # invoked 0.5 ms after the kill completed, as the actor's clock says
    merged = merge_histories(driver.events, [(actor.events, 0.002)])
    assert [e["index"] for e in merged] == list(range(len(merged)))
    pairs = list(operations(merged))
    assert len({inv["op"] for inv, _ in pairs}) == 2  # op ids stay unique
    (k_inv, k_done), (c_inv, c_done) = sorted(pairs, key=lambda p: p[0]["f"])
    assert c_inv["time"] < k_done["time"]  # within the uncertainty: overlapping, not "after the kill"
    assert c_inv["clock_uncertainty"] == c_done["clock_uncertainty"] == 0.002
    assert "clock_uncertainty" not in k_inv
    for inv, done in pairs:
        assert done is not None and merged.index(inv) < merged.index(done)
    # the report measures the chat on one clock: the widening comes off again
    (req,) = extract(RunData(scenario={}, history=merged)).requests
    assert abs((req.end - req.sent) - 0.1985) < 1e-6 and abs(req.sent - 1.0015) < 1e-6


def test_actor_histograms_are_added_not_averaged() -> None:
    ca, cb = FakeClock(), FakeClock()
    a, b = History(ca), History(cb)
    for i in range(99):
        _chat(a, ca, f"a{i}", 10.0 * i, 10.0 * i + 0.010)  # 99 chats of 10 ms on one actor
    _chat(b, cb, "b", 0.0, 1.0)  # one of 1 s on the other
    total = merge_hdr([_latency_hdr(a.events), _latency_hdr(b.events), ""])
    assert total.get_total_count() == 100
    assert 9_990 <= total.get_value_at_percentile(99.0) <= 10_010  # the pooled p99 (an average of p99s: 505 ms)
    assert total.get_max_value() >= 999_000
    back = HdrHistogram.decode(base64.b64decode(_latency_hdr(b.events)))
    assert back.get_total_count() == 1


def test_saturation_of_any_process_makes_the_run_saturated() -> None:
    quiet: dict[str, Any] = {"cpu_fraction": 0.2, "reasons": [], "saturated": False, "lag_limit_ms": 100.0}
    busy = {**quiet, "cpu_fraction": 0.99, "reasons": ["harness CPU 99% of a core > 95%"], "saturated": True}
    m = merge_self(quiet, [quiet, busy], [1.0, 2.0, 300.0])
    assert m["saturated"] and m["cpu_fraction"] == 0.99 and m["reasons"] == ["agent actor 1: " + busy["reasons"][0]]
    assert m["samples"] == 3 and m["lag_max_ms"] == 300.0 and m["late_samples"] == 1
    assert not merge_self(quiet, [quiet, quiet], [1.0])["saturated"]


def test_one_actors_own_order_survives_the_widening() -> None:
    """Widening is for comparisons across processes: two ops of one actor (one clock) keep their order."""
    cd, ca = FakeClock(), FakeClock()
    driver, actor = History(cd), History(ca)
    driver.now(), actor.now()
    _chat(actor, ca, "a", 1.0, 1.1)  # turn 1 ...
    _chat(actor, ca, "a", 1.1002, 1.3)  # ... and turn 2 sent 0.2 ms later: well inside u = 2 ms
    _chat(actor, ca, "a", 1.300005, 1.4)  # sent 5 us after turn 2 completed: too close to move either
    cd.t = 1.5
    kill = driver.invoke(process="nemesis", f="chaos", value="kill")
    driver.ok(kill, value="kill")
    merged = merge_histories(driver.events, [(actor.events, 0.002)])
    chats = [(inv, done) for inv, done in operations(merged) if inv["f"] == "chat"]
    (i1, d1), (i2, d2), (i3, d3) = chats
    assert d1 is not None and d2 is not None and d3 is not None
    assert d1["time"] < i2["time"]  # still "turn 1 completed before turn 2 was sent"
    assert i1["time"] == round(1.0 - 0.002, 6)  # nothing of the actor before it: the full u
    assert d3["time"] == round(1.4 + 0.002, 6)  # nothing after it: the full u, so the kill 0.1 s later...
    (k_inv, _), *_ = [(inv, done) for inv, done in operations(merged) if inv["f"] == "chaos"]
    assert d3["time"] < k_inv["time"]  # ... is still after it, and one 1 ms later would not be
    assert d2["time"] == 1.3 and i3["time"] == 1.300005 and d2["time"] < i3["time"]
    # the report takes each event's own shift off: the latencies are the actor's own
    reqs = extract(RunData(scenario={}, history=merged)).requests
    assert [round(r.end - r.sent, 6) for r in sorted(reqs, key=lambda r: r.sent)] == [0.1, 0.1998, 0.099995]


def test_the_streamed_history_is_the_final_merge_line_for_line() -> None:
    """A cut Ray run keeps what was streamed: a prefix of the merged history, and at the end the whole of it."""
    import io
    import json

    from harness.distributed.live import HistoryStream

    cd, ca, cb = FakeClock(), FakeClock(), FakeClock()
    driver, a, b = History(cd), History(ca), History(cb)
    driver.now(), a.now(), b.now()
    sink = io.StringIO()
    stream = HistoryStream(sink, [0.002, 0.001])
    taken = [0, 0]
    for step in range(40):  # 40 polls; each actor runs back-to-back chats, the driver a chaos event now and then
        t = 0.05 * step
        _chat(a, ca, f"a{step % 3}", t + 0.0001, t + 0.03)
        _chat(b, cb, f"b{step % 2}", t + 0.0302, t + 0.0499)
        if step % 7 == 0:
            cd.t = t + 0.01
            driver.event(process="nemesis", f="chaos", value={"action": "kill", "process": 0})
        cd.t = ca.t = cb.t = t + 0.05
        for k, h in enumerate((a, b)):
            stream.add(k, {"events": h.events[taken[k] :], "now": h.now()})
            taken[k] = len(h.events)
        stream.write(driver.events, driver.now())
    partial = [json.loads(line) for line in sink.getvalue().splitlines()]
    merged = merge_histories(driver.events, [(a.events, 0.002), (b.events, 0.001)])
    assert 0 < len(partial) < len(merged)  # the last few ms are held back: a later event might precede them
    assert partial == json.loads(json.dumps(merged[: len(partial)]))
    stream.finish(merged)
    assert [json.loads(line) for line in sink.getvalue().splitlines()] == json.loads(json.dumps(merged))


def test_a_per_node_deployment_gives_each_session_to_an_actor_of_its_servers_node() -> None:
    import dataclasses

    from harness.distributed.live import assign_by_node, group_size
    from harness.scenario import TargetSpec, WorkloadSpec
    from harness.workload import plan_sessions

    nodes = ["10.0.0.1", "10.0.0.1", "10.0.0.2"]  # two servers on one node, one on the other
    sc = Scenario(name="t", seed=3, target=TargetSpec(processes=3), workload=WorkloadSpec(sessions=60))
    shards = assign_by_node(sc, nodes, 2)
    assert sorted(i for s in shards for i in s) == list(range(60))  # every session once
    server = {p.index: p.server for p in plan_sessions(sc, 3)}
    for a, shard in enumerate(shards):
        assert shard and {nodes[server[i]] for i in shard} == {nodes[0] if a < 2 else nodes[2]}
    assert shards == assign_by_node(dataclasses.replace(sc), nodes, 2)  # a pure function of the plans
    assert group_size(2, 4, 6) == 3 and group_size(2, 2, 64) == 2
    with pytest.raises(ValueError):
        group_size(3, 1, 2)  # three nodes cannot each run a session at a concurrency of 2


def test_target_nodes_need_one_name_per_url(tmp_path: Any) -> None:
    from harness.scenario import ScenarioError, load_scenario

    base = '[target]\nkind = "urls"\nurls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]\n'
    (tmp_path / "ok.toml").write_text(base + 'nodes = ["a", "b"]\n')
    assert load_scenario(str(tmp_path / "ok.toml")).target.nodes == ("a", "b")
    (tmp_path / "bad.toml").write_text(base + 'nodes = ["a"]\n')
    with pytest.raises(ScenarioError, match="one node name per url"):
        load_scenario(str(tmp_path / "bad.toml"))
