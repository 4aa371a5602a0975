"""The foreign session server (tests/foreign_server) keeps the promises of CONTEXT.md, over loopback sockets.

It exists to prove the harness on a server the harness did not ship, so it must itself be right:
these tests drive it directly with httpx against a fake SGLang, both in the test's event loop.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.tokenizer import DEFAULT_TOKENIZER_DIR, SHIPPED, load_tokenizer
from tests.foreign_server.testing import deployment, free_port
from tests.foreign_server.tokens import STANDIN_SYSTEM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = {"role": "system", "content": "Be brief."}
CLI = [sys.executable, "-m", "tests.foreign_server", "--tokenizer", str(DEFAULT_TOKENIZER_DIR)]


def user(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"Question number {i}?"}


class Client:
    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http = http
        self.base = base

    async def create(self) -> str:
        r = await self.http.post(f"{self.base}/sessions")
        assert r.status_code == 200
        return str(r.json()["session_id"])

    async def chat(self, sid: str, messages: list[dict[str, Any]], **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        body = {"model": "m", "messages": messages, **kw}
        return await self.http.post(f"{self.base}/sessions/{sid}/v1/chat/completions", json=body, headers=headers)

    async def state(self, sid: str) -> dict[str, Any]:
        r = await self.http.get(f"{self.base}/sessions/{sid}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def assistant(r: httpx.Response) -> dict[str, Any]:
    msg = r.json()["choices"][0]["message"]
    out = {"role": "assistant", "content": msg["content"]}
    if msg.get("tool_calls"):
        out["tool_calls"] = msg["tool_calls"]
    return out


async def test_turns_extend_the_token_ids_with_the_server_own_names() -> None:
    tok = load_tokenizer(None)
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        msgs = [SYSTEM, user(0)]
        for i in range(3):
            r = await c.chat(sid, msgs, headers={"x-request-id": f"rid{i}", "x-turn": str(i)})
            assert r.status_code == 200 and "x-sglang-aborted" not in r.headers
            msgs = [*msgs, assistant(r), user(i + 1)]
        st = await c.state(sid)
        ids = st["metadata"]["accumulated_token_ids"]
        assert "token_ids" not in st["metadata"] and "messages" not in st["metadata"]
        rendered = tok.encode(tok.apply_chat_template(msgs[:-1], tokenize=False), add_special_tokens=False)
        assert ids == rendered[: len(ids)] and 0 <= len(rendered) - len(ids) <= 2  # the closing newline
        assert [r["kind"] for r in st["records"]] == ["committed"] * 3
        assert all("caller_request_id" not in r and "rid" not in json.dumps(r["request"]) for r in st["records"])
        last = st["records"][-1]["request"]
        assert last["logprobs"] is True and last["return_meta_info"] is True and last["stream"] is False
        execs = (await http.get(f"{d.backend_url}/stats")).json()["executions"]
        assert [e["request_id"] for e in execs[sid]] == ["rid0", "rid1", "rid2"]  # routing key + forwarded header


async def test_later_turns_render_only_the_appended_messages_after_a_stand_in() -> None:
    tok = load_tokenizer(None)
    seen: list[list[dict[str, Any]]] = []
    real = tok.apply_chat_template

    def spy(messages: Any, **kw: Any) -> Any:
        seen.append([dict(m) for m in messages])
        return real(messages, **kw)

    tok.apply_chat_template = spy
    try:
        async with deployment() as d, httpx.AsyncClient() as http:
            c = Client(http, d.urls[0])
            sid = await c.create()
            r0 = await c.chat(sid, [SYSTEM, user(0)])
            seen.clear()
            r1 = await c.chat(sid, [SYSTEM, user(0), assistant(r0), user(1)])
            assert r1.status_code == 200
    finally:
        tok.apply_chat_template = real  # type: ignore[method-assign]
    assert seen
    for rendered in seen:
        assert rendered[0] == STANDIN_SYSTEM
        assert user(0) not in rendered and SYSTEM not in rendered  # the stored history is never rendered again


async def test_retry_rolls_back_one_step_at_most() -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        r0 = await c.chat(sid, [SYSTEM, user(0)])
        h1 = [SYSTEM, user(0), assistant(r0), user(1)]
        r1 = await c.chat(sid, h1)
        h2 = [*h1, assistant(r1)]
        assert (await c.chat(sid, [*h2, user(2)])).status_code == 200
        assert (await c.chat(sid, [SYSTEM, {"role": "user", "content": "another start"}])).status_code == 400
        assert (await c.chat(sid, [*h1[:-1], {"role": "user", "content": "redo of turn 1"}])).status_code == 400
        redo = await c.chat(sid, [*h2, {"role": "user", "content": "redo of turn 2"}])
        assert redo.status_code == 200  # one assistant step discarded
        st = await c.state(sid)
        assert st["metadata"]["assistant_turns"] == 3 and len(st["records"]) == 3
        assert st["records"][-1]["response"]["id"] == redo.json()["id"]


async def test_first_turn_redo_rolls_back_to_the_empty_checkpoint() -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        await c.chat(sid, [SYSTEM, user(0)])
        r = await c.chat(sid, [SYSTEM, {"role": "user", "content": "a different first question"}])
        assert r.status_code == 200
        st = await c.state(sid)
        assert len(st["records"]) == 1 and st["records"][0]["response"]["id"] == r.json()["id"]


async def test_abort_is_provisional_and_marked_then_superseded() -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        r0 = await c.chat(sid, [SYSTEM, user(0)])
        before = (await c.state(sid))["metadata"]["accumulated_token_ids"]
        h = [SYSTEM, user(0), assistant(r0), user(1)]
        for _ in range(2):
            ab = await c.chat(sid, h, headers={"x-fake-fault": "abort;tokens=3"})
            assert ab.status_code == 200 and ab.headers["x-sglang-aborted"] == "1"
            st = await c.state(sid)
            assert [x["kind"] for x in st["records"]] == ["committed", "provisional"]  # one, at the tail
            assert st["metadata"]["accumulated_token_ids"] == before
        ok = await c.chat(sid, h)
        assert ok.status_code == 200
        st = await c.state(sid)
        assert [x["kind"] for x in st["records"]] == ["committed", "committed"]


async def test_delete_semantics_and_unknown_sessions() -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        await c.chat(sid, [SYSTEM, user(0)])
        assert (await http.delete(f"{d.urls[0]}/sessions/{sid}")).status_code == 204
        assert (await http.delete(f"{d.urls[0]}/sessions/{sid}")).status_code == 404
        assert (await http.get(f"{d.urls[0]}/sessions/{sid}")).status_code == 404
        assert (await c.chat(sid, [SYSTEM, user(0)])).status_code == 404  # deleted never comes back
        assert (await c.chat("ab" * 16, [SYSTEM, user(0)])).status_code == 404
        assert (await http.get(f"{d.urls[0]}/sessions/{'cd' * 16}")).status_code == 404
        assert (await http.get(f"{d.urls[0]}/stats")).status_code == 404  # no extras


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("no_meta_info", 502),
        ("null_content", 502),
        ("logprob_mismatch", 502),
        ("invalid_json", 502),
        ("reset", 502),
        ("http_503", 503),
    ],
)
async def test_backend_faults_are_502_or_passed_through_and_unrecorded(fault: str, status: int) -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        r = await c.chat(sid, [SYSTEM, user(0)], headers={"x-fake-fault": fault})
        assert r.status_code == status
        assert (await c.state(sid))["records"] == []


async def test_stream_is_one_sse_chunk_then_done() -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        r = await c.chat(sid, [SYSTEM, user(0)], stream=True)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert len(events) == 2 and events[1] == "[DONE]"
        assert json.loads(events[0])["choices"][0]["delta"]["content"]
        assert (await c.state(sid))["records"][0]["request"]["stream"] is False


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'{"model": "m"}',
        b'{"model": "m", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"messages": ' + b"[" * 50000 + b"]" * 50000 + b"}",
        b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    ],
)
async def test_malformed_bodies_are_400_and_the_bad_version_answers_500(raw: bytes) -> None:
    for bugs, expected in (((), 400), (("malformed_500",), 500)):
        async with deployment(bugs=bugs) as d, httpx.AsyncClient() as http:
            c = Client(http, d.urls[0])
            sid = await c.create()
            r = await http.post(f"{d.urls[0]}/sessions/{sid}/v1/chat/completions", content=raw)
            if bugs and (b"NaN" in raw or b"ud800" in raw):
                continue  # Python's json accepts both: the careless version goes on with them
            assert r.status_code == expected, (bugs, raw[:40], r.text[:200])


async def test_bad_versions_auto_create_and_commit_aborted() -> None:
    async with deployment(bugs=["auto_create"]) as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        assert (await http.delete(f"{d.urls[0]}/sessions/{sid}")).status_code == 204
        assert (await c.chat(sid, [SYSTEM, user(0)])).status_code == 200
        assert (await c.state(sid))["records"]
    async with deployment(bugs=["commit_aborted"]) as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        r = await c.chat(sid, [SYSTEM, user(0)], headers={"x-fake-fault": "abort;tokens=3"})
        assert r.status_code == 200 and "x-sglang-aborted" not in r.headers
        assert [x["kind"] for x in (await c.state(sid))["records"]] == ["committed"]


async def test_pass_through_forwards_to_the_backend_but_not_to_its_admin_endpoints() -> None:
    async with deployment() as d, httpx.AsyncClient() as http:
        sid = await Client(http, d.urls[0]).create()
        assert (await http.get(f"{d.urls[0]}/sessions/{sid}/health")).status_code == 200
        assert (await http.put(f"{d.urls[0]}/sessions/{sid}/admin/plan", json={})).status_code == 404
        assert (
            await http.post(f"{d.urls[0]}/sessions/{sid}/abort_request", json={"abort_all": True})
        ).status_code == 404
        assert (await http.get(f"{d.urls[0]}/sessions/{'ef' * 16}/health")).status_code == 404


def test_cli_process_logs_text_lines_with_the_logging_prefix(tmp_path: Path) -> None:
    port = free_port()
    err = tmp_path / "stderr.log"
    with err.open("wb") as fh:
        proc = subprocess.Popen(
            [*CLI, "--port", str(port), "--backend-url", "http://127.0.0.1:9"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
            sid = httpx.post(f"{base}/sessions").json()["session_id"]
            body = {"model": "m", "messages": [user(0)]}
            r = httpx.post(f"{base}/sessions/{sid}/v1/chat/completions", json=body, headers={"x-request-id": "abc"})
            assert r.status_code == 502  # nothing listens on the backend port: a transport error
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    text = err.read_text()
    prefix = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) foreign\.sessions pid=\d+ "
    start = re.search(
        prefix + r"chat_start req_id=[0-9a-f]{8} session_id=" + sid + r" .*caller_request_id=abc", text, re.M
    )
    done = re.search(
        prefix + r"chat_done .*status=502 outcome=transport_error lock_wait_ms=\S+ tokenize_in_ms=", text, re.M
    )
    assert start and done, text
    assert re.search(r"WARNING foreign\.sessions pid=\d+ proxy_transport_error: .*url=http://127\.0\.0\.1:9/", text)
    for bucket in ("proxy_elapsed_ms", "tokenize_out_ms", "total_ms", "prompt_tokens", "completion_tokens"):
        assert f" {bucket}=" in done.group(0) or bucket in text


@pytest.mark.parametrize("family", SHIPPED)
async def test_every_shipped_template_family_extends_the_tokens_at_the_boundary(family: str) -> None:
    """Reasoning, grouped tools, header tokens, trailing whitespace: suffix-only joins them all."""
    tok = load_tokenizer(family)
    async with deployment(tokenizer=family) as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        msgs: list[dict[str, Any]] = [SYSTEM, user(0)]
        for i in range(4):
            fault = {"x-fake-fault": "tool_calls"} if i == 1 else {}
            r = await c.chat(sid, msgs, headers=fault)
            assert r.status_code == 200, (family, i, r.text[:300])
            a = assistant(r)
            msgs = [*msgs, a]
            calls = a.get("tool_calls") or []
            msgs += [
                {"role": "tool", "tool_call_id": tc.get("id", ""), "content": f"result {j}"}
                for j, tc in enumerate(calls)
            ]
            msgs.append(user(i + 1))
        st = await c.state(sid)
    recs = st["records"]
    assert len(recs) == 4 and any(r["response"]["choices"][0]["message"].get("tool_calls") for r in recs)
    for prev, rec in itertools.pairwise(recs):
        before = prev["request"]["input_ids"] + [
            p[1] for p in prev["response"]["choices"][0]["meta_info"]["output_token_logprobs"]
        ]
        prompt = rec["request"]["input_ids"]
        assert prompt[: len(before)] == before  # the model's own tokens, then only the appended turn
        last_user = rec["request"]["messages"][-1]["content"]
        rendered = tok.apply_chat_template(rec["request"]["messages"], tokenize=False, add_generation_prompt=True)
        tail = rendered[rendered.rindex(last_user) :]
        assert tok.decode(prompt, skip_special_tokens=False).endswith(tail)  # the template's own words for it


async def test_a_template_that_refuses_the_messages_is_the_client_error() -> None:
    """A chat template's raise_exception (strict_tools: a tool result with no tool call before it) is a 400.

    The fuzz's template probe sends exactly this; the server answered 500 before its render mapped template
    errors to BadMessages (CONTEXT.md: careless input never produces a 500).
    """
    strict = str(ROOT / "scenarios" / "tokenizers" / "strict_tools")
    orphan = {"role": "tool", "tool_call_id": "call_0", "content": "a result nobody asked for"}
    async with deployment(tokenizer=strict) as d, httpx.AsyncClient() as http:
        c = Client(http, d.urls[0])
        sid = await c.create()
        r = await c.chat(sid, [SYSTEM, user(0), orphan])
        assert r.status_code == 400, r.text[:300]
        assert (await c.chat(sid, [SYSTEM, user(0)])).status_code == 200  # the session still serves
