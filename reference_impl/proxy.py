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

Hostile input (issue 13). Header forwarding must not fail on anything a
client can send: headers travel as bytes, a header whose name is not an
HTTP token or whose value holds CR, LF, NUL or another control byte is
dropped (it could not be sent on, and CR/LF would inject headers), and
obs-text bytes (latin-1, UTF-8) are forwarded unchanged. The pass-through
path is normalized (``normalize_path``) before anything else looks at it, so
``./``, ``%2e``, ``%2f``, ``x/../`` and ``//`` all name the path they mean, and
only an allowlist of backend paths is reachable (``path_allowed``): a holder of
one session must not reach the backend's admin and control endpoints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

# the default allowlist lives in config.py (the launcher and the harness read it without the HTTP libraries)
from .config import DEFAULT_PASSTHROUGH_PATHS

if TYPE_CHECKING:
    import aiohttp  # imported on first use: sim and the in-process paths inject a transport and never need it

__all__ = [
    "DEFAULT_PASSTHROUGH_PATHS",
    "DROP_REQUEST_HEADERS",
    "AiohttpTransport",
    "Backend",
    "PathError",
    "forward_headers",
    "normalize_path",
    "path_allowed",
]

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


_DROP_BYTES = frozenset(h.encode() for h in DROP_REQUEST_HEADERS)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def routing_key(session_id: str) -> bytes:
    """The session id as a header value (ids are hex; an auto-created odd id is percent-quoted)."""
    raw = session_id.encode("utf-8")
    return raw if _BAD_VALUE.search(raw) is None and raw.isascii() else quote(session_id, safe="").encode()


def forward_headers(raw: Iterable[tuple[bytes, bytes]], session_id: str) -> list[tuple[bytes, bytes]]:
    """Client headers for the backend request, in order, as bytes, plus the routing key.

    Never fails: a header that could not be sent on (a name that is not a token,
    a value with a control byte) is dropped; every other value is forwarded as is.
    """
    out: list[tuple[bytes, bytes]] = []
    for k, v in raw:
        name = k.lower()
        if name in _DROP_BYTES or _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(v) is not None:
            continue
        out.append((name, v))
    out.append((b"x-smg-routing-key", routing_key(session_id)))
    return out


_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")


class PathError(ValueError):
    """A pass-through path that cannot be normalized (control bytes, ``..`` above the session, odd bytes)."""


def normalize_path(path: str) -> str:
    """The percent-decoded path after ``/sessions/{id}/`` as one canonical ``/a/b`` (RFC 3986 dot removal).

    Empty and ``.`` segments go, ``..`` removes the one before it (never above the
    session). A segment may hold only unreserved and sub-delim characters, so the
    result means the same to every backend: no ``%`` (double encoding), ``\\``, ``?``,
    ``#``, control bytes or non-ASCII.
    """
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not out:
                raise PathError("path climbs out of the session ('..' above /sessions/{id}/)")
            out.pop()
            continue
        if _SEGMENT.fullmatch(seg) is None:
            bad = next(c for c in seg if _SEGMENT.fullmatch(c) is None)
            raise PathError(
                f"path segment {seg[:60]!r} holds {bad!r}; allowed: letters, digits and -._~!$&'()*+,;=:@ "
                "(control bytes such as %00, %, backslash, ? and # are refused)"
            )
        out.append(seg)
    return "/" + "/".join(out)


def path_allowed(path: str, allowlist: Iterable[str]) -> bool:
    """``path`` equals an entry, or extends an entry ending in ``/*`` by at least one segment."""
    for entry in allowlist:
        if entry.endswith("/*"):
            if path.startswith(entry[:-1]) and len(path) > len(entry) - 1:
                return True
        elif path == entry:
            return True
    return False


_NOT_SENT = frozenset({b"host", b"content-length", b"transfer-encoding"})


def _header_text(value: bytes) -> str:
    """aiohttp writes header strings as UTF-8: UTF-8 bytes survive exactly, other obs-text as latin-1 text."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


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
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding")
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp  # a sys.modules lookup: Backend imported it when it chose this transport

        body = await request.aread()
        headers = [(k.decode("latin-1"), _header_text(v)) for k, v in request.headers.raw if k.lower() not in _NOT_SENT]
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
        if transport is None:  # the live default: aiohttp is imported now, at startup, not in a first turn's latency
            import aiohttp  # noqa: F401
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
        headers: list[tuple[bytes, bytes]] | None = None,
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
