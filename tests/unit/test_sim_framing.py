"""The simulated wire enforces HTTP/1.1 framing as h11 and strict parsers do on a socket.

A request whose Content-Length disagrees with its body never reaches the app (the sending
client refuses it live); a reply whose length disagrees with its body is a protocol error for
the client. Without this, a proxy that forwards the client's length header onto a rewritten
body passes in sim and fails only live.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from harness.sim.world import SimNetwork, request_framing_error, response_framing_error


def req(headers: dict[str, str], body: bytes = b'{"a": 1}') -> httpx.Request:
    return httpx.Request("POST", "http://s:1/x", headers=headers, content=body)


def test_request_lengths() -> None:
    assert request_framing_error(req({})) is None  # httpx computes the length itself
    r = httpx.Request("POST", "http://s:1/x", headers=[("content-length", "3")], content=b'{"a": 1}')
    assert "Too much data" in str(request_framing_error(r))
    r = httpx.Request("POST", "http://s:1/x", headers=[("content-length", "99")], content=b"{}")
    assert "Too little data" in str(request_framing_error(r))
    r = httpx.Request("POST", "http://s:1/x", headers=[("content-length", "2"), ("content-length", "3")], content=b"{}")
    assert "conflicting" in str(request_framing_error(r))


def test_response_lengths() -> None:
    get = httpx.Request("GET", "http://s:1/x")
    ok = httpx.Response(200, headers=[("content-length", "2")], content=b"{}")
    assert response_framing_error(get, ok) is None
    bad = httpx.Response(200, headers=[("content-length", "7")], content=b"{}")
    assert "payload length mismatch" in str(response_framing_error(get, bad))
    two = httpx.Response(200, headers=[("content-length", "2"), ("content-length", "5")], content=b"{}")
    assert "conflicting" in str(response_framing_error(get, two))


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    wrong = scope["path"] == "/wrong"
    headers = [(b"content-length", b"50" if wrong else b"2"), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def test_the_network_fails_misframed_messages_like_a_socket() -> None:
    async def main() -> None:
        net = SimNetwork()
        net.add("s:1", _app)
        async with httpx.AsyncClient(transport=net) as c:
            assert (await c.get("http://s:1/fine")).status_code == 200
            with pytest.raises(httpx.RemoteProtocolError, match="payload length mismatch"):
                await c.get("http://s:1/wrong")
            with pytest.raises(httpx.LocalProtocolError, match="Too much data"):
                await c.post("http://s:1/fine", content=b"{}{}", headers={"content-length": "2"})
        assert net.requests == 2  # the misframed request never reached the app

    asyncio.run(main())
