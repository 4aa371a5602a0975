"""Hostile-input fuzzing of the reference server and the fake SGLang, shared by the tests and bench/bench_fuzz.py.

What a hostile or careless client sends (CONTEXT.md, last section): non-finite
numbers, lone surrogates, deep nesting, invalid UTF-8, odd paths (dot
segments, ``%2e``, ``%2f``, ``%00``, double slashes) and odd header bytes. The
properties, per request and at the end:

- no 5xx, except 502 / 503 for a request that asked the fake for a fault that
  produces exactly those (``x-fake-fault``);
- every 4xx body is JSON;
- a canary session's ``GET`` body is byte-identical after the whole run;
- the process still serves a normal 3-turn session, and the fake's ``/stats``
  still answers valid JSON.

One world (server + in-process fake) lives across all examples of a run, on
one event loop (``asyncio.Runner``), so state damage from one example shows in
the next. Every run is deterministic with ``derandomize=True``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from hostile import RawResponse, raw_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.fake_sglang import FaultPlan
from harness.fake_sglang import create_app as create_fake
from harness.seams import IdSource, InlineExecutor
from reference_impl import ServerConfig, create_app
from reference_impl.logs import ListSink

CHAT = "v1/chat/completions"
JSON_CT = (b"content-type", b"application/json")
# faults the fuzz may inject on purpose, and the statuses they explain
INJECTED = {
    "http_503": {503},
    "no_meta_info": {502},
    "null_content": {502},
    "logprob_mismatch": {502},
    "invalid_json": {502},
    "reset": {502},
    "close_mid_body": {502},
    "abort;fraction=0.5": set(),
    "length;tokens=2": set(),
    "none": set(),
}

# ---------------------------------------------------------------- strategies

ODD_STRINGS = st.sampled_from(
    ["\ud800", "a\udfffb", "\udc00\ud800", "\ud83d\ude00", "é", "\x00", "\u2028", "\ufeff", "💥", "", " " * 3]
)
texts = ODD_STRINGS | st.text(max_size=6)
numbers = st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308])
scalars = st.none() | st.booleans() | numbers | texts
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(texts, inner, max_size=2),
    max_leaves=4,
)
roles = st.sampled_from(["user", "system", "assistant", "tool", "", "\ud800"]) | json_like
message = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": texts | json_like,
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {"id": texts, "type": st.just("function"), "function": st.fixed_dictionaries({"name": texts})},
                optional={"arguments": json_like},
            ),
            max_size=2,
        )
        | json_like,
        "tool_call_id": texts,
        "name": texts,
    },
)
chat_objects = st.fixed_dictionaries(
    {"messages": st.lists(message, min_size=1, max_size=3)},
    optional={
        "model": texts,
        "stream": st.booleans() | json_like,
        "temperature": numbers,
        "user": texts,
        "max_tokens": st.integers(-2, 40) | numbers,
        "rid": texts | json_like,
        "tools": json_like,
    },
)


def _encode(obj: Any, ascii_: bool) -> bytes:
    """Python's json writes NaN/Infinity and lone surrogates (escaped, or raw with surrogatepass)."""
    text = json.dumps(obj, ensure_ascii=ascii_, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A JSON text with a hostile splice: deep nesting, invalid UTF-8, a cut, a bare NaN."""
    raw = draw(base)
    kind = draw(st.sampled_from(["deep", "bytes", "cut", "token", "bom", "long"]))
    at = draw(st.integers(0, len(raw)))
    if kind == "deep":
        d = draw(st.integers(1, 300))
        return raw[:at] + b"[" * d + b"]" * d + raw[at:]
    if kind == "bytes":
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x00", b"\\ud800"])) + raw[at:]
    if kind == "cut":
        return raw[:at]
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind == "long":  # a long run of one token: where a scanner could go quadratic
        run = draw(st.sampled_from([b'\\"', b"[", b'{"a":', b'"', b"\\", b"\\ud800"])) * draw(st.integers(100, 20_000))
        return raw[:at] + run + raw[at:]
    return raw[:at] + draw(st.sampled_from([b"NaN", b"-Infinity", b"1e999", b'"\\udfff"', b"[]"])) + raw[at:]


chat_bodies = st.builds(_encode, chat_objects | json_like, st.booleans())
first_turns = st.builds(lambda t: _encode({"model": "m", "messages": [user(t)]}, True), st.text(max_size=20))
hostile_bodies = chat_bodies | mutated(chat_bodies) | st.binary(max_size=24)

header_names = st.sampled_from(
    [b"x-request-id", b"x-turn", b"x-attempt", b"content-length", b"x-odd", b"bad name", b"a:b", b"", b"\xff", b"X-UP"]
)
header_values = st.binary(max_size=12) | st.sampled_from([b"caf\xe9", "✓".encode(), b"a\r\nx-injected: 1", b"\xb2"])
headers = st.lists(st.tuples(header_names, header_values), max_size=4)

SEGMENTS = [".", "..", "%2e", "%2E", "%2e%2e", "%2f", "%00", "", "v1", "chat", "completions", "admin", "reset"]
SEGMENTS += ["plan", "abort_request", "generate", "models", "health", "stats", "%252e", "\\", "%3f", "#", "é", "flush"]
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map("/".join)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
session_ids = st.sampled_from(["", "x", "..", "%2e%2e", "%00", "0" * 32, "\u00e9"]) | st.text(max_size=6)


@dataclass(frozen=True)
class Req:
    kind: str  # chat | pass | session | fault
    method: str = "POST"
    path: str = ""  # after /sessions/{sid}/ (pass), or the id (session)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    fault: str = ""
    fresh: bool = False  # a new session for this request (else the long-lived fuzz session)


server_requests = st.one_of(
    st.builds(Req, st.just("chat"), headers=headers.map(tuple), body=hostile_bodies, fresh=st.booleans()),
    st.builds(Req, st.just("pass"), methods, paths, headers.map(tuple), hostile_bodies),
    st.builds(Req, st.just("session"), st.sampled_from(["GET", "DELETE"]), session_ids.map(str)),
    st.builds(Req, st.just("fault"), body=first_turns | chat_bodies, fault=st.sampled_from(sorted(INJECTED))),
)
FAKE_ROUTES = [("POST", "/v1/chat/completions"), ("POST", "/generate"), ("POST", "/abort_request")] * 3
FAKE_ROUTES += [("GET", "/stats"), ("GET", "/nope"), ("PUT", "/generate"), ("POST", "/admin/reset")]
fake_objects = st.fixed_dictionaries(
    {"input_ids": st.lists(st.integers(0, 5000), min_size=1, max_size=8) | json_like},
    optional={"model": texts, "rid": texts, "stream": st.booleans(), "max_tokens": st.integers(-1, 20), "text": texts},
)
fake_bodies = st.builds(_encode, fake_objects, st.booleans()) | hostile_bodies
fake_requests = st.sampled_from(FAKE_ROUTES).flatmap(
    lambda route: st.builds(Req, st.just("fake"), st.just(route[0]), st.just(route[1]), headers.map(tuple), fake_bodies)
)

plan_numbers = numbers | st.sampled_from([0, 0.5, 1, 2, 600_000, 10**12, -1])
plan_objects = st.fixed_dictionaries(
    {},
    optional={
        "latency": st.fixed_dictionaries(
            {"model": st.sampled_from(["none", "fixed", "uniform", "lognormal", "per_token"])},
            optional={k: plan_numbers for k in ("ms", "min_ms", "max_ms", "median_ms", "p99_ms", "cap_ms")},
        ),
        "generation": st.dictionaries(
            st.sampled_from(["min_words", "max_words", "tool_call_probability", "context_length"]),
            plan_numbers,
            max_size=3,
        ),
        "rules": st.lists(
            st.fixed_dictionaries(
                {"fault": st.sampled_from(["abort", "hang", "slow_drip", "spike", "tool_calls", "http_503", "x"])},
                optional={
                    "probability": plan_numbers,
                    "name": texts,
                    "turn": plan_numbers | st.lists(plan_numbers, max_size=2),
                    "params": st.dictionaries(
                        st.sampled_from(["fraction", "seconds", "ms", "count", "chunks", "tokens"]),
                        plan_numbers,
                        max_size=2,
                    ),
                },
            ),
            max_size=2,
        ),
    },
)
plan_bodies = st.builds(_encode, plan_objects, st.booleans()) | mutated(st.builds(_encode, plan_objects, st.just(True)))


# ---------------------------------------------------------------- worlds


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def episode(client: httpx.AsyncClient, sid: str, turns: int) -> None:
    """A normal multi-turn session: every turn 200, committed."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
    for t in range(turns):
        messages.append(user(f"question {t}"))
        r = await client.post(
            f"/sessions/{sid}/{CHAT}", json={"model": "m", "messages": messages}, headers={"x-turn": str(t)}
        )
        assert r.status_code == 200, r.text
        messages.append(r.json()["choices"][0]["message"])


@dataclass
class ServerWorld:
    app: Any
    fake: Any
    client: httpx.AsyncClient
    canary: str
    canary_body: bytes
    fuzz_sid: str
    examples: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def server_world() -> ServerWorld:
    fake = create_fake(seed=11)
    cfg = ServerConfig(backend_url="http://fake", worker_port=9999, max_body_bytes=64 * 1024)
    app = create_app(
        cfg,
        ids=IdSource(5),
        executor=InlineExecutor(),
        backend_transport=httpx.ASGITransport(app=fake),
        log_sink=ListSink(),
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server")
    canary = (await client.post("/sessions")).json()["session_id"]
    await episode(client, canary, 2)
    canary_body = (await client.get(f"/sessions/{canary}")).content
    fuzz_sid = (await client.post("/sessions")).json()["session_id"]
    return ServerWorld(app, fake, client, canary, canary_body, fuzz_sid)


def _json_body(resp: RawResponse) -> None:
    if 400 <= resp.status < 500:
        json.loads(resp.body)


async def server_example(w: ServerWorld, req: Req) -> None:
    hdrs = [JSON_CT, *req.headers]
    sid = w.fuzz_sid
    if req.fresh or req.kind == "fault":
        sid = (await w.client.post("/sessions")).json()["session_id"]
    if req.kind == "chat":
        resp = await raw_request(w.app, "POST", f"/sessions/{sid}/{CHAT}", headers=hdrs, body=req.body)
    elif req.kind == "pass":
        resp = await raw_request(w.app, req.method, f"/sessions/{w.fuzz_sid}/{req.path}", headers=hdrs, body=req.body)
    elif req.kind == "session":
        odd = quote(req.path.encode("utf-8", "surrogatepass"), safe="%.")
        resp = await raw_request(w.app, req.method, "/sessions/" + odd)
    else:
        fault_hdr = (b"x-fake-fault", req.fault.encode())
        resp = await raw_request(w.app, "POST", f"/sessions/{sid}/{CHAT}", headers=[JSON_CT, fault_hdr], body=req.body)
    w.examples += 1
    w.statuses[resp.status] = w.statuses.get(resp.status, 0) + 1
    allowed_5xx = INJECTED.get(req.fault, set()) if req.kind == "fault" else set()
    assert resp.status < 500 or resp.status in allowed_5xx, (req, resp.status, resp.body[:300])
    _json_body(resp)


async def server_final(w: ServerWorld) -> None:
    after = (await w.client.get(f"/sessions/{w.canary}")).content
    assert after == w.canary_body, "the canary session changed"
    sid = (await w.client.post("/sessions")).json()["session_id"]
    await episode(w.client, sid, 3)
    state = (await w.client.get(f"/sessions/{sid}")).json()
    assert [r["kind"] for r in state["records"]] == ["committed"] * 3
    stats = await raw_request(w.fake, "GET", "/stats")
    assert stats.status == 200 and isinstance(json.loads(stats.body)["executions"], dict)
    assert (await w.client.get("/stats")).json()["inflight"] == 0
    await w.client.aclose()
    await w.app.state.server.aclose()


@dataclass
class FakeWorld:
    fake: Any
    examples: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def fake_example(w: FakeWorld, req: Req) -> None:
    resp = await raw_request(w.fake, req.method, req.path, headers=[JSON_CT, *req.headers], body=req.body)
    w.examples += 1
    w.statuses[resp.status] = w.statuses.get(resp.status, 0) + 1
    assert resp.status < 500, (req, resp.status, resp.body[:300])
    _json_body(resp)
    stats = await raw_request(w.fake, "GET", "/stats")
    assert stats.status == 200
    json.loads(stats.body)


def _finite_numbers(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


async def plan_example(w: FakeWorld, body: bytes) -> None:
    ctype = b"application/json" if body[:1] == b"{" else b"application/toml"
    resp = await raw_request(w.fake, "PUT", "/admin/plan", headers=[(b"content-type", ctype)], body=body)
    w.examples += 1
    w.statuses[resp.status] = w.statuses.get(resp.status, 0) + 1
    assert resp.status in (200, 400), (body[:200], resp.status, resp.body[:300])
    got = await raw_request(w.fake, "GET", "/admin/plan")
    assert got.status == 200
    plan = json.loads(got.body)
    assert _finite_numbers(plan), plan
    lat = plan["latency"]
    assert all(lat[k] is None or lat[k] <= 600_000 for k in lat if k.endswith("_ms") or k == "ms"), lat
    w.fake.plan = FaultPlan()


# ---------------------------------------------------------------- runs


@dataclass
class FuzzResult:
    name: str
    examples: int
    seconds: float
    statuses: dict[int, int]
    failure: str | None = None


def _settings(n: int, derandomize: bool) -> settings:
    return settings(
        max_examples=n,
        derandomize=derandomize,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def run_server_fuzz(n: int, *, derandomize: bool = True) -> FuzzResult:
    with asyncio.Runner() as runner:
        w = runner.run(server_world())
        t0 = time.perf_counter()

        @_settings(n, derandomize)
        @given(server_requests)
        def one(req: Req) -> None:
            runner.run(server_example(w, req))

        one()
        runner.run(server_final(w))
        return FuzzResult("server", w.examples, time.perf_counter() - t0, w.statuses)


def run_fake_fuzz(n: int, *, derandomize: bool = True) -> FuzzResult:
    with asyncio.Runner() as runner:
        w = FakeWorld(create_fake(seed=3))
        t0 = time.perf_counter()

        @_settings(n, derandomize)
        @given(fake_requests)
        def one(req: Req) -> None:
            runner.run(fake_example(w, req))

        one()
        return FuzzResult("fake", w.examples, time.perf_counter() - t0, w.statuses)


def run_plan_fuzz(n: int, *, derandomize: bool = True) -> FuzzResult:
    with asyncio.Runner() as runner:
        w = FakeWorld(create_fake(seed=3))
        t0 = time.perf_counter()

        @_settings(n, derandomize)
        @given(plan_bodies)
        def one(body: bytes) -> None:
            runner.run(plan_example(w, body))

        one()
        return FuzzResult("plan", w.examples, time.perf_counter() - t0, w.statuses)


RUNS: dict[str, Callable[..., FuzzResult]] = {
    "server": run_server_fuzz,
    "fake": run_fake_fuzz,
    "plan": run_plan_fuzz,
}
