"""The nemesis's DELETEs record ``sent`` as the agents' requests do, so liveness's ``sent`` rules apply to them.

Over the simulation's network with a real (short) timeout: a DELETE whose client gave up while the
request was still on its way (a slow client box: the send delay) records ``sent: false``; one that
reached a server that then hung records ``sent: true``. About half a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from harness.chaos import Nemesis
from harness.history import History
from harness.runner._drive import control_request
from harness.scenario import ChaosSpec
from harness.seams import LoopClock
from harness.sim.world import SimNetwork


async def _hang(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(3600)


@pytest.mark.parametrize(("send_delay_s", "sent"), [(0.0, True), (0.3, False)])
def test_a_timed_out_nemesis_delete_says_whether_it_left_the_client(send_delay_s: float, sent: bool) -> None:
    async def go() -> dict[str, Any]:
        net = SimNetwork(client_delay=(send_delay_s, send_delay_s) if send_delay_s else None)
        net.add("s.sim:1", _hang, client_facing=True)
        history = History(LoopClock())
        async with httpx.AsyncClient(transport=net, timeout=0.1) as control:
            nemesis = Nemesis(ChaosSpec(), history, ["http://s.sim:1"], control_request(control))
            assert await nemesis.delete("abc", "http://s.sim:1", reason="delete_during_proxy") is None
        await net.drain()
        (done,) = [e for e in history.events if e["type"] != "invoke"]
        return done

    done = asyncio.run(go())
    assert done["type"] == "info" and "Timeout" in done["error"]
    assert done["sent"] is sent
