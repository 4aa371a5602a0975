"""The live backend path (aiohttp-backed httpx transport) against the fake SGLang on a real socket.

In-process tests inject ASGI transports, so they never exercise what a
deployed server does when the backend resets a connection, closes it mid-body,
hangs past the timeout or drips slowly. Here the fake runs as a process and
the server uses its default transport.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from harness.seams import InlineExecutor
from reference_impl import ServerConfig, create_app
from reference_impl.logs import ListSink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "harness.cli", "fake-sglang", "--port", str(port), "--seed", "2"]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL) as proc:
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
async def client(fake_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, ListSink]]:
    logs = ListSink()
    cfg = ServerConfig(backend_url=fake_url, backend_timeout=1.0)
    app = create_app(cfg, executor=InlineExecutor(), log_sink=logs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s", timeout=30) as c:
        yield c, logs
    await app.state.server.aclose()


async def _chat(c: httpx.AsyncClient, fault: str | None, turn: int = 0) -> httpx.Response:
    sid = (await c.post("/sessions")).json()["session_id"]
    headers = {"x-turn": str(turn), "x-attempt": "0"}
    if fault:
        headers["x-fake-fault"] = fault
    body = {"messages": [{"role": "user", "content": "hello"}]}
    return await c.post(f"/sessions/{sid}/v1/chat/completions", json=body, headers=headers)


async def test_happy_path_and_keepalive_reuse(client: tuple[httpx.AsyncClient, ListSink]) -> None:
    c, logs = client
    for turn in range(3):
        r = await _chat(c, None, turn)
        assert r.status_code == 200 and r.json()["choices"][0]["meta_info"]["output_token_logprobs"]
    assert [e["outcome"] for e in logs.events("chat_done")] == ["committed"] * 3


@pytest.mark.parametrize("fault", ["reset", "close_mid_body", "hang;seconds=5"])
async def test_socket_faults_are_502_transport_errors(client: tuple[httpx.AsyncClient, ListSink], fault: str) -> None:
    c, logs = client
    t0 = time.monotonic()
    r = await _chat(c, fault)
    assert r.status_code == 502 and r.json()["error"]["type"] == "BackendUnavailable", r.text
    assert time.monotonic() - t0 < 4.5  # the hang is cut by backend_timeout=1
    (warn,) = logs.events("proxy_transport_error")
    assert warn["url"].endswith("/v1/chat/completions") and warn["elapsed_ms"] >= 0
    assert logs.events("chat_done")[0]["outcome"] == "transport_error"
    ok = await _chat(c, None)  # the pool recovers
    assert ok.status_code == 200


async def test_slow_drip_completes(client: tuple[httpx.AsyncClient, ListSink]) -> None:
    c, _ = client
    r = await _chat(c, "slow_drip;seconds=0.5;chunks=5")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


async def test_http_error_passes_through(client: tuple[httpx.AsyncClient, ListSink]) -> None:
    c, logs = client
    r = await _chat(c, "http_429")
    assert r.status_code == 429 and logs.events("chat_done")[0]["outcome"] == "upstream_error"


async def test_non_ascii_header_values_are_forwarded_over_the_socket(
    client: tuple[httpx.AsyncClient, ListSink], fake_url: str
) -> None:
    """Issue 13: a non-ASCII header value made forwarding fail (500); UTF-8 bytes now arrive unchanged."""
    c, _ = client
    sid = (await c.post("/sessions")).json()["session_id"]
    body = {"messages": [{"role": "user", "content": "hello"}]}
    utf8 = "café ✓".encode()
    for value in (utf8, b"caf\xe9"):
        headers = {"x-request-id": value, "x-turn": b"0", "x-odd": b"\x80\xff"}
        r = await c.post(f"/sessions/{sid}/v1/chat/completions", json=body, headers=headers)
        assert r.status_code in (200, 400), r.text  # 400: the second turn repeats the first (rollback rules)
        assert r.status_code != 500
    async with httpx.AsyncClient(timeout=10) as direct:
        stats = (await direct.get(fake_url + "/stats")).json()
    seen = [e["request_id"] for e in stats["executions"][sid]]
    assert seen[0].encode("latin-1") == utf8
