"""Hostile and careless input to the reference server: a 4xx naming the reason, never a 500, nothing lost.

Each test here reproduces an item of issue 13 that answered 500, stored data
that could not be served back, or reached the backend where it must not.
Requests go straight into the ASGI app (tests/unit/hostile.py) where httpx
would normalize what a hostile client sends as is.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hostile import raw_request
from server_fixtures import Rig, make_rig, user

from harness.fake_sglang import create_app as create_fake

CHAT = "/v1/chat/completions"
JSON_CT = (b"content-type", b"application/json")


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [user("hi")], **extra}


async def post_raw(r: Rig, sid: str, raw: bytes, **kw: Any) -> Any:
    kw.setdefault("headers", [JSON_CT])
    return await raw_request(server_app(r), "POST", f"/sessions/{sid}{CHAT}", body=raw, **kw)


def server_app(r: Rig) -> Any:
    return r.client._transport.app  # type: ignore[attr-defined]


# -- request bodies -------------------------------------------------------------------------------

NON_FINITE = [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":Infinity}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":-Infinity}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1e999}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"x":{"default":NaN}}]}',
    b'{"model":"m","messages":[{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function",'
    b'"function":{"name":"f","arguments":{"a":NaN}}}]},{"role":"user","content":"x"}]}',
]


@pytest.mark.parametrize("raw", NON_FINITE)
async def test_non_finite_numbers_are_400_and_never_stored(raw: bytes) -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        resp = await post_raw(r, sid, raw)
        assert resp.status == 400, resp.body
        err = resp.json()["error"]
        assert err["type"] == "InvalidRequest" and "non-finite" in err["message"]
        got = await r.get(sid)
        assert got.status_code == 200 and got.json()["records"] == []
        assert r.backend is not None and r.backend.calls == []


SURROGATES = [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"\\ud800"}',
    b'{"model":"m","messages":[{"role":"user","content":"hi","name":"a\\udfffb"}]}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"ok"},'
    b'{"role":"tool","tool_call_id":"\\udc00","content":"r"}]}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"\\ud83d":1}',
    b'{"model":"m","messages":[{"role":"user","content":"\xed\xa0\x80"}]}',  # a surrogate encoded as UTF-8
    b'{"model":"m","messages":[{"role":"user","content":"\xff"}]}',  # not UTF-8 at all
]


@pytest.mark.parametrize("raw", SURROGATES)
async def test_lone_surrogates_and_bad_utf8_are_400_and_never_stored(raw: bytes) -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        resp = await post_raw(r, sid, raw)
        assert resp.status == 400, resp.body
        assert resp.json()["error"]["type"] == "InvalidRequest"
        assert "surrogate" in resp.body.decode() or "UTF-8" in resp.body.decode()
        got = await r.get(sid)
        assert got.status_code == 200 and got.json()["records"] == []


async def test_a_surrogate_pair_is_a_character_and_round_trips_byte_for_byte() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        raw = b'{"model":"m","messages":[{"role":"user","content":"smile \\ud83d\\ude00"}],"user":"\\ud83d\\ude00"}'
        resp = await post_raw(r, sid, raw)
        assert resp.status == 200, resp.body
        first = await r.get(sid)
        assert first.status_code == 200
        assert first.json()["records"][0]["request"]["user"] == "\U0001f600"
        assert (await r.get(sid)).content == first.content


@pytest.mark.parametrize("depth", [20, 5000, 100_000])
async def test_nesting_deeper_than_the_limit_is_400(depth: int) -> None:
    async with make_rig(max_json_depth=16) as r:
        sid = await r.new_session()
        raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}"
        resp = await post_raw(r, sid, raw)
        assert resp.status == 400, resp.body
        assert "nest" in resp.json()["error"]["message"]
        ok = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * 13 + b"]" * 13 + b"}"
        assert (await post_raw(r, sid, ok)).status == 200  # the body object + 13 arrays = 14 <= 16


async def test_body_over_the_limit_is_413_and_reading_stops_there() -> None:
    async with make_rig(max_body_bytes=1000) as r:
        sid = await r.new_session()
        chunks = [b" " * 600] * 50
        resp = await post_raw(r, sid, b"", chunks=chunks)
        assert resp.status == 413 and resp.json()["error"]["type"] == "RequestTooLarge"
        assert "1000" in resp.json()["error"]["message"]
        assert resp.chunks_read <= 2  # stopped reading at the limit, not after buffering 30 kB
        declared = await post_raw(r, sid, b"", chunks=chunks, headers=[JSON_CT, (b"content-length", b"30000")])
        assert declared.status == 413 and declared.chunks_read == 0
        assert (await r.chat(sid, [user("hi")])).status_code == 200


async def test_pass_through_body_over_the_limit_is_413() -> None:
    async with make_rig(max_body_bytes=100) as r:
        sid = await r.new_session()
        resp = await raw_request(server_app(r), "POST", f"/sessions/{sid}/generate", body=b"x" * 101)
        assert resp.status == 413


async def test_a_large_unknown_key_is_stored_and_served_back_within_the_limit() -> None:
    async with make_rig(max_body_bytes=200_000) as r:
        sid = await r.new_session()
        blob = "y" * 150_000
        assert (await r.chat(sid, [user("hi")], extra_blob=blob)).status_code == 200
        state = await r.state(sid)
        assert state["records"][0]["request"]["extra_blob"] == blob
        assert r.backend is not None and r.backend.calls[0]["body"]["extra_blob"] == blob
        assert (await r.chat(sid, [user("hi")], extra_blob=blob * 2)).status_code == 413


async def test_get_session_never_500_even_on_unserializable_stored_data() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert (await r.chat(sid, [user("hi")])).status_code == 200
        session = r.server.store.get(sid)
        assert session is not None
        session.records[0]["response"]["sneaked"] = [float("nan"), "\ud800"]  # e.g. a future code path
        got = await r.get(sid)
        assert got.status_code == 200
        assert json.loads(got.content)["records"][0]["response"]["sneaked"] == [None, "\ud800"]


async def test_backend_answer_that_cannot_be_stored_is_502() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert r.backend is not None
        good = (await r.chat(sid, [user("hi")])).content
        assert b'"created": 0' in good
        bad_nan = good.replace(b'"created": 0', b'"created": NaN')
        bad_sur = good.replace(b'"created": 0', b'"created": "\\udc00"')
        for bad in (bad_nan, bad_sur):
            r.backend.raw_replies.append(bad)
            resp = await r.chat(sid, [user("hi")])
            assert resp.status_code == 502 and resp.json()["error"]["type"] == "BadGateway"
        assert (await r.get(sid)).status_code == 200


# -- headers --------------------------------------------------------------------------------------

ODD_HEADERS = [
    (b"x-latin", b"caf\xe9"),  # latin-1 / obs-text
    (b"x-utf8", "café ✓".encode()),
    (b"x-high", bytes(range(0x80, 0x100))),
    (b"x-request-id", b"r\xff1"),
    (b"x-turn", b"\xb2"),
    (b"content-length", b"\xb2"),  # "²".isdigit() is True, int("²") raises
    (b"bad name", b"v"),
    (b"bad:name", b"v"),
    (b"", b"empty name"),
    (b"\xff\xfe", b"binary name"),
    (b"x-crlf", b"a\r\nx-injected: 1"),
    (b"x-nul", b"a\x00b"),
]


async def test_any_header_a_client_can_send_is_forwarded_or_dropped_never_a_500() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert r.backend is not None
        body = json.dumps(chat_body()).encode()
        resp = await raw_request(server_app(r), "POST", f"/sessions/{sid}{CHAT}", headers=ODD_HEADERS, body=body)
        assert resp.status == 200, resp.body
        seen = r.backend.calls[-1]["headers"]
        assert "x-injected" not in seen and "x-crlf" not in seen and "x-nul" not in seen
        assert seen["x-latin"].encode("latin-1") == b"caf\xe9"  # bytes forwarded unchanged
        assert seen["x-high"].encode("latin-1") == bytes(range(0x80, 0x100))
        assert seen["x-smg-routing-key"] == sid
        echo = await raw_request(server_app(r), "GET", f"/sessions/{sid}/echo/x", headers=ODD_HEADERS)
        assert echo.status in (201, 403), echo.body
        assert (await r.get(sid)).status_code == 200


# -- pass-through paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/%00", "/v1/models%00", "/a\x01b", "/../x", "/a/../../x", "/%2e%2e/x"])
async def test_bad_pass_through_paths_are_4xx(suffix: str) -> None:
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        resp = await raw_request(server_app(r), "GET", f"/sessions/{sid}{suffix}")
        assert 400 <= resp.status < 500, (suffix, resp.status, resp.body)
        assert isinstance(resp.json()["error"]["message"], str)


CHAT_SPELLINGS = [
    "/./v1/chat/completions",
    "/%2e/v1/chat/completions",
    "/%2E/v1/chat/completions",
    "/x/../v1/chat/completions",
    "/x/%2e%2e/v1/chat/completions",
    "//v1/chat/completions",
    "/v1//chat/completions",
    "/v1/chat/completions/",
    "/v1%2fchat%2fcompletions",
    "/v1/./chat/completions/.",
    "/%252e/v1/chat/completions",
    "/V1/chat/completions",
]


@pytest.mark.parametrize("suffix", CHAT_SPELLINGS)
async def test_chat_path_spelled_any_way_is_tracked_or_refused(suffix: str) -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert r.backend is not None
        body = json.dumps(chat_body()).encode()
        resp = await raw_request(server_app(r), "POST", f"/sessions/{sid}{suffix}", headers=[JSON_CT], body=body)
        records = (await r.state(sid))["records"]
        assert len(r.backend.calls) == len(records)  # every backend chat call is a tracked turn
        if resp.status == 200:
            assert len(records) == 1 and records[0]["path"] == f"/sessions/{sid}{CHAT}"
            assert len(r.logs.events("chat_done")) == 1
        else:
            assert 400 <= resp.status < 500 and records == []


ADMIN = [
    ("POST", "/admin/reset"),
    ("PUT", "/admin/plan"),
    ("GET", "/admin/plan"),
    ("POST", "/abort_request"),
    ("POST", "/./abort_request"),
    ("POST", "/x/../admin/reset"),
    ("POST", "/%61dmin/reset"),
    ("POST", "//admin//reset"),
    ("GET", "/stats"),
]


@pytest.mark.parametrize(("method", "suffix"), ADMIN)
async def test_backend_admin_and_control_endpoints_are_never_reachable(method: str, suffix: str) -> None:
    fake = create_fake(seed=1)
    async with make_rig(backend_app=fake) as r:
        sid = await r.new_session()
        assert (await r.chat(sid, [user("hi")])).status_code == 200
        before = json.dumps(fake.executions, sort_keys=True)
        plan_body = b'{"rules":[{"fault":"http_500"}]}' if "plan" in suffix else b'{"abort_all":true}'
        resp = await raw_request(server_app(r), method, f"/sessions/{sid}{suffix}", headers=[JSON_CT], body=plan_body)
        assert resp.status == 403, (suffix, resp.status, resp.body)
        assert resp.json()["error"]["type"] == "PathNotAllowed"
        assert fake.counters["abort_requests"] == 0 and fake.plan.rules == ()
        assert json.dumps(fake.executions, sort_keys=True) == before


async def test_allowlisted_pass_through_still_works() -> None:
    async with make_rig(backend_app=create_fake(seed=1)) as r:
        sid = await r.new_session()
        for suffix in ("/v1/models", "/./v1/models", "/get_model_info", "/health"):
            resp = await raw_request(server_app(r), "GET", f"/sessions/{sid}{suffix}")
            assert resp.status == 200, (suffix, resp.body)
        gen = await r.client.post(f"/sessions/{sid}/generate", json={"text": "hello", "stream": False})
        assert gen.status_code == 200 and "meta_info" in gen.json()
        assert (await r.state(sid))["records"] == []


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/sessions//0", 404), ("PATCH", "/sessions", 405)])
async def test_no_route_and_wrong_method_are_json_errors(method: str, path: str, status: int) -> None:
    async with make_rig() as r:
        resp = await raw_request(server_app(r), method, path)
        assert resp.status == status and isinstance(resp.json()["error"]["message"], str)


def test_limit_flags_reach_the_config_and_bad_values_exit_2() -> None:
    from reference_impl.launcher import _config, build_parser, main

    argv = ["--backend-url", "http://b", "--max-body-bytes", "1000", "--max-json-depth", "8"]
    args = build_parser().parse_args([*argv, "--passthrough-path", "/v1/models", "--passthrough-path", "/echo/*"])
    cfg = _config(args, 1)
    assert (cfg.max_body_bytes, cfg.max_json_depth) == (1000, 8)
    assert cfg.passthrough_paths == ("/v1/models", "/echo/*")
    default = _config(build_parser().parse_args(["--backend-url", "http://b"]), 1)
    assert "/generate" in default.passthrough_paths and "/admin/reset" not in default.passthrough_paths
    assert main(["--backend-url", "http://b", "--max-body-bytes", "0"]) == 2
    assert main(["--backend-url", "http://b", "--passthrough-path", "../admin"]) == 2


async def test_a_client_gone_mid_body_is_not_logged_as_a_server_500() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        for path in (f"/sessions/{sid}{CHAT}", f"/sessions/{sid}/generate"):
            resp = await raw_request(server_app(r), "POST", path, chunks=[b'{"messages": ['], disconnect=True)
            assert resp.status != 500, (path, resp.body)
        (done,) = r.logs.events("chat_done")
        assert done["status"] == 499 and done["outcome"] == "cancelled"
        assert (await r.state(sid))["records"] == [] and r.server.counters.inflight == 0


async def test_get_session_serves_the_records_even_if_the_mismatch_diagnostic_fails() -> None:
    async with make_rig() as r:
        sid = await r.new_session()
        assert (await r.chat(sid, [user("hi")])).status_code == 200

        def broken(*args: Any) -> Any:
            raise RuntimeError("template blew up")

        r.server.tito.mismatch = broken  # type: ignore[method-assign]
        got = await r.get(sid)
        assert got.status_code == 200 and len(got.json()["records"]) == 1
        assert "template blew up" in got.json()["metadata"]["token_mismatch"]["error"]
