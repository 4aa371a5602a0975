"""Every fault of the fake SGLang in-process (ASGITransport): what the caller sees, what the log says."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from harness.fake_sglang import create_app, plan_from_text
from harness.tokenizer import load_tokenizer

TOK = load_tokenizer()
IM_END = TOK.convert_tokens_to_ids("<|im_end|>")
MSGS = [{"role": "user", "content": "What is up?"}]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake")


async def fault(fault: str, *, stream: bool = False, app: Any = None) -> tuple[httpx.Response, Any]:
    app = app or create_app(seed=1)
    async with client(app) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"messages": MSGS, "stream": stream},
            headers={"x-fake-fault": fault, "x-smg-routing-key": "s"},
        )
    return r, app


def entry(app: Any) -> dict[str, Any]:
    return dict(app.executions["s"][-1])


async def now() -> float:
    return asyncio.get_running_loop().time()


async def test_abort_fault_partial_tokens() -> None:
    r, app = await fault("abort;fraction=0.5")
    ch = r.json()["choices"][0]
    ids = [t for _, t in ch["meta_info"]["output_token_logprobs"]]
    assert ch["finish_reason"] == "abort" and IM_END not in ids
    assert TOK.decode(ids) == ch["message"]["content"]
    assert r.headers["x-fake-fault-applied"] == "abort"
    assert entry(app)["outcome"] == "aborted" and entry(app)["completion_tokens"] == len(ids)
    r0, _ = await fault("abort;tokens=0")
    assert r0.json()["choices"][0]["meta_info"]["completion_tokens"] == 0
    assert r0.json()["choices"][0]["message"]["content"] == ""


async def test_length_fault() -> None:
    r, _ = await fault("length;tokens=3")
    ch = r.json()["choices"][0]
    assert ch["finish_reason"] == "length" and ch["meta_info"]["completion_tokens"] == 3


@pytest.mark.parametrize("code", [400, 429, 500, 503, 502])
async def test_http_status_faults(code: int) -> None:
    r, app = await fault(f"http_{code}")
    assert r.status_code == code
    err = r.json()["error"]
    assert err["type"] and err["message"]
    if code == 400:
        assert err["type"] == "context_length_exceeded"
    assert (entry(app)["outcome"], entry(app)["status"]) == ("error", code)


async def test_http_fault_custom_message() -> None:
    r, _ = await fault("http_500;message=boom")
    assert r.json()["error"]["message"] == "boom"


async def test_reset_raises_transport_error_in_process() -> None:
    with pytest.raises(httpx.ReadError):
        await fault("reset")


async def test_close_mid_body_in_process() -> None:
    app = create_app()
    with pytest.raises(httpx.RemoteProtocolError):
        await fault("close_mid_body;fraction=0.3", app=app)
    assert app.executions["s"][-1]["outcome"] == "dropped"


async def test_sse_cut_in_process() -> None:
    app = create_app()
    with pytest.raises(httpx.RemoteProtocolError):
        await fault("sse_cut", stream=True, app=app)
    e = app.executions["s"][-1]
    assert e["outcome"] == "dropped" and e["fault"] == "sse_cut"


async def test_hang_is_bounded_then_dropped() -> None:
    app = create_app()
    t0 = await now()
    with pytest.raises(httpx.ReadError):
        await fault("hang;seconds=0.2", app=app)
    assert 0.19 <= await now() - t0 < 2.0
    assert app.executions["s"][-1]["outcome"] == "dropped"


async def test_hang_ends_when_client_gives_up() -> None:
    app = create_app()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await fault("hang;seconds=30", app=app)
    # The client's cancellation reaches the app: the execution is recorded as dropped, nothing inflight.
    assert app.counters["inflight"] == 0 and app.executions["s"][-1]["outcome"] == "dropped"


async def test_slow_drip_takes_the_time_and_arrives_whole() -> None:
    t0 = await now()
    r, _ = await fault("slow_drip;seconds=0.3;chunks=6")
    assert await now() - t0 >= 0.29
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"


async def test_spike_delays() -> None:
    t0 = await now()
    r, app = await fault("spike;ms=150")
    assert await now() - t0 >= 0.149 and r.status_code == 200
    assert entry(app)["latency_ms"] == pytest.approx(150.0)


async def test_no_meta_info() -> None:
    r, app = await fault("no_meta_info")
    assert "meta_info" not in r.json()["choices"][0] and entry(app)["outcome"] == "malformed"


async def test_null_content() -> None:
    r, _ = await fault("null_content")
    assert r.json()["choices"][0]["message"]["content"] is None


async def test_empty_choices() -> None:
    r, app = await fault("empty_choices")
    assert r.status_code == 200 and r.json()["choices"] == [] and entry(app)["outcome"] == "malformed"


async def test_bad_tool_call() -> None:
    r, app = await fault("bad_tool_call")
    calls = r.json()["choices"][0]["message"]["tool_calls"]
    assert r.status_code == 200 and calls[0]["function"]["name"] is None and entry(app)["outcome"] == "malformed"


async def test_logprob_objects() -> None:
    r, app = await fault("logprob_objects")
    meta = r.json()["choices"][0]["meta_info"]
    entries = meta["output_token_logprobs"]
    assert entries and all(set(e) == {"logprob", "token_id"} for e in entries)
    assert len(entries) == meta["completion_tokens"] and entry(app)["outcome"] == "malformed"


async def test_logprob_mismatch() -> None:
    r, _ = await fault("logprob_mismatch")
    meta = r.json()["choices"][0]["meta_info"]
    assert len(meta["output_token_logprobs"]) != meta["completion_tokens"]


async def test_invalid_json() -> None:
    r, _ = await fault("invalid_json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)


@pytest.mark.parametrize("name", ["no_meta_info", "null_content", "invalid_json", "abort;fraction=0.5"])
async def test_stream_variants_of_body_faults(name: str) -> None:
    r, _ = await fault(name, stream=True)
    frames = [ln[6:] for ln in r.text.split("\n\n") if ln.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    if name == "invalid_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(frames[-3])
        return
    final = json.loads(frames[-3])["choices"][0]
    if name == "no_meta_info":
        assert "meta_info" not in final
    elif name == "null_content":
        assert final["delta"] == {"content": None}
    else:
        assert final["finish_reason"] == "abort"


async def test_none_overrides_plan() -> None:
    app = create_app(plan=plan_from_text('[[rules]]\nfault = "http_500"', "<t>"))
    r, _ = await fault("none", app=app)
    assert r.status_code == 200
    async with client(app) as c:
        assert (await c.post("/v1/chat/completions", json={"messages": MSGS})).status_code == 500


async def test_plan_rules_select_by_turn_attempt_session_ordinal() -> None:
    text = """
[[rules]]
fault = "http_503"
session = "bad-*"
[[rules]]
fault = "abort"
turn = 1
attempt = 0
[[rules]]
fault = "http_429"
ordinal = { min = 3 }
session = "ord"
[[rules]]
fault = "http_500"
paths = ["/generate"]
"""
    app = create_app(plan=plan_from_text(text, "<t>"))

    async def go(path: str = "/v1/chat/completions", **h: str) -> httpx.Response:
        hdrs = {k.replace("_", "-"): v for k, v in h.items()}
        body: dict[str, Any] = {"input_ids": [1, 2, 3]} if path == "/generate" else {"messages": MSGS}
        return await c.post(path, json=body, headers=hdrs)

    async with client(app) as c:
        assert (await go(x_smg_routing_key="bad-1")).status_code == 503
        r = await go(x_smg_routing_key="k", x_turn="1", x_attempt="0")
        assert r.json()["choices"][0]["finish_reason"] == "abort"
        r = await go(x_smg_routing_key="k", x_turn="1", x_attempt="1")
        assert r.json()["choices"][0]["finish_reason"] == "stop"
        codes = [(await go(x_smg_routing_key="ord", x_turn=str(i))).status_code for i in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert (await go("/generate")).status_code == 500


async def test_rule_probability_is_seeded() -> None:
    text = '[[rules]]\nfault = "http_503"\nprobability = 0.5'

    async def hits(seed: int) -> list[int]:
        app = create_app(seed=seed, plan=plan_from_text(text, "<t>"))
        async with client(app) as c:
            out = []
            for i in range(60):
                hdrs = {"x-smg-routing-key": f"s{i}"}
                r = await c.post("/v1/chat/completions", json={"messages": MSGS}, headers=hdrs)
                out.append(r.status_code)
        return out

    a, b, other = await hits(1), await hits(1), await hits(2)
    assert a == b and a != other
    assert 15 <= a.count(503) <= 45


async def test_slow_drip_stream_spreads_over_tokens() -> None:
    t0 = await now()
    r, _ = await fault("slow_drip;seconds=0.3", stream=True)
    assert await now() - t0 >= 0.25
    frames = [ln[6:] for ln in r.text.split("\n\n") if ln.startswith("data: ")]
    assert frames[-1] == "[DONE]" and json.loads(frames[-3])["choices"][0]["finish_reason"] == "stop"


async def test_execution_log_says_where_each_fault_came_from() -> None:
    plan = plan_from_text(
        '[[rules]]\nturn = 1\nfault = "http_503"\n\n[[rules]]\nname = "outage"\nturn = 2\nfault = "reset"\n'
    )
    app = create_app(seed=1, plan=plan)
    async with client(app) as c:
        for turn in (0, 1):
            await c.post(
                "/v1/chat/completions", json={"messages": MSGS}, headers={"x-smg-routing-key": "s", "x-turn": str(turn)}
            )
        await c.post(
            "/v1/chat/completions", json={"messages": MSGS}, headers={"x-smg-routing-key": "s", "x-fake-fault": "abort"}
        )
        with pytest.raises(httpx.TransportError):
            await c.post(
                "/v1/chat/completions", json={"messages": MSGS}, headers={"x-smg-routing-key": "s", "x-turn": "2"}
            )
    got = [(e["fault"], e["fault_source"]) for e in app.executions["s"]]
    assert got == [(None, None), ("http_503", "plan:rule0"), ("abort", "header"), ("reset", "plan:outage")]


async def test_retokenized_prompt_reports_other_prompt_ids_than_were_sent() -> None:
    app = create_app(seed=1)
    ids = TOK.encode(
        TOK.apply_chat_template(MSGS, add_generation_prompt=True, tokenize=False), add_special_tokens=False
    )
    async with client(app) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"input_ids": ids, "return_meta_info": True},
            headers={"x-fake-fault": "retokenized_prompt;at=3", "x-smg-routing-key": "s"},
        )
    got = r.json()["choices"][0]["meta_info"]["prompt_token_ids"]
    assert r.status_code == 200 and len(got) == len(ids)
    assert got[:3] == ids[:3] and got[3] != ids[3] and got[4:] == ids[4:]
    assert entry(app)["retokenized_at"] == 3
    # alt names the replacement token (here 0: smaller than the one sent)
    async with client(app) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"input_ids": ids, "return_meta_info": True},
            headers={"x-fake-fault": "retokenized_prompt;at=0;alt=0", "x-smg-routing-key": "s2"},
        )
    got = r.json()["choices"][0]["meta_info"]["prompt_token_ids"]
    assert ids[0] != 0 and got[0] == 0 and got[1:] == ids[1:]
    # no fault: the fake does not report prompt ids at all (the server keeps the ids it sent)
    r, _ = await fault("none")
    assert "prompt_token_ids" not in r.json()["choices"][0]["meta_info"]


async def test_retokenized_prompt_from_end_rewrites_the_tail_of_the_checkpoint_the_prompt_extends() -> None:
    app = create_app(seed=1)
    ids = TOK.encode(
        TOK.apply_chat_template(MSGS, add_generation_prompt=True, tokenize=False), add_special_tokens=False
    )
    head = {"x-smg-routing-key": "s", "x-fake-fault": "retokenized_prompt;from_end=1"}
    async with client(app) as c:
        # a first turn: no checkpoint answered for the key, so counted from the prompt's end
        r = await c.post("/v1/chat/completions", json={"input_ids": ids, "return_meta_info": True}, headers=head)
        meta = r.json()["choices"][0]["meta_info"]
        assert entry(app)["retokenized_at"] == len(ids) - 1 and entry(app)["retokenized_checkpoint"] is None
        # the checkpoint a server stores: the reported prompt + the completion; a later turn extends it
        cp = meta["prompt_token_ids"] + [t for _, t in meta["output_token_logprobs"]]
        nxt = cp + ids[1:]
        r = await c.post("/v1/chat/completions", json={"input_ids": nxt, "return_meta_info": True}, headers=head)
    got = r.json()["choices"][0]["meta_info"]["prompt_token_ids"]
    assert entry(app)["retokenized_checkpoint"] == len(cp) and entry(app)["retokenized_at"] == len(cp) - 1
    assert got[: len(cp) - 1] == nxt[: len(cp) - 1] and got[len(cp) - 1] != nxt[len(cp) - 1]
    assert got[len(cp) :] == nxt[len(cp) :]


async def test_n_answers_that_many_choices_the_first_unchanged() -> None:
    async def ask(body: dict[str, Any]) -> dict[str, Any]:
        async with client(create_app(seed=1)) as c:
            r = await c.post("/v1/chat/completions", json=body, headers={"x-smg-routing-key": "s"})
        assert r.status_code == 200
        out: dict[str, Any] = r.json()
        return out

    one = await ask({"messages": MSGS})
    two = await ask({"messages": MSGS, "n": 2})
    assert [ch["index"] for ch in two["choices"]] == [0, 1]
    assert two["choices"][0] == one["choices"][0]  # choice 0 is the answer an n = 1 request gets
    other = two["choices"][1]
    ids = [t for _, t in other["meta_info"]["output_token_logprobs"]]
    assert other["message"]["content"] != one["choices"][0]["message"]["content"]
    assert other["meta_info"]["completion_tokens"] == len(ids) and ids[-1] == IM_END
    for odd in (1, 0, -1, True, "2", 10**30):  # not an integer 2..8: one choice, as before
        assert len((await ask({"messages": MSGS, "n": odd}))["choices"]) == 1
