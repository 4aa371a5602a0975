"""Sending answers over raw ASGI, including the broken ones a real network produces.

Why raw ASGI and not a framework's Response objects: the faults that matter
most to a session server are transport faults (a reset before any byte, a
connection closed after a ``200`` status line, an SSE stream cut mid-way, a
body dripped slower than the client's read timeout). A framework sends whole,
well-formed responses; these need the connection itself.

How the drop works under uvicorn (h11 and httptools protocols alike): the
``send`` callable uvicorn passes is a bound method of its request cycle, which
holds the asyncio transport. To *reset*, we set ``SO_LINGER`` to zero and
``abort()`` the transport: the kernel sends an RST and the client reads
``ECONNRESET``. To *close mid-body*, we write the status line, headers (with
the full ``content-length``) and part of the body, then ``close()`` the
transport (a FIN): the client sees a truncated body. What httpx reports in
each case was checked over real sockets (tests/integration/
test_fake_sglang_loopback.py):

========================  =======================================================
fault                     httpx client over loopback
========================  =======================================================
reset                     ``httpx.ReadError`` ("[Errno 104] Connection reset by
                          peer"); a client that is still writing may see
                          ``httpx.WriteError`` instead: both ``TransportError``
close mid-body / SSE cut  ``httpx.RemoteProtocolError`` ("peer closed connection
                          without sending complete message body") after a 200
hang                      ``httpx.ReadTimeout`` at the client's timeout
========================  =======================================================

In-process (httpx ``ASGITransport``, the simulation) there is no transport, so
the app raises the same httpx exception class the live client would see;
ASGITransport passes app exceptions through to the caller unchanged, so client
code handles both worlds with one ``except httpx.TransportError``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "Send",
    "close_mid_body",
    "close_now",
    "drop_connection",
    "send_bytes",
    "send_json",
]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

JSON_CT = (b"content-type", b"application/json")


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: Any) -> bytes:
    """Compact JSON; one shared encoder (``json.dumps`` with options builds a new one per call)."""
    return _ENCODE(obj).encode()


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: tuple[bytes, bytes] = JSON_CT,
) -> None:
    hdrs = [content_type, (b"content-length", str(len(body)).encode())]
    if headers:
        hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_bytes(send, status, dumps(obj), headers)


def _transport(send: Send) -> asyncio.Transport | None:
    owner = getattr(send, "__self__", None)
    t = getattr(owner, "transport", None)
    return t if isinstance(t, asyncio.Transport) else None


async def _await_disconnect(send: Send) -> None:
    """Let the server see connection_lost, so it does not log a half-sent response as an app error."""
    owner = getattr(send, "__self__", None)
    for _ in range(50):
        if getattr(owner, "disconnected", True):
            return
        await asyncio.sleep(0)


async def drop_connection(send: Send) -> None:
    """Reset the connection before any byte of the response (RST, not FIN)."""
    t = _transport(send)
    if t is None:
        import httpx  # in-process only (the caller's library); a live fake never loads it

        raise httpx.ReadError("[Errno 104] Connection reset by peer (fake_sglang: reset)")
    sock = t.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    t.abort()
    await _await_disconnect(send)


async def close_mid_body(
    send: Send,
    status: int,
    head: bytes,
    total_len: int | None,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Send the status line, headers and ``head``, then close the connection (FIN).

    ``total_len`` is announced as ``content-length`` (the client then knows the
    body is short); ``None`` means a streamed (chunked) body.
    """
    hdrs = list(headers)
    if total_len is not None:
        hdrs.append((b"content-length", str(total_len).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    if head:
        await send({"type": "http.response.body", "body": head, "more_body": True})
    await close_now(send)


async def close_now(send: Send) -> None:
    """Close a connection whose response has started but not finished: the client sees a short body."""
    t = _transport(send)
    if t is None:
        import httpx  # in-process only, as above

        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body (fake_sglang: close mid-body)"
        )
    # Yield once so the transport flushes what was written before the FIN.
    await asyncio.sleep(0)
    t.close()
    await _await_disconnect(send)
