"""The agents' own HTTP/1.1 client (harness/agents/_h1.py) against a stock httpx client, over loopback.

H1Client replaced httpx for speed only (#15). Each raw server answer below is
met by a plain ``httpx.AsyncClient`` (through ``HttpxClient``, as the agents
used it) and by ``H1Client``; both must see the same thing, down to the header
pairs, the body, the failure's outcome, kind and message (the http_framing
checker reads the message), and the server must get the same request bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx
import pytest

from harness.agents import ClientFailure, make_client
from harness.agents._clients import REQUEST_PROGRESS, H1Client, HttpxClient, user_agent

pytestmark = pytest.mark.integration

BODY = json.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}).encode()
N = len(BODY)


def head(*lines: str, status: str = "200 OK", version: str = "1.1") -> bytes:
    return (f"HTTP/{version} {status}\r\n" + "".join(f"{ln}\r\n" for ln in lines) + "\r\n").encode()


GZ = gzip.compress(BODY)
SSE = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n'

# name -> (answer bytes, close after answering)
ANSWERS: dict[str, tuple[bytes, bool]] = {
    "ok": (head(f"content-length: {N}", "content-type: application/json") + BODY, False),
    "chunked_sse": (
        head("transfer-encoding: chunked", "content-type: text/event-stream")
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in SSE.split(b"\n\n")[:-1])
        + b"0\r\n\r\n",
        False,
    ),
    "chunked_trailer_ext": (head("transfer-encoding: Chunked") + b"5;x=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n", False),
    "chunk_bad_footer": (head("transfer-encoding: chunked") + b"5\r\nhelloXX0\r\n\r\n", True),
    "chunk_bad_header": (head("transfer-encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n", True),
    "chunk_cut": (head("transfer-encoding: chunked") + b"a\r\nhello", True),
    "duplicate_same_length": (
        head(f"content-length: {N}", f"content-length: {N}", "server: a", "server: b") + BODY,
        False,
    ),
    "duplicate_conflicting_length": (head("content-length: 3", f"content-length: {N}") + BODY, True),
    "list_length": (head(f"content-length: {N}, {N}") + BODY, False),
    "bad_length": (head("content-length: x1") + BODY, True),
    "length_and_chunked": (head("content-length: 99", "transfer-encoding: chunked") + b"2\r\nok\r\n0\r\n\r\n", False),
    "gzip_transfer_coding": (head("transfer-encoding: gzip") + BODY, True),
    "two_transfer_codings": (head("transfer-encoding: chunked", "transfer-encoding: chunked") + b"0\r\n\r\n", True),
    "short_body": (head(f"content-length: {N + 10}") + BODY, True),
    "long_body": (head("content-length: 5") + BODY, False),  # the rest is read as the next answer
    "eof_body": (head() + BODY, True),
    "http10": (head(f"content-length: {N}", version="1.0") + BODY, False),
    "connection_close": (head(f"content-length: {N}", "Connection: keep-alive, Close") + BODY, False),
    "informational_first": (head(status="100 Continue") + head(f"content-length: {N}") + BODY, False),
    "no_content_with_body": (head("content-length: 4", status="204 No Content") + b"abcd", False),
    "obs_fold": (head(f"content-length: {N}", "x-a: one", "  two") + BODY, False),
    "fold_first": (head("  x", f"content-length: {N}") + BODY, True),
    "bad_header_line": (head("bad header", f"content-length: {N}") + BODY, True),
    "no_reason": (b"HTTP/1.1 201\r\ncontent-length: 0\r\n\r\n", False),
    "lf_only": (b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok", False),
    "garbage_status_line": (b"HTTX/1.1 200 OK\r\n\r\n", True),
    "space_first": (b" HTTP/1.1 200 OK\r\n", True),
    "empty_line_first": (b"\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True),
    "no_answer": (b"", True),
    "head_cut": (b"HTTP/1.1 200 OK\r\ncontent-le", True),
    "big_head_cut": (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 20000, True),
    "huge_head": (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 120_000, True),
    "gzip_body": (head(f"content-length: {len(GZ)}", "content-encoding: gzip") + GZ, False),
    "bad_gzip": (head("content-length: 4", "content-encoding: gzip") + b"abcd", False),
    "latin1_header": (head(f"content-length: {N}").replace(b"\r\n\r\n", b"\r\nx-n: caf\xe9\r\n\r\n") + BODY, False),
    "cookie": (head("content-length: 2", "set-cookie: sid=abc; Path=/; HttpOnly") + b"{}", False),
}


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1: answers every request with ``ANSWERS[answer]`` and keeps the requests."""

    def __init__(self, answer: str, first_delay: float = 0.0) -> None:
        self.answer = answer
        self.first_delay = first_delay  # the first request waits this long for its answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening and close every connection it still holds, so no socket outlives the test's loop."""
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return
                length = 0
                for line in raw.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(raw + body)
                if self.first_delay and len(self.requests) == 1:
                    await asyncio.sleep(self.first_delay)
                data, close = ANSWERS[self.answer]
                writer.write(data)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


async def outcome(client: Any, url: str, method: str = "POST") -> tuple[Any, ...]:
    progress: dict[str, bool] = {}
    token = REQUEST_PROGRESS.set(progress)
    try:
        if method == "POST":
            r = await client.chat(
                url, "s1", {"messages": [{"role": "user", "content": "héllo"}], "t": 0.5}, {"x-request-id": "r1"}
            )
        else:
            r = await client.send(method, f"{url}/sessions/s1", headers={"x-request-id": "r2"})
    except ClientFailure as exc:
        return ("failure", exc.outcome, exc.kind, str(exc), type(exc.__cause__).__name__, progress)
    finally:
        REQUEST_PROGRESS.reset(token)
    return ("reply", r.status, r.header_pairs, r.text, r.body_bytes, r.body, progress)


def _stock_httpx() -> httpx.AsyncClient:
    """A stock httpx client told the User-Agent H1Client sends (its own default is ``python-httpx/...``)."""
    # verify=False: http:// only, and no CA bundle to load (~0.5 s a client on this box)
    return httpx.AsyncClient(timeout=30.0, verify=False, headers={"User-Agent": user_agent(H1Client.kind)})


def normalized(requests: list[bytes], url: str) -> list[bytes]:
    return [r.replace(url.removeprefix("http://").encode(), b"HOST") for r in requests]


@pytest.mark.parametrize("answer", sorted(ANSWERS))
async def test_same_outcome_and_bytes_as_httpx(answer: str) -> None:
    seen = []
    # verify=False: http:// only, and no CA bundle to load (~0.5 s a client on this box)
    for client in (HttpxClient(client=_stock_httpx()), H1Client()):
        async with Server(answer) as server:
            url = server.url
            got = [await outcome(client, url, m) for m in ("POST", "DELETE", "POST", "GET")]
            await client.aclose()
        seen.append((got, normalized(server.requests, url)))
    (lib, lib_requests), (h1, h1_requests) = seen
    assert h1 == lib
    assert h1_requests == lib_requests
    # an honest User-Agent, where httpx puts python-httpx/... (#15)
    assert all(f"\r\nUser-Agent: {user_agent('httpx->h1')}\r\n".encode() in r for r in h1_requests)


async def test_default_client_is_h1_over_sockets_and_httpx_on_a_transport() -> None:
    live = make_client("httpx")
    assert isinstance(live, H1Client) and live.kind == "httpx->h1"
    lib = make_client("httpx-lib")
    assert isinstance(lib, HttpxClient) and lib.kind == "httpx-lib"
    sim = make_client("httpx", httpx.MockTransport(lambda r: httpx.Response(200)))
    assert isinstance(sim, HttpxClient) and sim.kind == "httpx"
    for c in (live, lib, sim):
        await c.aclose()


async def test_keep_alive_reuse_and_refused() -> None:
    client = H1Client()
    async with Server("ok") as server:
        url = server.url
        for _ in range(5):
            assert (await outcome(client, url))[1] == 200
        assert server.connections == 1  # sequential requests share one keep-alive connection
        await asyncio.gather(*(outcome(client, url) for _ in range(4)))
        assert server.connections == 4 and client.pool.open_connections == 4
    await client.aclose()
    assert client.pool.open_connections == 0
    fresh = H1Client()
    refused = await outcome(fresh, url)  # nobody listens there now: refused, and surely never sent
    assert refused[:3] == ("failure", "fail", "refused") and refused[-1] == {"sent": False}
    await fresh.aclose()


async def test_cancelled_request_closes_its_connection_and_the_next_one_works() -> None:
    client = H1Client()
    async with Server("ok", first_delay=0.5) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.send("GET", f"{server.url}/x")
        assert client.pool.open_connections == 0  # half-used: not kept
        r = await client.send("GET", f"{server.url}/x")
        assert r.status == 200 and r.body == json.loads(BODY)
        assert server.connections == 2
        await client.aclose()


async def test_connection_limit_queues_requests() -> None:
    client = H1Client()
    client.pool._max = client.pool._max_idle = 2
    async with Server("ok") as server:
        results = await asyncio.gather(*(outcome(client, server.url) for _ in range(10)))
        assert [r[1] for r in results] == [200] * 10
        assert client.pool.open_connections <= 2
    await client.aclose()


async def test_same_host_header_and_target_as_httpx_for_other_url_shapes() -> None:
    """``localhost`` and a path httpx percent-encodes: the Host header is the URL's netloc, the target httpx's."""
    seen = []
    for client in (HttpxClient(client=_stock_httpx()), H1Client()):
        async with Server("ok") as server:
            port = server.url.rsplit(":", 1)[1]
            r = await client.send(
                "GET", f"http://localhost:{port}/sessions/a b/é?x=1&y=ü", headers={"x-request-id": "r"}
            )
            await client.aclose()
        seen.append((r.status, [q.replace(port.encode(), b"PORT") for q in server.requests]))
    assert seen[1] == seen[0]
    assert b"Host: localhost:PORT\r\n" in seen[1][1][0]


_HEADS = [
    *(a for a, _ in ANSWERS.values()),
    head("content-length: 2", "x-a:\tv\t ", "x-b:", "x-c:  a  b  ", "x-d: a\x1fb") + b"ok",
    head("Content-Length: 2", "Connection: Upgrade, close\x1f") + b"ok",
    head("content-length: 2", "connection: keep-alive,\tCLOSE ") + b"ok",
    head("content-length: 002") + b"ok",
    head("content-length: 1" + "0" * 21),
    head("content-length: 2", "x: a\x0bb") + b"ok",
    head("content-length: 2", "x: a\x00b") + b"ok",
    head("content-length: 2", "x: a\rb") + b"ok",
    head("content-length: 2", "x : a") + b"ok",
    head("content-length: 2", ": a") + b"ok",
    head("content-length: 2", "x\ta: b") + b"ok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx: a\r\r\n\r\nok",
    b"HTTP/1.1 200 OK\ncontent-length: 2\r\nx: 1\n\r\nok",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    b"HTTP/1.0 200\r\nx: \xc3\xa9\r\n\r\n",
    b"HTTP/1.1 200 \x80\r\n\r\n",
    b"HTTP/1.1 200 OK \t\r\n\r\n",
]


@pytest.mark.parametrize("raw", _HEADS, ids=range(len(_HEADS)))
def test_the_fast_head_says_what_h11s_line_by_line_reading_says(raw: bytes) -> None:
    """``_fast_head`` only ever answers what ``_slow_head`` (h11's rules) answers, and declines what it must."""
    from harness.agents._h1 import _fast_head, _slow_head

    i, j = raw.find(b"\n\r\n"), raw.find(b"\n\n")
    if i == -1 and j == -1:
        return  # no complete head: never parsed
    block = raw[: j + 2] if j != -1 and (i == -1 or j < i) else raw[: i + 3]
    fast = _fast_head(block)
    try:
        slow: Any = _slow_head(block)
    except httpx.HTTPError as exc:
        slow = exc
    if fast is None:
        return
    assert not isinstance(slow, Exception) and slow is not None
    assert fast[:6] == slow[:6]
    assert slow[6] == [(k.encode(), v.encode()) for k, v in fast[2]]  # the raw fields it leaves to be rebuilt


def test_the_fast_head_is_taken_for_a_plain_answer() -> None:
    from harness.agents._h1 import _fast_head

    got = _fast_head(head(f"content-length: {N}", "Content-Type: application/json", "Connection: close"))
    assert got == (
        200,
        False,
        [("content-length", str(N)), ("content-type", "application/json"), ("connection", "close")],
        N,
        False,
        True,
        None,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/sessions/0123abcd/v1/chat/completions",
        "http://127.0.0.1:80/sessions/x",
        "http://LocalHost:8000/sessions/a_b-c~d",
        "http://[::1]:8000/sessions/a",
        "http://u:p@h:1/sessions/a",
        "http://h:1?x/sessions/a",
        "http://h:1#f/a",
        "http://h:1/a/./b",
        "http://h:1/a/",
        "http://h:1/a%20b",
        "http://h:1/a?x=1",
        "http://h:1",
        "https://h:1/a",
        "HTTP://h:1/a",
        "http://h%41:1/a",
    ],
)
def test_url_split_is_httpxs(url: str) -> None:
    """H1Client's shortcut for a new session's URL gives what parsing it with httpx gives."""

    def httpx_split(u: httpx.URL) -> tuple[str, int, str, str] | None:
        if u.scheme != "http" or not u.host:
            return None
        return u.host, u.port or 80, u.raw_path.decode("ascii"), u.netloc.decode("ascii")

    slash = url.find("/", 8)
    other = (url[:slash] if slash != -1 else url) + "/sessions/zz"  # the same origin, another session's path
    client = H1Client()
    for u in (url, url, other, other):  # the second time from the cache
        assert client._split(u) == httpx_split(httpx.URL(u)), u
