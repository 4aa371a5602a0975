"""Calls to the backend (SGLang) through one injected ``httpx`` transport.

Why a transport seam: the same server code talks to the fake SGLang over
loopback sockets in live mode and through an in-process ASGI transport under
simulation, where a real socket would escape the virtual clock. One
``AsyncClient`` per app keeps backend connections alive between turns (a new
TCP connection per turn would dominate a zero-latency benchmark).

Which client headers go to the backend: all of them (the fake keys its
deterministic answers on ``x-turn`` / ``x-attempt`` / ``x-request-id``), less
the hop-by-hop headers (they describe *this* connection, not the next one),
the length headers (the body is rewritten, so its length changes) and
``host``, plus ``X-SMG-Routing-Key: <session_id>`` so a router in front of
several engines keeps a session on one engine (its KV cache).

Why an aiohttp-backed transport by default: profiling the zero-latency
benchmark showed httpx's own pool (httpcore) spending most of the server's CPU
per turn, a large part of it checking every pooled connection for expiry on
every request. ``AiohttpTransport`` is an ``httpx`` transport on aiohttp's C
HTTP parser: the server still speaks only ``httpx`` (the seam is unchanged,
tests and simulation inject ASGI transports), but the live path costs a
fraction of the CPU.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx

__all__ = ["DROP_REQUEST_HEADERS", "AiohttpTransport", "Backend", "forward_headers"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
DROP_REQUEST_HEADERS = HOP_BY_HOP | {"content-length", "host", "x-smg-routing-key"}


def forward_headers(raw: list[tuple[bytes, bytes]], session_id: str) -> list[tuple[str, str]]:
    """Client headers for the backend request, in order, plus the routing key."""
    out: list[tuple[str, str]] = []
    for k, v in raw:
        name = k.decode("latin-1").lower()
        if name not in DROP_REQUEST_HEADERS:
            out.append((name, v.decode("latin-1")))
    out.append(("x-smg-routing-key", session_id))
    return out


_NOT_SENT = frozenset({"host", "content-length", "transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport over one ``aiohttp.ClientSession`` (keep-alive pool, C parser).

    Bodies are passed through undecoded (``auto_decompress=False``) so ``httpx``
    applies ``content-encoding`` exactly once; aiohttp errors become the
    matching ``httpx`` transport errors, so callers handle one error family.
    """

    def __init__(self, *, keepalive_timeout: float = 60.0) -> None:
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding")
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _NOT_SENT]
        t = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.get("connect"), sock_read=t.get("read"))
        try:
            async with self._client().request(
                request.method,
                str(request.url),
                data=body or None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                content = await resp.read()
                return httpx.Response(resp.status, headers=list(resp.raw_headers), content=content, request=request)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"backend timed out: {exc!r}", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc) or repr(exc), request=request) from exc
        except aiohttp.ClientOSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(str(exc) or repr(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Backend:
    """The backend URL and one transport; requests go straight to the transport.

    No ``httpx.AsyncClient`` in between: the client's cookie jar, redirect and
    auth machinery cost CPU on every turn and a proxy needs none of it.
    """

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None, timeout: float) -> None:
        self.base_url = base_url
        self._transport = transport
        self._timeout = timeout

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        if self._transport is None:
            self._transport = AiohttpTransport()
        return self._transport

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        params: Any = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        t = self._timeout if timeout_s is None else timeout_s
        url = httpx.URL(self.url(path))
        if params:
            url = url.copy_merge_params(params)
        request = httpx.Request(
            method,
            url,
            content=content,
            headers=headers,
            extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}},
        )
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
