"""Each variant changes exactly the behaviour it names, visible at the HTTP level.

The known-bad variants must really exhibit their bug: the harness proves it
has teeth by catching them, so a bad variant that behaves correctly would
make that proof vacuous.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from server_fixtures import SYSTEM, Rig, hold_in_proxy, lock_queue, make_rig, user


def reply(r: httpx.Response) -> dict[str, Any]:
    msg: dict[str, Any] = r.json()["choices"][0]["message"]
    return msg


async def four_identical(r: Rig, sid: str) -> list[httpx.Response]:
    assert r.backend is not None
    r.backend.hold = True
    tasks = [asyncio.create_task(r.chat(sid, [SYSTEM, user("hi")])) for _ in range(4)]
    await r.backend.wait_entered(4)
    r.backend.release.set()
    return list(await asyncio.gather(*tasks))


# -- design alternatives ----------------------------------------------------------------------


async def test_lock_restore_serializes_and_delete_waits_for_the_backend() -> None:
    async with make_rig("lock_restore") as r:
        assert r.backend is not None
        sid = await r.new_session()
        chat = await hold_in_proxy(r, sid, [user("hi")])
        delete = asyncio.create_task(r.client.delete(f"/sessions/{sid}"))
        await asyncio.sleep(0.05)
        assert not delete.done()  # DELETE waits behind the whole turn
        r.backend.release.set()
        resp, d = await asyncio.gather(chat, delete)
        assert resp.status_code == 200 and d.status_code == 204
        # concurrent duplicates never overlap: each sees the previous commit and is a 1-step retry
        sid2 = await r.new_session()
        r.backend.hold = False
        resps = await asyncio.gather(*(r.chat(sid2, [SYSTEM, user("hi")]) for _ in range(4)))
        assert [x.status_code for x in resps] == [200] * 4
        assert r.logs.events("state_changed_during_proxy") == []
        st = await r.state(sid2)
        assert st["metadata"]["num_assistant"] == 1 and len(st["records"]) == 1


async def test_delete_cancel_cancels_the_backend_call_and_aborts_its_rid() -> None:
    async with make_rig("delete_cancel") as r:
        assert r.backend is not None
        sid = await r.new_session()
        chat = await hold_in_proxy(r, sid, [user("hi")])
        d = await asyncio.wait_for(r.client.delete(f"/sessions/{sid}"), 2)
        assert d.status_code == 204
        resp = await asyncio.wait_for(chat, 2)  # did not need the backend to finish
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "SessionNotFound"
        rid = r.backend.calls[0]["body"]["rid"]
        assert rid == f"{sid}-{resp.headers['x-req-id']}"
        assert r.backend.aborts == [{"rid": rid}]
        assert r.done()[0]["outcome"] == "cancelled"
        assert (await r.client.get("/stats")).json()["inflight"] == 0


async def test_conflict_409_surfaces_the_skipped_update() -> None:
    async with make_rig("conflict_409") as r:
        sid = await r.new_session()
        resps = await four_identical(r, sid)
        assert sorted(x.status_code for x in resps) == [200, 409, 409, 409]
        conflict = next(x for x in resps if x.status_code == 409)
        assert conflict.json()["error"]["type"] == "SessionStateConflictError"
        assert len((await r.state(sid))["records"]) == 1
        assert sorted(e["outcome"] for e in r.done()) == ["committed", "conflict", "conflict", "conflict"]


# -- known-bad variants -----------------------------------------------------------------------


async def test_auto_create_resurrects_deleted_sessions() -> None:
    async with make_rig("auto_create") as r:
        sid = await r.new_session()
        assert (await r.client.delete(f"/sessions/{sid}")).status_code == 204
        resp = await r.chat(sid, [user("hi")])
        assert resp.status_code == 200  # BUG: should be 404
        assert (await r.get(sid)).status_code == 200  # the deleted session came back
        assert (await r.chat("never-created", [user("hi")])).status_code == 200


async def test_commit_aborted_commits_partial_turn_without_the_header() -> None:
    async with make_rig("commit_aborted") as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers={"x-test-mode": "abort"})
        assert resp.status_code == 200 and "x-sglang-aborted" not in resp.headers  # BUG
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed"] and st["metadata"]["num_assistant"] == 1


async def test_no_closing_recheck_answers_200_for_a_turn_written_into_a_dead_session() -> None:
    async with make_rig("no_closing_recheck") as r:
        sid = await r.new_session()
        r.executor.hold = True
        a = asyncio.create_task(r.chat(sid, [user("a")]))
        await r.executor.wait_parked(1)
        b = asyncio.create_task(r.chat(sid, [user("b")]))
        await lock_queue(r.server, sid, 1)
        d = asyncio.create_task(r.client.delete(f"/sessions/{sid}"))
        await lock_queue(r.server, sid, 2)
        r.executor.release.set()
        _, rb, rd = await asyncio.gather(a, b, d)
        assert rd.status_code == 204
        assert rb.status_code == 200  # BUG: should be 404; its turn is lost with the session
        outcomes = {e["outcome"] for e in r.done()}
        assert "committed" in outcomes and not outcomes & {"closing_skip", "not_found"}
        assert (await r.get(sid)).status_code == 404


async def test_no_num_assistant_guard_lets_stale_writers_commit() -> None:
    async with make_rig("no_num_assistant_guard") as r:
        sid = await r.new_session()
        resps = await four_identical(r, sid)
        assert [x.status_code for x in resps] == [200] * 4
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed"] * 4  # BUG: one turn, four records
        assert st["metadata"]["num_assistant"] == 1
        assert r.logs.events("state_changed_during_proxy") == []


async def test_provisional_never_superseded_leaves_two_records_for_one_turn() -> None:
    async with make_rig("provisional_never_superseded") as r:
        sid = await r.new_session()
        ab = await r.chat(sid, [user("hi")], headers={"x-test-mode": "abort"})
        assert ab.headers["x-sglang-aborted"] == "1"
        assert (await r.chat(sid, [user("hi")])).status_code == 200
        kinds = [x["kind"] for x in (await r.state(sid))["records"]]
        assert kinds == ["provisional", "committed"]  # BUG: provisional kept, and not at the tail


async def test_leak_deleted_keeps_deleted_sessions_in_memory() -> None:
    async with make_rig("leak_deleted") as r:
        for _ in range(3):
            sid = await r.new_session()
            assert (await r.client.delete(f"/sessions/{sid}")).status_code == 204
            assert (await r.get(sid)).status_code == 404
        stats = (await r.client.get("/stats")).json()
        assert stats["sessions"] == 3  # BUG: should be 0
        assert (await r.client.get("/health")).json()["sessions"] == 3


async def test_inflight_leak_counter_only_goes_down_on_the_happy_path() -> None:
    async with make_rig("inflight_leak") as r:
        sid = await r.new_session()
        assert (await r.chat(sid, [user("hi")])).status_code == 200
        assert (await r.client.get("/stats")).json()["inflight"] == 0
        await r.chat("missing", [user("hi")])
        await r.chat(sid, [user("x")], headers={"x-test-mode": "status:503"})
        assert (await r.client.get("/stats")).json()["inflight"] == 2  # BUG
        assert r.done()[-1]["inflight_now"] == 2


async def test_echo_upstream_framing_duplicates_framing_headers() -> None:
    async with make_rig("echo_upstream_framing") as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], stream=True)
        lengths = resp.headers.get_list("content-length")
        assert len(lengths) == 2 and len(set(lengths)) == 2  # BUG: ours and the backend's, disagreeing
        assert resp.headers["server"] == "control-backend"
        assert resp.headers["date"] == "Thu, 01 Jan 1970 00:00:00 GMT"


async def test_correct_server_never_echoes_backend_framing() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        for resp in (
            await r.chat(sid, [user("hi")]),
            await r.chat(sid, [user("x")], stream=True),
            await r.chat(sid, [user("x")], headers={"x-test-mode": "status:503"}),
        ):
            assert len(resp.headers.get_list("content-length")) == 1
            assert "server" not in resp.headers and "date" not in resp.headers
