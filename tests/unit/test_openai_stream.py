"""The openai SDK agent streams through the SDK and holds the stream to the OpenAI streaming rules.

A tiny ASGI app answers each chat with chosen bytes; the agent's client reads
them through ``AsyncOpenAI.chat.completions.create(stream=True)`` over the
simulation's network (which reports ``sent`` as a socket does). In process,
well under a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.agents._clients import REQUEST_PROGRESS, OpenAIClient, Reply
from harness.sim.world import SimNetwork
from reference_impl.app import sse_body

ANSWER = {
    "id": "x",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
GOOD = sse_body(ANSWER)
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    c = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    c["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps(c).encode() + b"\n\n"


def _app(body: bytes, ctype: bytes = b"text/event-stream") -> Callable[..., Awaitable[None]]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), (b"x-sglang-aborted", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _stream(body: bytes, ctype: bytes = b"text/event-stream") -> tuple[Reply, dict[str, bool]]:
    async def go() -> tuple[Reply, dict[str, bool]]:
        net = SimNetwork()
        net.add("s.sim:1", _app(body, ctype), client_facing=True)
        client = OpenAIClient(net)
        progress: dict[str, bool] = {}
        token = REQUEST_PROGRESS.set(progress)
        try:
            req = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True}
            reply = await client.chat("http://s.sim:1", "abc", req, {"x-request-id": "r1"})
        finally:
            REQUEST_PROGRESS.reset(token)
            await client.aclose()
        return reply, progress

    return asyncio.run(go())


def test_a_well_formed_stream_is_folded_from_the_sdks_chunks() -> None:
    r, progress = _stream(GOOD)
    assert progress == {"sent": True}  # the SDK's request reports "sent" as the httpx agent's do
    assert r.status == 200 and r.body is None and r.error is None and r.header("x-sglang-aborted") == "1"
    assert r.extra["sse_errors"] == [] and r.body_bytes == len(GOOD)
    choice = r.extra["completion"]["choices"][0]
    assert choice["message"]["content"] == "hi" and choice["finish_reason"] == "stop"
    assert r.extra["completion"]["usage"]["completion_tokens"] == 2


def test_a_stream_without_its_terminator_is_a_violation_the_sdk_would_have_swallowed() -> None:
    r, _ = _stream(GOOD.replace(b"data: [DONE]\n\n", b""))
    assert r.error is None  # the SDK accepts a stream that just ends
    assert r.extra["completion"]["choices"][0]["message"]["content"] == "hi"
    assert r.extra["sse_errors"] == ["missing the data: [DONE] terminator"]


def test_data_after_the_terminator_is_seen_though_the_sdk_only_drains_it() -> None:
    r, _ = _stream(GOOD + GOOD)
    assert any("after the [DONE]" in p for p in r.extra["sse_errors"])


def test_a_chunk_that_is_not_json_is_the_sdks_error_and_a_stream_violation() -> None:
    r, _ = _stream(_chunk({"content": "h"}) + b"data: {oops\n\ndata: [DONE]\n\n")
    assert r.error is not None and "openai SDK could not read the stream" in r.error
    problems = r.extra["sse_errors"]
    assert any("not JSON" in p for p in problems) and any("openai SDK" in p for p in problems)
    assert "missing the data: [DONE] terminator" not in problems  # the SDK stopped reading before it


def test_wrong_chunk_shapes_are_named_though_the_sdk_builds_them_unchecked() -> None:
    bad = b'data: {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "x"}}]}\n\n'
    r, _ = _stream(bad + b"data: [DONE]\n\n")
    assert any("not 'chat.completion.chunk'" in p for p in r.extra["sse_errors"])


def test_tool_call_deltas_are_merged_by_index_and_a_json_body_is_no_stream() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}
    more = {"index": 0, "function": {"arguments": " 1}"}}
    r, _ = _stream(_chunk({"role": "assistant", "tool_calls": [call]}) + _chunk({"tool_calls": [more]}, "tool_calls"))
    msg = r.extra["completion"]["choices"][0]["message"]
    assert msg["tool_calls"] == [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert r.extra["sse_errors"] == ["missing the data: [DONE] terminator"]
    j, _ = _stream(json.dumps(ANSWER).encode(), b"application/json")
    assert j.extra["completion"] is None
    assert j.extra["sse_errors"] == ["stream=true answered with a JSON body, not an event stream"]


@pytest.mark.parametrize("target", [None, "asgi:sse_cut_wrapper:create_app"])
def test_sdk_agents_stream_in_a_run_and_a_cut_terminator_is_flagged(target: str | None) -> None:
    """litellm_abort_remap (openai SDK agents, half the turns streamed), 4 sessions in sim: what the history holds."""
    from harness.checkers import CHECKERS
    from harness.scenario import load_scenario
    from harness.sim.runner import simulate, with_seed

    sc = with_seed(load_scenario(str(SCENARIOS / "litellm_abort_remap.toml")), 0)
    sc = dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=4))
    out = simulate(sc, 0, "random", target=target, trace=False)
    assert out.data is not None and out.error is None
    inv = {e["op"]: e for e in out.data.history if e["type"] == "invoke"}
    streamed = [e for e in out.data.history if e["type"] == "ok" and inv[e["op"]].get("stream")]
    assert streamed and all(inv[e["op"]]["client"] == "openai" for e in streamed)
    assert all(e["content_sha"] and e["finish_reason"] and e["completion_tokens"] for e in streamed)
    assert any(e["aborted"] for e in streamed)  # x-sglang-aborted read off the event stream's response
    v = CHECKERS["http_framing"].check(out.data)
    if target is None:
        assert v.status == "valid", v.violations
        assert all(e["framing"]["sse_errors"] == [] for e in streamed)
    else:
        assert v.status == "invalid" and {x.kind for x in v.violations} == {"sse_malformed"}
