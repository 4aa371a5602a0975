"""The reference server's protocol at the HTTP level: CRUD, TITO, forwarding, validation, logs."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import httpx
import pytest
from server_fixtures import SYSTEM, make_rig, user

from harness.seams import InlineExecutor, ThreadExecutor
from harness.tokenizer import load_tokenizer
from reference_impl import VARIANTS, ServerConfig, VariantError, create_app
from reference_impl.logs import ListSink

TOK = load_tokenizer(None)


def render_ids(messages: list[dict[str, Any]], gen: bool = True) -> list[int]:
    text = TOK.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    return list(TOK.encode(text, add_special_tokens=False))


def reply(r: httpx.Response) -> dict[str, Any]:
    msg: dict[str, Any] = r.json()["choices"][0]["message"]
    return msg


def completion_ids(r: httpx.Response) -> list[int]:
    return [int(p[1]) for p in r.json()["choices"][0]["meta_info"]["output_token_logprobs"]]


# -- sessions CRUD ---------------------------------------------------------------------------


async def test_create_get_delete_and_health() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert re.fullmatch(r"[0-9a-f]{32}", sid)
        st = await r.state(sid)
        assert st["session_id"] == sid and st["records"] == []
        meta = st["metadata"]
        assert meta["token_ids"] == [] and meta["num_assistant"] == 0 and meta["checkpoints"] == []
        assert meta["token_mismatch"] is None and meta["messages"] == []
        h = (await r.client.get("/health")).json()
        assert h["status"] == "ok" and h["sessions"] == 1
        assert (await r.client.delete(f"/sessions/{sid}")).status_code == 204
        for _ in range(2):
            g = await r.get(sid)
            assert g.status_code == 404 and g.json()["error"]["type"] == "SessionNotFound"
        d = await r.client.delete(f"/sessions/{sid}")
        assert d.status_code == 404 and "error" in d.json()
        assert (await r.client.get("/stats")).json()["sessions"] == 0
        assert [e["event"] for e in r.logs] == ["session_created", "session_deleted"]


async def test_unknown_session_is_404_everywhere() -> None:
    async with make_rig() as r:
        for resp in (
            await r.get("nope"),
            await r.client.delete("/sessions/nope"),
            await r.chat("nope", [user("hi")]),
            await r.client.get("/sessions/nope/echo/x"),
        ):
            assert resp.status_code == 404, resp.text
            assert resp.json()["error"]["type"] == "SessionNotFound"
        assert r.backend is not None and r.backend.calls == []
        assert (await r.client.post("/sessions")).status_code == 200
        assert (await r.client.get("/stats")).json()["sessions"] == 1  # no auto-create


def test_config_rejects_unknown_variant_and_documents_each() -> None:
    with pytest.raises(VariantError, match=r"allowed: .*auto_create.*lock_restore"):
        ServerConfig(variants=frozenset({"lock_restor"}))
    assert len(VARIANTS) == 12 and all(doc and "\n" not in doc for doc in VARIANTS.values())
    with pytest.raises(ValueError, match="heartbeat_interval"):
        ServerConfig(heartbeat_interval=0)


def test_executor_switch() -> None:
    on = create_app(ServerConfig(), log_sink=ListSink())
    off = create_app(ServerConfig(tokenize_in_thread=False), log_sink=ListSink())
    assert isinstance(on.state.server.executor, ThreadExecutor)
    assert isinstance(off.state.server.executor, InlineExecutor)


# -- TITO ------------------------------------------------------------------------------------


async def test_first_and_later_turns_extend_exact_tokens() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        m1 = [SYSTEM, user("What is the capital of France?")]
        a1 = await r.chat(sid, m1, headers={"x-turn": "0", "x-attempt": "0", "x-request-id": "c-1"})
        assert a1.status_code == 200
        sent1 = r.backend.calls[0]["body"]["input_ids"]
        assert sent1 == render_ids(m1)
        ckpt1 = sent1 + completion_ids(a1)

        m2 = [*m1, reply(a1), user("And of Spain?")]
        a2 = await r.chat(sid, m2, headers={"x-turn": "1"})
        assert a2.status_code == 200
        sent2 = r.backend.calls[1]["body"]["input_ids"]
        assert sent2[: len(ckpt1)] == ckpt1  # stored tokens reused verbatim
        assert sent2 == render_ids(m2)  # and the suffix matches the canonical rendering

        st = await r.state(sid)
        meta = st["metadata"]
        assert meta["token_ids"] == sent2 + completion_ids(a2)
        assert meta["num_assistant"] == 2
        assert meta["checkpoints"] == [len(ckpt1), len(meta["token_ids"])]
        assert meta["messages"][-1]["content"] == reply(a2)["content"]
        assert meta["token_mismatch"] is None
        recs = st["records"]
        assert [x["kind"] for x in recs] == ["committed", "committed"]
        rec = recs[0]
        assert rec["method"] == "POST" and rec["path"] == f"/sessions/{sid}/v1/chat/completions"
        assert rec["caller_request_id"] == "c-1" and rec["turn"] == 0 and rec["attempt"] == 0
        assert rec["req_id"] == a1.headers["x-req-id"] and re.fullmatch(r"[0-9a-f]{8}", rec["req_id"])
        assert rec["request"]["input_ids"] == sent1 and rec["status_code"] == 200
        assert rec["response"]["choices"][0]["meta_info"]["output_token_logprobs"]
        assert rec["start_ts"] <= rec["end_ts"]


async def test_forced_backend_params_routing_key_and_header_forwarding() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        headers = {
            "x-request-id": "abc",
            "x-turn": "0",
            "x-custom": "kept",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "upgrade": "h2c",
            "proxy-authorization": "Basic x",
            "x-smg-routing-key": "spoofed",
        }
        body = {"logprobs": False, "return_meta_info": False, "no_stop_trim": True, "temperature": 0.5}
        resp = await r.chat(sid, [user("hi")], headers=headers, **body)
        assert resp.status_code == 200
        sent = r.backend.calls[0]
        b, h = sent["body"], sent["headers"]
        assert b["logprobs"] is True and b["return_meta_info"] is True and b["no_stop_trim"] is False
        assert b["stream"] is False and b["temperature"] == 0.5 and b["input_ids"]
        assert h["x-smg-routing-key"] == sid
        assert h["x-request-id"] == "abc" and h["x-turn"] == "0" and h["x-custom"] == "kept"
        for dropped in ("keep-alive", "te", "upgrade", "proxy-authorization"):
            assert dropped not in h
        assert h["host"] == "backend"  # the backend's own host, not the client's
        assert h["content-length"] == str(len(json.dumps(b, separators=(",", ":"))))


async def test_fake_streaming_is_one_chunk_then_done() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        resp = await r.chat(sid, [user("stream please")], stream=True)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [e for e in resp.text.split("\n\n") if e]
        assert len(events) == 2 and events[1] == "data: [DONE]"
        chunk = json.loads(events[0].removeprefix("data: "))
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"][0]["delta"]["content"].startswith("Answer 0")
        assert chunk["choices"][0]["finish_reason"] == "stop"
        assert r.backend.calls[0]["body"]["stream"] is False
        assert (await r.state(sid))["metadata"]["num_assistant"] == 1


async def tool_turns(r: Any, sid: str) -> tuple[list[dict[str, Any]], list[httpx.Response]]:
    """Turn 0 answers with a tool call; turn 1 sends the tool result and gets a plain answer."""
    assert r.backend is not None
    m = [SYSTEM, user("search for x")]
    r.backend.script = ["tool"]
    a1 = await r.chat(sid, m)
    assert a1.status_code == 200 and reply(a1)["tool_calls"]
    m = [*m, reply(a1), {"role": "tool", "tool_call_id": "call_0", "content": "result A"}]
    a2 = await r.chat(sid, m)
    assert a2.status_code == 200
    return [*m, reply(a2)], [a1, a2]


async def test_tool_retry_rolls_back_one_step() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        history, _ = await tool_turns(r, sid)
        before = (await r.state(sid))["metadata"]
        # the agent re-runs the tool call: same prefix up to the tool call, a different result
        retry = [*history[:3], {"role": "tool", "tool_call_id": "call_0", "content": "result B"}]
        a3 = await r.chat(sid, retry)
        assert a3.status_code == 200, a3.text
        sent = r.backend.calls[-1]["body"]["input_ids"]
        ckpt1 = before["token_ids"][: before["checkpoints"][0]]
        assert sent[: len(ckpt1)] == ckpt1 and sent == render_ids(retry)
        st = await r.state(sid)
        assert st["metadata"]["num_assistant"] == 2
        assert st["metadata"]["checkpoints"][0] == before["checkpoints"][0]
        assert st["metadata"]["messages"][3]["content"] == "result B"
        assert [x["kind"] for x in st["records"]] == ["committed", "committed"]
        assert st["records"][1]["req_id"] == a3.headers["x-req-id"]  # the discarded step's record is gone
        assert st["metadata"]["token_mismatch"] is None


async def test_rollback_of_two_steps_is_400() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        history, _ = await tool_turns(r, sid)
        calls = len(r.backend.calls)
        resp = await r.chat(sid, [history[0], user("a different question")])
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "RollbackError"
        assert len(r.backend.calls) == calls
        assert (await r.state(sid))["metadata"]["num_assistant"] == 2
        assert r.done()[-1]["outcome"] == "bad_request"


async def test_retry_of_first_turn_rolls_back_to_empty_checkpoint() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        a1 = await r.chat(sid, [SYSTEM, user("first")])
        assert a1.status_code == 200
        for again in ([SYSTEM, user("first")], [SYSTEM, user("first, rephrased")]):
            resp = await r.chat(sid, again)
            assert resp.status_code == 200
            assert r.backend.calls[-1]["body"]["input_ids"] == render_ids(again)
            st = await r.state(sid)
            assert st["metadata"]["num_assistant"] == 1 and len(st["records"]) == 1
            assert st["metadata"]["token_ids"] == render_ids(again) + completion_ids(resp)


async def test_length_truncated_turn_is_closed_before_the_next_turn() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        r.backend.script = ["length"]
        m = [user("tell me a long story")]
        a1 = await r.chat(sid, m)
        assert a1.status_code == 200 and a1.json()["choices"][0]["finish_reason"] == "length"
        stored = (await r.state(sid))["metadata"]["token_ids"]
        assert stored[-1] != TOK.convert_tokens_to_ids("<|im_end|>")  # what the model really produced
        a2 = await r.chat(sid, [*m, reply(a1), user("go on")])
        assert a2.status_code == 200
        sent = r.backend.calls[-1]["body"]["input_ids"]
        assert sent[: len(stored)] == stored
        assert TOK.decode(sent[len(stored) :]).startswith("<|im_end|>\n<|im_start|>user\ngo on")


async def test_token_mismatch_report_against_canonical_rendering() -> None:
    async with make_rig(max_trim_tokens=0) as r:
        sid = await r.new_session()
        assert (await r.chat(sid, [user("hi")])).status_code == 200
        report = (await r.state(sid))["metadata"]["token_mismatch"]
        # the template closes the turn with a newline the model never generated
        assert report is not None and report["canonical_len"] == report["actual_len"] + 1
        assert report["index"] == report["actual_len"] and report["canonical_text"] == "\n"


async def test_prefix_invariant_violation_is_500_and_not_committed() -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        m = [user("hi")]
        a1 = await r.chat(sid, m)
        before = (await r.state(sid))["metadata"]
        r.backend.script = ["prompt_ids"]  # the backend reports prompt tokens that do not extend the checkpoint
        resp = await r.chat(sid, [*m, reply(a1), user("again")])
        assert resp.status_code == 500 and resp.json()["error"]["type"] == "TokenizationError"
        assert "prefix invariant" in resp.json()["error"]["message"]
        after = await r.state(sid)
        assert after["metadata"]["token_ids"] == before["token_ids"] and len(after["records"]) == 1
        assert r.done()[-1]["outcome"] == "tokenization_error"


# -- malformed input and backend answers -------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": "hi"}', "must be a list"),
        (b'{"messages": []}', "must not be empty"),
        (b'{"messages": [42]}', "must be an object"),
        (b'{"messages": [{"content": "no role"}]}', "role"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "content"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "m"}', "required"),
        (b'{"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"function": {}}]}]}', "name"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_malformed_request_is_400_json_never_500(content: bytes, why: str) -> None:
    async with make_rig() as r:
        assert r.backend is not None
        sid = await r.new_session()
        resp = await r.client.post(f"/sessions/{sid}/v1/chat/completions", content=content)
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["type"] == "InvalidRequest" and why in err["message"]
        assert r.backend.calls == [] and resp.headers["x-req-id"]
        assert r.done()[0]["outcome"] == "bad_request" and r.done()[0]["status"] == 400


@pytest.mark.parametrize("mode", ["no_meta", "null_content", "count_mismatch", "not_json"])
async def test_malformed_backend_answer_is_502_unrecorded(mode: str) -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers={"x-test-mode": mode})
        assert resp.status_code == 502, resp.text
        assert resp.json()["error"]["type"] == "BadGateway"
        st = await r.state(sid)
        assert st["records"] == [] and st["metadata"]["num_assistant"] == 0
        assert r.done()[0]["outcome"] == "bad_gateway"


@pytest.mark.parametrize("code", [400, 429, 503])
async def test_non_200_backend_answer_passes_through_unrecorded(code: int) -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers={"x-test-mode": f"status:{code}"})
        assert resp.status_code == code
        assert resp.json() == {"error": {"message": "backend says no", "code": code}}
        assert resp.headers["content-type"] == "application/json"
        assert (await r.state(sid))["records"] == []
        assert r.done()[0]["outcome"] == "upstream_error" and r.done()[0]["status"] == code


async def test_transport_error_is_502_and_logged() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [user("hi")], headers={"x-test-mode": "transport"})
        assert resp.status_code == 502 and resp.json()["error"]["type"] == "BackendUnavailable"
        (warn,) = r.logs.events("proxy_transport_error")
        assert warn["level"] == "WARNING" and warn["url"] == "http://backend/v1/chat/completions"
        assert warn["elapsed_ms"] >= 0 and warn["session_id"] == sid and "ConnectError" in warn["error"]
        assert r.done()[0]["outcome"] == "transport_error"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_backend_down_is_502() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    logs = ListSink()
    app = create_app(ServerConfig(backend_url=url, backend_timeout=5.0), executor=InlineExecutor(), log_sink=logs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        sid = (await c.post("/sessions")).json()["session_id"]
        resp = await c.post(f"/sessions/{sid}/v1/chat/completions", json={"messages": [user("hi")]})
        assert resp.status_code == 502 and resp.json()["error"]["type"] == "BackendUnavailable"
        (warn,) = logs.events("proxy_transport_error")
        assert warn["url"] == f"{url}/v1/chat/completions"
        p = await c.get(f"/sessions/{sid}/health")
        assert p.status_code == 502
    await app.state.server.aclose()


# -- pass-through ------------------------------------------------------------------------------


async def test_passthrough_route_forwards_method_path_query_body() -> None:
    async with make_rig(passthrough_paths=("/echo/*",)) as r:
        sid = await r.new_session()
        resp = await r.client.put(
            f"/sessions/{sid}/echo/a/b?x=1&x=2", content=b"raw-body", headers={"x-request-id": "q"}
        )
        assert resp.status_code == 201 and resp.headers["x-upstream"] != ""
        echo = resp.json()
        assert echo["method"] == "PUT" and echo["path"] == "/echo/a/b" and echo["query"] == "x=1&x=2"
        assert echo["body"] == "raw-body" and echo["headers"]["x-smg-routing-key"] == sid
        assert echo["headers"]["x-request-id"] == "q"
        assert (await r.state(sid))["records"] == [] and r.logs.events("chat_done") == []


# -- observability -----------------------------------------------------------------------------

TIMINGS = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")


async def test_one_chat_start_and_done_per_request_whatever_the_outcome() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        ok = await r.chat(sid, [user("hi")], headers={"x-request-id": "r-ok"})
        await r.chat(sid, [user("x")], headers={"x-test-mode": "status:500"})
        await r.chat(sid, [user("x")], headers={"x-test-mode": "no_meta"})
        await r.chat(sid, [user("x")], headers={"x-test-mode": "transport"})
        await r.client.post(f"/sessions/{sid}/v1/chat/completions", content=b"{")
        await r.chat("missing", [user("x")])
        starts, dones = r.logs.events("chat_start"), r.logs.events("chat_done")
        assert len(starts) == len(dones) == 6
        assert [d["req_id"] for d in dones] == [s["req_id"] for s in starts]
        assert [d["outcome"] for d in dones] == [
            "committed",
            "upstream_error",
            "bad_gateway",
            "transport_error",
            "bad_request",
            "not_found",
        ]
        for d in dones:
            assert d["pid"] > 0 and d["worker_port"] == 9999 and d["level"] == "INFO"
            assert all(isinstance(d[k], float) and d[k] >= 0 for k in TIMINGS)
            assert d["total_ms"] >= d["proxy_elapsed_ms"]
            assert re.fullmatch(r"[0-9a-f]{8}", d["req_id"])
            assert d["inflight_now"] == 0
        first = dones[0]
        assert first["caller_request_id"] == "r-ok" and first["req_id"] == ok.headers["x-req-id"]
        assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["status"] == 200
        assert starts[0]["inflight_now"] == 1 and starts[0]["caller_request_id"] == "r-ok"
        stats = (await r.client.get("/stats")).json()
        assert stats["reqs_total"] == 6 and stats["turns_completed"] == 1 and stats["inflight"] == 0
        assert stats["sessions"] == 1 and stats["worker_port"] == 9999 and stats["pid"] == first["pid"]


async def _lifespan(app: Any, body: Any) -> None:
    """Drive an ASGI app's lifespan around ``body()`` (what uvicorn does)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await queue.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    await queue.put({"type": "lifespan.startup"})
    while not sent:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    assert sent[0]["type"] == "lifespan.startup.complete"
    await body()
    await queue.put({"type": "lifespan.shutdown"})
    await task


async def test_heartbeat_reports_memory_and_counters_at_its_interval() -> None:
    logs = ListSink()
    app = create_app(ServerConfig(heartbeat_interval=0.02, worker_port=7), executor=InlineExecutor(), log_sink=logs)
    await _lifespan(app, lambda: asyncio.sleep(0.15))
    beats = logs.events("heartbeat")
    assert 3 <= len(beats) <= 12
    for b in beats:
        assert b["rss_mb"] > 1 and b["vms_mb"] >= b["rss_mb"] and b["worker_port"] == 7
        assert {"reqs_total", "turns_completed", "inflight", "sessions"} <= b.keys()
    n = len(beats)
    await asyncio.sleep(0.05)
    assert len(logs.events("heartbeat")) == n  # stopped with the lifespan


def test_fast_render_is_the_tokenizers_own_rendering() -> None:
    from reference_impl.tito import Tito, normalize_messages

    tito = Tito(TOK)
    assert tito._compiled is not None  # the probe matched, the fast path is on
    convs = [
        [user("a")],
        [SYSTEM, user("ünïcode ✓"), {"role": "assistant", "content": "x\n<think>y</think>"}],
        [
            user("t"),
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "n", "arguments": {"k": "v"}}}]},
            {"role": "tool", "content": None},
        ],
    ]
    for conv in convs:
        msgs = normalize_messages(conv)
        for gen in (False, True):
            assert tito.render(msgs, generation_prompt=gen) == TOK.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=gen
            )
