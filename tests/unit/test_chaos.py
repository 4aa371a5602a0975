"""The nemesis: seeded chaos plans, event-triggered DELETE, wrong-process probes, timeline actions."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from harness.chaos import Nemesis, NoNemesis, SessionChaos, plan_session_chaos
from harness.history import History
from harness.scenario import ChaosSpec, KillRestart, Outage
from harness.seams import LoopClock


def test_plan_is_seeded_and_respects_probabilities() -> None:
    spec = ChaosSpec(delete_during_proxy=1.0, duplicate_inflight=1.0, wrong_process_probes=1.0)
    a = plan_session_chaos(spec, 4, 3, random.Random(1))
    assert a == plan_session_chaos(spec, 4, 3, random.Random(1))
    assert a.delete_during_proxy_turn is not None and 0 <= a.delete_during_proxy_turn < 4
    assert a.disconnect_turn is None  # a session deleted mid-proxy is not also disconnected
    assert a.duplicate_turns == frozenset(range(4))
    assert a.wrong_process_turn is not None and a.wrong_process in (1, 2)
    none = plan_session_chaos(ChaosSpec(), 4, 3, random.Random(1))
    assert none.delete_during_proxy_turn is None and not none.duplicate_turns and none.wrong_process_turn is None


def test_single_server_never_probes_wrong_process() -> None:
    c = plan_session_chaos(ChaosSpec(wrong_process_probes=1.0), 3, 1, random.Random(2))
    assert c.wrong_process_turn is None


def test_forced_faults_drawn_per_turn() -> None:
    c = plan_session_chaos(ChaosSpec(forced_faults={"reset": 1.0}), 3, 1, random.Random(3))
    assert [c.forced_fault(t) for t in range(3)] == ["reset"] * 3


class Recorder:
    def __init__(self, status: int | None = 204) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.status = status

    async def __call__(self, method: str, url: str, body: Any) -> tuple[int | None, str | None]:
        self.calls.append((method, url, body))
        return (self.status, None) if self.status is not None else (None, "refused")


async def test_delete_fires_after_chat_sent_and_is_recorded() -> None:
    h = History(LoopClock())
    req = Recorder(204)
    n = Nemesis(ChaosSpec(), h, ["http://a"], req)
    chaos = SessionChaos(delete_during_proxy_turn=1, delete_delay_s=0.01)
    n.chat_sent(session="s1", server="http://a", turn=0, chaos=chaos)
    assert not n._tasks  # not this turn
    n.chat_sent(session="s1", server="http://a", turn=1, chaos=chaos)
    await n.drain()
    assert req.calls == [("DELETE", "http://a/sessions/s1", None)]
    kinds = [(e["f"], e["type"]) for e in h.events]
    assert kinds == [("chaos", "invoke"), ("chaos", "ok"), ("delete", "invoke"), ("delete", "ok")]
    assert h.events[1]["value"]["action"] == "delete_during_proxy" and n.deleted == {"s1": "http://a"}


async def test_wrong_process_probe_expects_404() -> None:
    h = History(LoopClock())
    n = Nemesis(ChaosSpec(), h, ["http://a", "http://b"], Recorder(404))
    await n.probe_wrong_process("s", 0, 1, 2)
    invokes = [e for e in h.events if e["f"] == "probe" and e["type"] == "invoke"]
    assert [p["method"] for p in invokes] == ["GET", "POST"] and {p["server"] for p in invokes} == {"http://b"}
    assert [e["type"] for e in h.events if e["f"] == "probe" and e["type"] != "invoke"] == ["ok", "ok"]
    n2 = Nemesis(ChaosSpec(), h, ["http://a", "http://b"], Recorder(200))
    await n2.probe_wrong_process("s", 0, 1, 2)
    assert h.events[-1]["type"] == "fail" and h.events[-1]["status"] == 200


class FakeProcs:
    def __init__(self) -> None:
        self.log: list[str] = []

    async def kill(self, index: int) -> None:
        self.log.append(f"kill {index}")

    async def restart(self, index: int) -> None:
        self.log.append(f"restart {index}")


async def test_timeline_kill_restart_and_outage_restore_plan() -> None:
    h = History(LoopClock())
    h.now()
    req = Recorder(200)
    procs = FakeProcs()
    spec = ChaosSpec(
        kill_restart=(KillRestart(process=1, at_s=0.01, restart_after_s=0.01),),
        backend_outage=(Outage(at_s=0.0, duration_s=0.02, fault="reset"),),
    )
    base = {"rules": [{"fault": "abort", "probability": 0.1}]}
    n = Nemesis(spec, h, ["http://a", "http://b"], req, backend_url="http://be", base_plan=base, processes=procs)
    await asyncio.wait_for(n.timeline(), 5)
    assert procs.log == ["kill 1", "restart 1"]
    puts = [c for c in req.calls if c[0] == "PUT"]
    assert puts[0][2]["rules"][0] == {"name": "outage", "fault": "reset"} and puts[-1][2] == base
    actions = [e["value"]["action"] for e in h.events if e["f"] == "chaos" and e["type"] == "ok"]
    assert sorted(actions) == ["backend_outage_end", "backend_outage_start", "kill", "restart"]


async def test_noop_nemesis_does_nothing() -> None:
    h = History(LoopClock())
    n = NoNemesis(h)
    n.chat_sent(session="s", server="x", turn=0, chaos=SessionChaos(delete_during_proxy_turn=None))
    await n.timeline()
    await n.drain()
    assert h.events == []


class Unsent(Recorder):
    """A requester that gives up before the request left, and says so as control_request does."""

    async def __call__(self, method: str, url: str, body: Any) -> tuple[int | None, str | None]:
        from harness.agents._clients import REQUEST_PROGRESS

        self.calls.append((method, url, body))
        progress = REQUEST_PROGRESS.get()
        assert progress is not None  # every nemesis request is traced
        progress["sent"] = False
        return None, "connect timeout"


async def test_every_nemesis_request_records_whether_it_was_sent() -> None:
    """DELETEs, wrong-process probes and backend plan changes that fail carry ``sent``, as the agents' do."""
    h = History(LoopClock())
    h.now()
    spec = ChaosSpec(backend_outage=(Outage(at_s=0.0, duration_s=0.0, fault="reset"),))
    n = Nemesis(spec, h, ["http://a", "http://b"], Unsent(), backend_url="http://be", base_plan={})
    await n.delete("s", "http://a", reason="test")
    await n.probe_wrong_process("s", 0, 1, 0)
    await asyncio.wait_for(n.timeline(), 5)
    ended = [e for e in h.events if e["type"] in ("info", "fail")]
    assert [e["f"] for e in ended] == ["delete", "probe", "probe", "chaos", "chaos"]
    assert all(e.get("sent") is False for e in ended), ended
