"""Forced interleavings of the three-phase split lock, DELETE and aborted turns (HTTP level).

The controllable backend parks a chat's Phase 2 on an event and the gate
executor parks Phase 1 *under the lock*, so each test pins one exact
interleaving rather than hoping a race shows up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from server_fixtures import SYSTEM, hold_in_proxy, lock_queue, make_rig, user


def reply(r: httpx.Response) -> dict[str, Any]:
    msg: dict[str, Any] = r.json()["choices"][0]["message"]
    return msg


# -- DELETE ------------------------------------------------------------------------------------


async def test_delete_during_proxy_chat_200_delete_204_then_404_forever() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        chat = await hold_in_proxy(r, sid, [user("hi")])
        d = await asyncio.wait_for(r.client.delete(f"/sessions/{sid}"), 2)  # does not wait for the backend
        assert d.status_code == 204 and not chat.done()
        assert (await r.get(sid)).status_code == 404
        r.backend.release.set()
        resp = await chat
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
        assert r.done()[0]["outcome"] == "closing_skip"
        for _ in range(3):
            assert (await r.get(sid)).status_code == 404
            assert (await r.chat(sid, [user("hi")])).status_code == 404
            assert (await r.client.delete(f"/sessions/{sid}")).status_code == 404
        stats = (await r.client.get("/stats")).json()
        assert stats["sessions"] == 0 and stats["turns_completed"] == 0 and stats["inflight"] == 0


async def test_chat_while_delete_waits_for_the_lock_is_404() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        r.executor.hold = True
        a = asyncio.create_task(r.chat(sid, [user("a")]))  # parks in Phase 1, holding the lock
        await r.executor.wait_parked(1)
        b = asyncio.create_task(r.chat(sid, [user("b")]))  # queued on the lock before the DELETE
        await lock_queue(r.server, sid, 1)
        d = asyncio.create_task(r.client.delete(f"/sessions/{sid}"))
        await lock_queue(r.server, sid, 2)  # DELETE set closing and waits for the lock
        c = await r.chat(sid, [user("c")])  # arrives while DELETE waits
        assert c.status_code == 404
        r.executor.hold = False
        r.executor.release.set()
        ra, rb, rd = await asyncio.gather(a, b, d)
        assert rb.status_code == 404, rb.text  # re-checked closing after it got the lock
        assert rd.status_code == 204
        assert ra.status_code == 200  # its Phase 1 ran before closing; Phase 3 skips the write
        outcomes = {e["req_id"]: e["outcome"] for e in r.done()}
        assert outcomes[ra.headers["x-req-id"]] == "closing_skip"
        assert outcomes[rb.headers["x-req-id"]] == "not_found"
        assert (await r.get(sid)).status_code == 404


async def test_double_delete_204_then_404_also_concurrently() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert (await r.client.delete(f"/sessions/{sid}")).status_code == 204
        assert (await r.client.delete(f"/sessions/{sid}")).status_code == 404
        sid2 = await r.new_session()
        r.executor.hold = True
        a = asyncio.create_task(r.chat(sid2, [user("a")]))
        await r.executor.wait_parked(1)
        d1 = asyncio.create_task(r.client.delete(f"/sessions/{sid2}"))
        await lock_queue(r.server, sid2, 1)
        d2 = await r.client.delete(f"/sessions/{sid2}")  # the first one is still waiting for the lock
        assert d2.status_code == 404
        r.executor.release.set()
        assert (await d1).status_code == 204 and (await a).status_code == 200


# -- concurrent writers ------------------------------------------------------------------------


async def test_four_identical_concurrent_requests_commit_exactly_once() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        first = await r.chat(sid, [SYSTEM, user("hi")])
        msgs = [SYSTEM, user("hi"), reply(first), user("next")]
        r.backend.hold = True
        tasks = [asyncio.create_task(r.chat(sid, msgs, headers={"x-request-id": f"dup-{i}"})) for i in range(4)]
        await r.backend.wait_entered(4)  # all four are past Phase 1 with expected num_assistant = 1
        r.backend.release.set()
        resps = await asyncio.gather(*tasks)
        assert [x.status_code for x in resps] == [200] * 4
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed", "committed"]
        assert st["metadata"]["num_assistant"] == 2
        outcomes = sorted(e["outcome"] for e in r.done())
        assert outcomes == ["committed", "committed"] + ["state_changed_skip"] * 3
        warns = r.logs.events("state_changed_during_proxy")
        assert len(warns) == 3
        for w in warns:
            assert w["level"] == "WARNING" and w["expected_num_assistant"] == 1 and w["actual_num_assistant"] == 2
            assert w["caller_request_id"].startswith("dup-") and w["proxy_elapsed_ms"] >= 0
            assert w["inflight_chat_count"] >= 1 and w["worker_port"] == 9999


async def test_rollback_commit_in_between_is_caught_even_when_num_assistant_is_unchanged() -> None:
    """ABA: a one-step rollback commits and leaves num_assistant where it was."""
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        a1 = await r.chat(sid, [user("one")])
        m2 = [user("one"), reply(a1), user("two")]
        a2 = await r.chat(sid, m2)
        extend = asyncio.create_task(r.chat(sid, [*m2, reply(a2), user("three")]))
        r.backend.hold = True
        await r.backend.wait_entered(1)
        r.backend.hold = False
        retry = await r.chat(sid, [user("one"), reply(a1), user("two, again")])  # rolls back turn 2 and commits
        assert retry.status_code == 200
        assert (await r.state(sid))["metadata"]["num_assistant"] == 2
        r.backend.release.set()
        assert (await extend).status_code == 200
        st = await r.state(sid)
        assert st["metadata"]["messages"][2]["content"] == "two, again"
        assert st["metadata"]["num_assistant"] == 2 and len(st["records"]) == 2
        assert r.done()[-1]["outcome"] == "state_changed_skip"


# -- aborted turns and provisional records -----------------------------------------------------


async def test_abort_then_provisional_then_superseded_by_the_retry() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        a1 = await r.chat(sid, [user("one")])
        msgs = [user("one"), reply(a1), user("two")]
        before = (await r.state(sid))["metadata"]
        ab = await r.chat(sid, msgs, headers={"x-test-mode": "abort", "x-turn": "1", "x-attempt": "0"})
        assert ab.status_code == 200 and ab.headers["x-sglang-aborted"] == "1"
        assert ab.json()["choices"][0]["finish_reason"] == "abort"
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed", "provisional"]
        assert st["records"][1]["attempt"] == 0 and st["records"][1]["req_id"] == ab.headers["x-req-id"]
        assert st["metadata"]["token_ids"] == before["token_ids"] and st["metadata"]["num_assistant"] == 1
        assert r.done()[-1]["outcome"] == "aborted"
        ok = await r.chat(sid, msgs, headers={"x-turn": "1", "x-attempt": "1"})
        assert ok.status_code == 200 and "x-sglang-aborted" not in ok.headers
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed", "committed"]
        assert st["records"][1]["attempt"] == 1 and st["metadata"]["num_assistant"] == 2
        assert (await r.client.get("/stats")).json()["turns_completed"] == 2


async def test_retries_exhausted_leave_one_provisional_at_the_tail() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        a1 = await r.chat(sid, [user("one")])
        msgs = [user("one"), reply(a1), user("two")]
        ids = []
        for attempt in range(3):
            ab = await r.chat(sid, msgs, headers={"x-test-mode": "abort", "x-attempt": str(attempt)})
            assert ab.headers["x-sglang-aborted"] == "1"
            ids.append(ab.headers["x-req-id"])
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed", "provisional"]
        assert st["records"][-1]["req_id"] == ids[-1] and st["records"][-1]["attempt"] == 2  # newest replaced older
        assert st["metadata"]["num_assistant"] == 1
        # an aborted first turn keeps the session empty of tokens
        sid2 = await r.new_session()
        ab = await r.chat(sid2, [user("x")], headers={"x-test-mode": "abort"})
        st2 = await r.state(sid2)
        assert ab.headers["x-sglang-aborted"] == "1" and st2["metadata"]["token_ids"] == []
        assert [x["kind"] for x in st2["records"]] == ["provisional"]


async def test_aborted_answer_during_delete_keeps_its_header_and_writes_nothing() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        chat = await hold_in_proxy(r, sid, [user("hi")], headers={"x-test-mode": "abort"})
        assert (await r.client.delete(f"/sessions/{sid}")).status_code == 204
        r.backend.release.set()
        resp = await chat
        assert resp.status_code == 200 and resp.headers["x-sglang-aborted"] == "1"
        assert r.done()[0]["outcome"] == "closing_skip"
