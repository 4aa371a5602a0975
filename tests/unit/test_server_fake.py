"""The reference server against the real fake SGLang (in-process, ASGI transport).

Where server_backend.py forces interleavings, this pins that the server and
the project's fake agree on the wire: token ids, aborts, tool calls, malformed
bodies and transport faults as the fake produces them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from server_fixtures import SYSTEM, make_rig, user

from harness.fake_sglang import create_app as create_fake
from harness.fake_sglang.plan import MALFORMED_FAULTS
from harness.tokenizer import load_tokenizer

TOK = load_tokenizer(None)


def reply(r: httpx.Response) -> dict[str, Any]:
    msg: dict[str, Any] = r.json()["choices"][0]["message"]
    return msg


def hdr(turn: int, attempt: int = 0, fault: str | None = None) -> dict[str, str]:
    h = {"x-turn": str(turn), "x-attempt": str(attempt), "x-request-id": f"t{turn}a{attempt}"}
    if fault:
        h["x-fake-fault"] = fault
    return h


async def test_multi_turn_episode_with_tool_calls_keeps_canonical_tokens() -> None:
    async with make_rig(backend_app=create_fake(seed=3)) as r:
        sid = await r.new_session()
        msgs: list[dict[str, Any]] = [SYSTEM, user("plan a trip")]
        for turn in range(5):
            resp = await r.chat(sid, msgs, headers=hdr(turn, fault="tool_calls" if turn % 2 == 0 else None))
            assert resp.status_code == 200, resp.text
            msg = reply(resp)
            msgs.append(msg)
            if msg.get("tool_calls"):
                for tc in msg["tool_calls"]:
                    msgs.append({"role": "tool", "tool_call_id": tc.get("id", ""), "content": f"result {turn}"})
            else:
                msgs.append(user(f"follow-up {turn}"))
        st = await r.state(sid)
        meta = st["metadata"]
        assert meta["num_assistant"] == 5 and len(st["records"]) == 5
        assert meta["token_mismatch"] is None
        canonical = TOK.encode(TOK.apply_chat_template(msgs[: len(meta["messages"])], tokenize=False))
        assert meta["token_ids"] == canonical[: len(meta["token_ids"])]
        for rec in st["records"]:
            ids = rec["request"]["input_ids"]
            assert meta["token_ids"][: len(ids)] == ids  # each turn extends the previous tokens


async def test_abort_provisional_supersede_cycle_with_the_fake() -> None:
    async with make_rig(backend_app=create_fake(seed=5)) as r:
        sid = await r.new_session()
        a0 = await r.chat(sid, [user("hi")], headers=hdr(0))
        msgs = [user("hi"), reply(a0), user("and then?")]
        for attempt in range(2):
            ab = await r.chat(sid, msgs, headers=hdr(1, attempt, "abort"))
            assert ab.status_code == 200 and ab.headers["x-sglang-aborted"] == "1"
            st = await r.state(sid)
            assert [x["kind"] for x in st["records"]] == ["committed", "provisional"]
            assert st["records"][-1]["attempt"] == attempt and st["metadata"]["num_assistant"] == 1
        ok = await r.chat(sid, msgs, headers=hdr(1, 2))
        assert ok.status_code == 200 and "x-sglang-aborted" not in ok.headers
        st = await r.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed", "committed"]
        assert st["records"][-1]["attempt"] == 2 and st["metadata"]["token_mismatch"] is None


@pytest.mark.parametrize("fault", MALFORMED_FAULTS)
async def test_malformed_fake_answers_are_502(fault: str) -> None:
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers=hdr(0, fault=fault))
        assert resp.status_code == 502 and resp.json()["error"]["type"] == "BadGateway"
        assert (await r.state(sid))["records"] == []


@pytest.mark.parametrize("fault", ["reset", "close_mid_body"])
async def test_fake_transport_faults_are_502_and_logged(fault: str) -> None:
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers=hdr(0, fault=fault))
        assert resp.status_code == 502 and resp.json()["error"]["type"] == "BackendUnavailable"
        assert len(r.logs.events("proxy_transport_error")) == 1
        assert r.done()[0]["outcome"] == "transport_error"


async def test_fake_http_errors_pass_through() -> None:
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers=hdr(0, fault="http_503"))
        assert resp.status_code == 503 and resp.json()["error"]["type"]
        assert (await r.state(sid))["records"] == []


async def test_delete_cancel_aborts_the_hanging_generation_on_the_fake() -> None:
    fake = create_fake(seed=1)
    async with make_rig("delete_cancel", backend_app=fake) as r:
        sid = await r.new_session()
        chat = asyncio.create_task(r.chat(sid, [user("hi")], headers=hdr(0, fault="hang;seconds=30")))
        session = r.server.store.get(sid)
        assert session is not None
        while not session.inflight:  # noqa: ASYNC110 - waits for the backend call to be in flight
            await asyncio.sleep(0.001)
        d = await asyncio.wait_for(r.client.delete(f"/sessions/{sid}"), 5)
        assert d.status_code == 204
        resp = await asyncio.wait_for(chat, 5)
        assert resp.status_code == 404 and r.done()[0]["outcome"] == "cancelled"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake), base_url="http://f") as c:
            stats = (await c.get("/stats")).json()
        assert stats["counters"]["abort_requests"] == 1 and stats["counters"]["inflight"] == 0
        (execution,) = stats["executions"][sid]
        assert execution["rid"] == f"{sid}-{resp.headers['x-req-id']}" and execution["outcome"] == "dropped"


async def test_concurrent_sessions_with_tokenization_in_threads() -> None:
    """The thread executor path: many sessions tokenizing at once in worker threads."""
    from harness.seams import ThreadExecutor
    from reference_impl import ServerConfig, create_app
    from reference_impl.logs import ListSink

    logs = ListSink()
    cfg = ServerConfig(backend_url="http://fake", worker_port=1)
    transport = httpx.ASGITransport(app=create_fake(seed=9))
    app = create_app(cfg, executor=ThreadExecutor(), backend_transport=transport, log_sink=logs)

    async def episode(c: httpx.AsyncClient, i: int) -> dict[str, Any]:
        sid = (await c.post("/sessions")).json()["session_id"]
        msgs: list[dict[str, Any]] = [SYSTEM, user(f"episode {i}")]
        for turn in range(4):
            r = await c.post(f"/sessions/{sid}/v1/chat/completions", json={"messages": msgs}, headers=hdr(turn))
            assert r.status_code == 200, r.text
            msgs += [reply(r), user(f"more {turn}")]
        state: dict[str, Any] = (await c.get(f"/sessions/{sid}")).json()
        return state

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        states = await asyncio.gather(*(episode(c, i) for i in range(16)))
    await app.state.server.aclose()
    for st in states:
        assert st["metadata"]["num_assistant"] == 4 and st["metadata"]["token_mismatch"] is None
    assert len(logs.events("chat_done")) == 64 and {e["outcome"] for e in logs.events("chat_done")} == {"committed"}


async def test_an_n2_answer_commits_choices_0_and_the_session_goes_on_from_it() -> None:
    """CONTEXT.md records choices[0]: the tokens stored are its, and the next turn, which extends choices[0]'s
    message (what every OpenAI client reads), appends to that checkpoint without a rollback."""
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        first = await r.chat(sid, [user("hi")], headers=hdr(0), n=2)
        assert first.status_code == 200
        c0, c1 = first.json()["choices"]
        assert c0["message"]["content"] != c1["message"]["content"]
        st = await r.state(sid)
        ids0 = [t for _, t in c0["meta_info"]["output_token_logprobs"]]
        assert st["metadata"]["token_ids"][-len(ids0) :] == ids0
        reply = {"role": "assistant", "content": c0["message"]["content"]}
        nxt = await r.chat(sid, [user("hi"), reply, user("more")], headers=hdr(1))
        assert nxt.status_code == 200
        assert [x["kind"] for x in (await r.state(sid))["records"]] == ["committed", "committed"]


async def test_a_get_of_the_chat_path_with_a_chat_body_is_no_turn() -> None:
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        body = json.dumps({"model": "m", "messages": [user("hi")]})
        resp = await r.client.request("GET", f"/sessions/{sid}/v1/chat/completions", content=body)
        assert 400 <= resp.status_code < 500
        assert (await r.state(sid))["records"] == []
