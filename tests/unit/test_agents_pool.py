"""The agents' connection pool (harness/agents/_pool.py) over real loopback sockets.

The pool replaced httpcore's for speed only: every behaviour a real httpx client
shows must stay. Each server behaviour below is met by a client on httpcore's own
pool and by the agents' client, and both must see the same thing (status, body,
or the same kind of failure); then the pool's own bookkeeping: keep-alive reuse,
a connection the server closed while idle, the connection limit, and a request
cancelled mid-flight.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from harness.agents import ClientFailure, Reply
from harness.agents._clients import HttpxClient, OpenAIClient
from harness.agents._pool import FastPool

pytestmark = pytest.mark.integration

BODY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "fake",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
).encode()


def head(status: int = 200, *extra: str, length: int | None = len(BODY)) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "content-type: application/json", *extra]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# name -> what the server writes back for one request, and whether it then closes the connection
ANSWERS: dict[str, tuple[bytes, bool]] = {
    "ok": (head() + BODY, False),
    "ok_then_close": (head() + BODY, True),
    "connection_close_header": (head(200, "connection: close") + BODY, True),
    "chunked": (head(200, "transfer-encoding: chunked", length=None) + b"5\r\nhello\r\n0\r\n\r\n", False),
    "short_body": (head(200, length=len(BODY) + 10) + BODY, True),
    "duplicate_conflicting_length": (head(200, "content-length: 3") + BODY, True),
    "garbage_status_line": (b"HTTX/1.1 200 OK\r\n\r\n", True),
    "no_answer": (b"", True),
    "eof_body": (head(200, length=None) + BODY, True),  # no length, no chunking: the body ends at close
}


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1 that answers every request with ``answer`` and counts connections."""

    def __init__(self, answer: str = "ok", delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests = 0
        self.seen = asyncio.Event()  # set once a whole request has arrived
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in raw.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                self.seen.set()
                if self.delay:
                    await asyncio.sleep(self.delay)
                data, close = ANSWERS[self.answer]
                writer.write(data)
                await writer.drain()
                if close:
                    return
        finally:
            self.open -= 1
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


async def serving(answer: str = "ok", delay: float = 0.0) -> Server:
    s = Server(answer, delay)
    s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    return s


def stock_client() -> HttpxClient:
    """The same client on httpcore's own pool: what a plain ``httpx.AsyncClient`` does."""
    return HttpxClient(client=httpx.AsyncClient(timeout=30.0))


async def outcome(client: HttpxClient, url: str) -> tuple[Any, ...]:
    try:
        r: Reply = await client.send("POST", f"{url}/x", json_body={"a": 1})
    except ClientFailure as exc:
        return ("failure", exc.outcome, exc.kind, type(exc.__cause__).__name__)
    return ("reply", r.status, r.text, r.header("content-length"))


@pytest.fixture
async def clients() -> AsyncIterator[tuple[HttpxClient, HttpxClient]]:
    stock, fast = stock_client(), HttpxClient()
    assert isinstance(fast.http._transport._pool, FastPool)  # type: ignore[attr-defined]
    yield stock, fast
    await stock.aclose()
    await fast.aclose()


@pytest.mark.parametrize("answer", sorted(ANSWERS))
async def test_same_outcome_as_httpcores_pool(answer: str, clients: tuple[HttpxClient, HttpxClient]) -> None:
    server = await serving(answer)
    async with server.server:  # type: ignore[union-attr]
        stock, fast = clients
        seen = [[await outcome(c, server.url) for _ in range(2)] for c in (stock, fast)]
    assert seen[0] == seen[1]
    if answer in ("short_body", "duplicate_conflicting_length", "garbage_status_line", "no_answer"):
        assert seen[1][0][:3] == ("failure", "info", "disconnected"), seen  # a framing error is never a reply
    else:
        assert seen[1][0][:2] == ("reply", 200), seen


async def test_refused_is_a_fail_on_both() -> None:
    server = await serving()
    url = server.url
    server.server.close()  # type: ignore[union-attr]
    await server.server.wait_closed()  # type: ignore[union-attr]
    stock, fast = stock_client(), HttpxClient()
    try:
        assert (await outcome(fast, url))[:3] == (await outcome(stock, url))[:3] == ("failure", "fail", "refused")
    finally:
        await stock.aclose()
        await fast.aclose()


async def test_keep_alive_reuses_one_connection_per_concurrent_request() -> None:
    server = await serving(delay=0.01)
    client = HttpxClient()
    async with server.server:  # type: ignore[union-attr]
        for _ in range(5):
            assert (await outcome(client, server.url))[1] == 200
        assert server.connections == 1
        await asyncio.gather(*(outcome(client, server.url) for _ in range(4)))
        assert server.connections == 4 and server.max_open == 4
        for _ in range(5):
            await outcome(client, server.url)
        assert server.connections == 4  # the idle ones are reused, none opened
        await client.aclose()
    assert server.requests == 14


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    server = await serving("ok_then_close")
    client = HttpxClient()
    async with server.server:  # type: ignore[union-attr]
        for _ in range(3):
            assert (await outcome(client, server.url))[1] == 200
            await asyncio.sleep(0.05)  # the FIN arrives while the connection sits idle
        await client.aclose()
    assert server.connections == 3


async def test_connection_limit_queues_requests() -> None:
    server = await serving(delay=0.05)
    client = HttpxClient(client=httpx.AsyncClient(timeout=30.0))
    pool = FastPool(httpx_core(), max_connections=2, max_keepalive_connections=1, keepalive_expiry=5.0, fallback=None)
    client.http._transport._pool = pool  # type: ignore[attr-defined]
    async with server.server:  # type: ignore[union-attr]
        got = await asyncio.gather(*(outcome(client, server.url) for _ in range(6)))
        assert [g[1] for g in got] == [200] * 6
        assert server.max_open == 2
        assert len(pool.connections) == 1  # one kept idle (max_keepalive_connections), the other closed
        await client.http.aclose()


async def test_a_cancelled_request_drops_its_connection_and_frees_the_slot() -> None:
    server = await serving(delay=1.0)
    client = HttpxClient()
    pool = client.http._transport._pool  # type: ignore[attr-defined]
    async with server.server:  # type: ignore[union-attr]
        task = asyncio.create_task(outcome(client, server.url))
        await asyncio.wait_for(server.seen.wait(), 30)  # the request is at the server, its answer 1 s away
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.connections == []  # mid-response: the connection cannot be reused
        server.delay = 0.0
        assert (await outcome(client, server.url))[1] == 200
        assert server.connections == 2
        await client.aclose()


async def test_openai_sdk_over_the_pool() -> None:
    server = await serving()
    client = OpenAIClient()
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    async with server.server:  # type: ignore[union-attr]
        for _ in range(3):
            r = await client.chat(server.url, "s", body, {})
            assert r.status == 200 and r.extra["sdk_finish_reason"] == "stop" and r.error is None
        assert server.connections == 1
        await client.aclose()


def httpx_core() -> Any:
    import httpcore

    return httpcore


async def _two_chats(lean: bool) -> list[tuple[Any, ...]]:
    """Two chats through HttpxClient (its lean send, or AsyncClient.send); the requests the transport got."""
    requests: list[tuple[Any, ...]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, str(request.url), request.headers.multi_items(), request.content))
        cookie = [("set-cookie", "route=p1; Path=/")] if len(requests) == 1 else []
        return httpx.Response(200, headers=cookie, content=BODY)

    transport = httpx.MockTransport(answer)
    client = HttpxClient(transport) if lean else HttpxClient(client=httpx.AsyncClient(transport=transport))
    assert client._lean is lean
    for _ in range(2):
        r = await client.chat("http://127.0.0.1:9", "s1", {"model": "m", "messages": []}, {"x-turn": "0"})
        assert r.status == 200 and r.body["choices"][0]["message"]["content"] == "ok"
    await client.aclose()
    return requests


async def test_lean_send_puts_the_same_request_on_the_wire_and_keeps_cookies() -> None:
    """HttpxClient skips AsyncClient.send's layers (#15): the request bytes and the cookie jar must not change."""
    full, lean = await _two_chats(False), await _two_chats(True)
    assert lean == full
    assert ("cookie", "route=p1") in lean[1][2]  # the cookie the first answer set went back with the second
