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
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["DROP_REQUEST_HEADERS", "Backend", "forward_headers"]

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


class Backend:
    """A lazily created ``httpx.AsyncClient`` bound to the backend URL."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None, timeout: float) -> None:
        self.base_url = base_url
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = self._transport
            if transport is None:
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024, keepalive_expiry=60.0)
                transport = httpx.AsyncHTTPTransport(limits=limits)
            self._client = httpx.AsyncClient(
                base_url=self.base_url, transport=transport, timeout=httpx.Timeout(self._timeout)
            )
        return self._client

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
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        return await self.client.request(method, path, content=content, headers=headers, params=params, **kwargs)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
