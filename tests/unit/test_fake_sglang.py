"""The fake SGLang in-process: answer shape, TITO-exact tokens, endpoints, stats, bad input, determinism."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from harness.fake_sglang import FaultPlan, create_app, plan_from_text
from harness.tokenizer import load_tokenizer

TOK = load_tokenizer()
IM_END = TOK.convert_tokens_to_ids("<|im_end|>")
MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a thing."}]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake")


def plan(text: str) -> FaultPlan:
    return plan_from_text(text, "<test>")


def encode(text: str) -> list[int]:
    return list(TOK.encode(text, add_special_tokens=False))


def render(msgs: list[dict[str, Any]], gen: bool) -> str:
    return str(TOK.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen))


def out_ids(resp: dict[str, Any]) -> list[int]:
    return [t for _, t in resp["choices"][0]["meta_info"]["output_token_logprobs"]]


async def until(pred: Callable[[], bool]) -> None:
    for _ in range(1000):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def chat(c: httpx.AsyncClient, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return await c.post("/v1/chat/completions", json=body or {"messages": MSGS}, headers=hdrs)


async def test_chat_response_shape() -> None:
    async with client(create_app(seed=1)) as c:
        r = await chat(c, x_smg_routing_key="s1")
    assert r.status_code == 200
    d = r.json()
    assert d["object"] == "chat.completion"
    assert isinstance(d["created"], int) and d["model"] == "fake-sglang"
    ch = d["choices"][0]
    assert ch["index"] == 0 and ch["finish_reason"] == "stop"
    assert ch["message"]["role"] == "assistant" and isinstance(ch["message"]["content"], str)
    meta = ch["meta_info"]
    assert meta["id"] == d["id"]
    assert meta["finish_reason"] == {"type": "stop", "matched": IM_END}
    assert meta["completion_tokens"] == len(meta["output_token_logprobs"])
    assert all(isinstance(lp, float) and lp <= 0 and isinstance(t, int) for lp, t in meta["output_token_logprobs"])
    prompt = encode(render(MSGS, True))
    assert meta["prompt_tokens"] == len(prompt)
    assert d["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": meta["completion_tokens"],
        "total_tokens": len(prompt) + meta["completion_tokens"],
    }


async def test_completion_ids_decode_to_content_and_end_with_im_end() -> None:
    async with client(create_app(seed=2)) as c:
        for i in range(20):
            d = (await chat(c, x_smg_routing_key=f"s{i}")).json()
            ids = out_ids(d)
            assert ids[-1] == IM_END
            assert TOK.decode(ids[:-1]) == d["choices"][0]["message"]["content"]
            assert IM_END not in ids[:-1]


@pytest.mark.parametrize("tool_calls", [0, 1, 2])
async def test_checkpoint_is_prefix_of_canonical_rendering(tool_calls: int) -> None:
    """TITO: prompt ids + completion ids must prefix the template's rendering of the next turn."""
    hdr = {"x_fake_fault": f"tool_calls;count={tool_calls}"} if tool_calls else {}
    async with client(create_app(seed=3)) as c:
        d = (await chat(c, x_smg_routing_key="s", **hdr)).json()
    msg = d["choices"][0]["message"]
    assert len(msg.get("tool_calls", [])) == tool_calls
    assert d["choices"][0]["finish_reason"] == ("tool_calls" if tool_calls else "stop")
    checkpoint = encode(render(MSGS, True)) + out_ids(d)
    canonical = encode(render([*MSGS, msg], False))
    assert canonical[: len(checkpoint)] == checkpoint
    assert len(canonical) - len(checkpoint) <= 1  # the template's trailing newline
    # A next turn (tool result or user) extends it too.
    nxt = [*MSGS, msg, {"role": "tool" if tool_calls else "user", "content": "ok"}]
    assert encode(render(nxt, True))[: len(checkpoint)] == checkpoint


async def test_tool_calls_are_openai_shaped_and_probability_driven() -> None:
    app = create_app(seed=4, plan=plan("[generation]\ntool_call_probability = 1.0"))
    async with client(app) as c:
        d = (await chat(c, x_smg_routing_key="s")).json()
    calls = d["choices"][0]["message"]["tool_calls"]
    assert calls and d["choices"][0]["finish_reason"] == "tool_calls"
    for tc in calls:
        assert tc["type"] == "function" and tc["id"].startswith("call_")
        assert isinstance(json.loads(tc["function"]["arguments"]), dict)
    assert d["choices"][0]["meta_info"]["finish_reason"]["type"] == "stop"


async def test_input_ids_and_messages_give_the_same_answer() -> None:
    ids = encode(render(MSGS, True))
    async with client(create_app(seed=5)) as c:
        a = (await chat(c, x_smg_routing_key="k", x_turn="0", x_attempt="0")).json()
        b = (await chat(c, {"input_ids": ids}, x_smg_routing_key="k", x_turn="0", x_attempt="0")).json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    assert out_ids(a) == out_ids(b)


async def test_max_tokens_gives_length_without_im_end() -> None:
    async with client(create_app(seed=6)) as c:
        d = (await chat(c, {"messages": MSGS, "max_tokens": 2}, x_smg_routing_key="s")).json()
    ch = d["choices"][0]
    assert ch["finish_reason"] == "length" and ch["meta_info"]["finish_reason"] == {"type": "length", "length": 2}
    ids = out_ids(d)
    assert len(ids) == 2 and IM_END not in ids
    assert TOK.decode(ids) == ch["message"]["content"]


async def test_generate_native() -> None:
    ids = encode(render(MSGS, True))
    async with client(create_app(seed=7)) as c:
        same = {"x-attempt": "0"}
        big = {"input_ids": ids, "sampling_params": {"max_new_tokens": 1000}}
        r = await c.post("/generate", json=big, headers=same)
        r2 = await c.post("/generate", json={"text": "hello there", "sampling_params": {"max_new_tokens": 3}})
        r3 = await c.post("/generate", json={"input_ids": ids, "stream": True}, headers=same)
    d = r.json()
    assert r.status_code == 200 and set(d) == {"text", "output_ids", "meta_info"}
    assert d["output_ids"][-1] == IM_END and TOK.decode(d["output_ids"][:-1]) == d["text"]
    assert d["meta_info"]["completion_tokens"] == len(d["output_ids"]) == len(d["meta_info"]["output_token_logprobs"])
    assert [t for _, t, _ in d["meta_info"]["output_token_logprobs"]] == d["output_ids"]
    d2 = r2.json()
    assert d2["meta_info"]["finish_reason"]["type"] == "length" and len(d2["output_ids"]) == 3
    frames = [ln[6:] for ln in r3.text.split("\n\n") if ln.startswith("data: ")]
    assert frames[-1] == "[DONE]" and json.loads(frames[0])["text"] == d["text"]


def sse_frames(text: str) -> list[Any]:
    frames = [ln[6:] for ln in text.split("\n\n") if ln.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


async def test_stream_sse_matches_non_stream() -> None:
    async with client(create_app(seed=8)) as c:
        full = (await chat(c, x_smg_routing_key="s", x_turn="0", x_attempt="0")).json()
        r = await chat(c, {"messages": MSGS, "stream": True}, x_smg_routing_key="s", x_turn="0", x_attempt="0")
        rt = await chat(c, {"messages": MSGS, "stream": True}, x_smg_routing_key="s", x_fake_fault="tool_calls;count=1")
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_frames(r.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last["meta_info"]["output_token_logprobs"] == full["choices"][0]["meta_info"]["output_token_logprobs"]
    assert chunks[-1]["usage"] == full["usage"]
    tchunks = sse_frames(rt.text)
    assert any("tool_calls" in c["choices"][0]["delta"] for c in tchunks if c["choices"])
    assert tchunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_abort_request_ends_inflight_with_partial_tokens() -> None:
    app = create_app(seed=9, plan=plan('[latency]\nmodel = "per_token"\nttft_ms = 10\nitl_ms = 40'))
    body = {"messages": MSGS, "rid": "my-rid"}
    async with client(app) as c:
        task = asyncio.ensure_future(chat(c, body, x_smg_routing_key="s"))
        await until(lambda: app.counters["inflight"] == 1)
        await asyncio.sleep(0.15)
        ab = await c.post("/abort_request", json={"rid": "my-rid"})
        d = (await task).json()
        none = await c.post("/abort_request", json={"abort_all": True})
    assert ab.json() == {"aborted": 1} and none.json() == {"aborted": 0}
    ch = d["choices"][0]
    assert d["id"] == "my-rid"
    assert ch["finish_reason"] == "abort" and ch["meta_info"]["finish_reason"]["type"] == "abort"
    ids = out_ids(d)
    assert 1 <= len(ids) <= 6 and IM_END not in ids
    assert TOK.decode(ids) == ch["message"]["content"]
    assert app.executions["s"][0]["outcome"] == "aborted"


async def test_abort_all_ends_streams_and_hangs() -> None:
    app = create_app(seed=10, plan=plan('[latency]\nmodel = "per_token"\nttft_ms = 5\nitl_ms = 50'))
    async with client(app) as c:
        t1 = asyncio.ensure_future(chat(c, {"messages": MSGS, "stream": True}, x_smg_routing_key="a"))
        t2 = asyncio.ensure_future(chat(c, x_smg_routing_key="b", x_fake_fault="hang;seconds=5"))
        await until(lambda: app.counters["inflight"] == 2)
        await asyncio.sleep(0.12)
        assert (await c.post("/abort_request", json={"abort_all": True})).json() == {"aborted": 2}
        r1, r2 = await t1, await t2
    s = sse_frames(r1.text)
    assert s[-2]["choices"][0]["finish_reason"] == "abort"
    assert r2.json()["choices"][0]["finish_reason"] == "abort"


async def test_stats_execution_log() -> None:
    app = create_app(seed=11)
    async with client(app) as c:
        await chat(c, x_smg_routing_key="s1", x_request_id="req-a", x_turn="3", x_attempt="1")
        await chat(c, x_smg_routing_key="s1", x_fake_fault="http_503")
        await chat(c, x_smg_routing_key="s2", x_fake_fault="abort;fraction=0.5")
        await chat(c)
        stats = (await c.get("/stats")).json()
    ex = stats["executions"]
    assert set(ex) == {"s1", "s2", "-"}
    first, second = ex["s1"]
    required = {"rid", "request_id", "turn", "attempt", "prompt_tokens", "completion_tokens", "finish_reason"}
    assert required | {"outcome", "fault"} <= set(first)
    assert (first["request_id"], first["turn"], first["attempt"], first["outcome"]) == ("req-a", 3, 1, "completed")
    assert first["finish_reason"] == "stop" and first["completion_tokens"] > 0 and first["content_sha"]
    assert (second["outcome"], second["status"], second["fault"]) == ("error", 503, "http_503")
    assert ex["s2"][0]["outcome"] == "aborted" and ex["s2"][0]["fault"] == "abort;fraction=0.5"
    counters = stats["counters"]
    assert counters["generations"] == 4 and counters["inflight"] == 0
    assert counters["completed"] == 2 and counters["errors"] == 1 and counters["aborted"] == 1
    assert counters["faults"] == {"http_503": 1, "abort": 1}


async def test_turn_and_attempt_derived_without_headers() -> None:
    app = create_app(seed=12)
    convo = [*MSGS, {"role": "assistant", "content": "one"}, {"role": "user", "content": "more"}]
    convo += [{"role": "assistant", "content": "two"}, {"role": "user", "content": "again"}]
    async with client(app) as c:
        a = (await chat(c, {"messages": convo}, x_smg_routing_key="s")).json()
        b = (await chat(c, {"messages": convo}, x_smg_routing_key="s")).json()
        await chat(c, {"messages": MSGS}, x_smg_routing_key="s")
    turns = [(e["turn"], e["attempt"]) for e in app.executions["s"]]
    assert turns == [(2, 0), (2, 1), (0, 0)]
    assert a["choices"][0]["message"] != b["choices"][0]["message"]  # a retry is a new draw


async def test_admin_plan_replace_get_and_reset() -> None:
    app = create_app(seed=13)
    async with client(app) as c:
        assert (await chat(c, x_smg_routing_key="s")).status_code == 200
        r = await c.put("/admin/plan", content='[[rules]]\nfault = "http_429"\nsession = "s*"\n')
        assert r.status_code == 200 and r.json()["plan"]["rules"][0]["fault"] == "http_429"
        assert (await chat(c, x_smg_routing_key="s")).status_code == 429
        assert (await chat(c, x_smg_routing_key="other")).status_code == 200
        got = (await c.get("/admin/plan")).json()
        assert got["source"].startswith("<admin")
        r = await c.put("/admin/plan", json={"rules": [{"fault": "http_500", "turn": [0]}]})
        assert r.status_code == 200
        assert (await chat(c, x_smg_routing_key="x")).status_code == 500
        bad = await c.put("/admin/plan", content='[[rules]]\nfault = "explode"\n')
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "plan_error"
        assert "rules[0].fault" in bad.json()["error"]["message"]
        assert (await chat(c, x_smg_routing_key="x")).status_code == 500  # the old plan stays
        assert (await c.post("/admin/reset")).json() == {"ok": True}
        stats = (await c.get("/stats")).json()
    assert stats["executions"] == {} and stats["counters"]["generations"] == 0


async def test_health_models_404_405() -> None:
    async with client(create_app()) as c:
        assert (await c.get("/health")).json() == {"status": "ok"}
        assert (await c.get("/v1/models")).json()["data"][0]["id"] == "fake-sglang"
        r404, r405 = await c.get("/nope"), await c.get("/v1/chat/completions")
    assert r404.status_code == 404 and r404.json()["error"]["type"] == "not_found"
    assert r405.status_code == 405 and "error" in r405.json()


BAD_BODIES: list[tuple[str, Any]] = [
    ("not json", b"{nope"),
    ("not utf8", b"\xff\xfe"),
    ("array", []),
    ("no prompt", {"model": "x"}),
    ("ids str", {"input_ids": [1, "a"]}),
    ("ids float", {"input_ids": [1.5]}),
    ("ids negative", {"input_ids": [-1]}),
    ("ids empty", {"input_ids": []}),
    ("ids huge", {"input_ids": [2**40]}),
    ("ids not list", {"input_ids": "123"}),
    ("messages not list", {"messages": "hi"}),
    ("message not object", {"messages": ["hi"]}),
    ("role missing", {"messages": [{"content": "hi"}]}),
    ("content wrong", {"messages": [{"role": "user", "content": 5}]}),
    ("max_tokens str", {"messages": MSGS, "max_tokens": "10"}),
    ("max_tokens zero", {"messages": MSGS, "max_tokens": 0}),
    ("max_tokens bool", {"messages": MSGS, "max_tokens": True}),
    ("stream str", {"messages": MSGS, "stream": "yes"}),
    ("model int", {"messages": MSGS, "model": 3}),
    ("rid int", {"messages": MSGS, "rid": 3}),
]


@pytest.mark.parametrize(("why", "body"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_input_is_400_json(why: str, body: Any) -> None:
    app = create_app()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client(app) as c:
        r = await c.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, why
    err = r.json()["error"]
    assert isinstance(err["type"], str) and isinstance(err["message"], str) and err["message"]


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", {"messages": MSGS}, {"x-fake-fault": "explode"}),
        ("/v1/chat/completions", {"messages": MSGS}, {"x-fake-fault": "abort;fraction=2"}),
        ("/v1/chat/completions", {"messages": MSGS}, {"x-fake-fault": "abort;bogus=1"}),
        ("/generate", {"input_ids": [1], "sampling_params": []}, {}),
        ("/generate", {"text": ""}, {}),
        ("/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": -3}}, {}),
        ("/abort_request", {"rid": 5}, {}),
        ("/abort_request", [], {}),
    ],
)
async def test_bad_headers_and_other_endpoints_400(path: str, body: Any, headers: dict[str, str]) -> None:
    async with client(create_app()) as c:
        r = await c.post(path, json=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["message"]


async def test_context_too_long_is_400() -> None:
    app = create_app(plan=plan("[generation]\ncontext_length = 10"))
    async with client(app) as c:
        r = await chat(c, {"input_ids": list(range(10))})
        ok = await chat(c, {"input_ids": list(range(9))})
    assert r.status_code == 400 and r.json()["error"]["type"] == "context_length_exceeded"
    assert ok.status_code == 200


def _requests() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """64 distinct requests: sessions x turns, some with identity headers, some derived from the prompt."""
    out = []
    for s in range(16):
        convo = [{"role": "user", "content": f"session {s} start"}]
        for t in range(4):
            hdrs = {"x-smg-routing-key": f"sess-{s}"}
            if s % 2 == 0:
                hdrs |= {"x-turn": str(t), "x-attempt": "0"}
            out.append((f"{s}/{t}", {"messages": list(convo), "max_tokens": 25 + s}, hdrs))
            convo += [{"role": "assistant", "content": f"answer {t}"}, {"role": "user", "content": f"q {t}"}]
    return out


DET_PLAN = """
[latency]
model = "uniform"
min_ms = 0
max_ms = 4
[generation]
tool_call_probability = 0.3
[[rules]]
fault = "abort"
probability = 0.2
[[rules]]
fault = "http_503"
probability = 0.1
[[rules]]
fault = "logprob_mismatch"
turn = 3
probability = 0.5
"""


async def _answers(concurrent: bool) -> dict[str, Any]:
    app = create_app(seed=42, plan=plan(DET_PLAN))
    reqs = _requests()
    results: dict[str, Any] = {}
    sem = asyncio.Semaphore(32)

    async def one(c: httpx.AsyncClient, name: str, body: dict[str, Any], hdrs: dict[str, str]) -> None:
        async with sem:
            r = await c.post("/v1/chat/completions", json=body, headers=hdrs)
        d = r.json()
        if r.status_code == 200:
            d.pop("created")
        results[name] = (r.status_code, d, r.headers.get("x-fake-fault-applied"))

    async with client(app) as c:
        if concurrent:
            random.Random(7).shuffle(reqs)
            await asyncio.gather(*(one(c, *r) for r in reqs))
        else:
            for r in reqs:
                await one(c, *r)
    return results


async def test_determinism_sequential_vs_concurrent_shuffled() -> None:
    seq = await _answers(concurrent=False)
    conc = await _answers(concurrent=True)
    assert seq == conc
    statuses = {v[0] for v in seq.values()}
    assert statuses == {200, 503}  # the plan fired, and identically
    assert {v[2] for v in seq.values()} >= {None, "abort", "http_503"}


async def test_other_seed_gives_other_answers() -> None:
    async with client(create_app(seed=1)) as a, client(create_app(seed=2)) as b:
        ra = (await chat(a, x_smg_routing_key="s")).json()
        rb = (await chat(b, x_smg_routing_key="s")).json()
    assert ra["choices"][0]["message"] != rb["choices"][0]["message"]


async def test_created_uses_injected_clock() -> None:
    class FixedClock:
        def monotonic(self) -> float:
            return 5.0

        def wall(self) -> float:
            return 1_700_000_000.5

    async with client(create_app(clock=FixedClock())) as c:
        d = (await chat(c)).json()
    assert d["created"] == 1_700_000_000


async def test_tokenizer_path_argument(tmp_path: Any) -> None:
    from harness.tokenizer import DEFAULT_TOKENIZER_DIR

    app = create_app(tokenizer=str(DEFAULT_TOKENIZER_DIR))
    async with client(app) as c:
        assert (await chat(c)).status_code == 200


async def test_generic_tokenizer_path_gives_the_same_tokens() -> None:
    """With the word-id cache switched off (a foreign tokenizer), answers are rendered and encoded: same result."""
    from harness.fake_sglang.app import FakeSGLang
    from harness.fake_sglang.generate import TokenModel
    from harness.seams import LoopClock

    slow_model = TokenModel(TOK)
    slow_model._concat_ok = False
    slow_model._plain_body = False
    slow = FakeSGLang(seed=3, plan=FaultPlan(), model=slow_model, clock=LoopClock())
    fast = create_app(seed=3)
    for hdr in ({}, {"x_fake_fault": "tool_calls;count=2"}):
        async with client(slow) as s, client(fast) as f:
            a = (await chat(s, x_smg_routing_key="g", **hdr)).json()
            b = (await chat(f, x_smg_routing_key="g", **hdr)).json()
        assert out_ids(a) == out_ids(b) and a["choices"][0]["message"] == b["choices"][0]["message"]
