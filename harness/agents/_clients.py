"""Three real HTTP clients behind one small interface.

Real RL agents talk to a session server through whatever client their
framework ships: raw ``httpx``, the official ``openai`` SDK (which hides
response headers unless asked, and which a litellm layer wraps), or
``aiohttp`` (whose C parser, llhttp, rejects framing that ``h11`` tolerates:
duplicate ``Content-Length``, a length that does not match the body). A
server bug that only one of them notices is still a production bug, so the
agents drive the server through all three.

Every client returns a :class:`Reply` (status, raw header pairs, parsed
body) or raises :class:`ClientFailure` whose ``outcome`` is ``"fail"`` when
the request surely never reached the server (connection refused) and
``"info"`` when the outcome is unknown (dropped connection, unparseable
response, timeout): the history's Jepsen vocabulary.

Timeouts are not the libraries' business: the agent wraps each call in
``asyncio.timeout`` so the same code runs under a virtual-time loop. An
injected ``httpx`` transport (ASGI in simulation) replaces the sockets; aiohttp
cannot take one, so with a transport it is served by httpx and says so in
its ``kind``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from harness.agents._h1 import H1Pool, Response, json_bytes
from harness.agents._pool import fast_transport

__all__ = [
    "AiohttpClient",
    "ClientFailure",
    "H1Client",
    "HttpClient",
    "HttpxClient",
    "OpenAIClient",
    "Reply",
    "RouteByHost",
    "Upload",
    "make_client",
    "user_agent",
]


@functools.cache
def user_agent(kind: str) -> str:
    """The honest ``User-Agent`` of an agent's client over sockets: ``session-race-harness/<version> (<kind>)``.

    Not the library's own (``python-httpx/0.28.1``, ``Python/3.11 aiohttp/3.x``, ``AsyncOpenAI/Python 1.x``): a
    server's operator reading their access log should see that the load is the harness's (#15). In simulation
    (an injected transport) the libraries keep their own, so simulated runs stay what they were.
    """
    from importlib import metadata

    try:
        version = metadata.version("session-race-harness")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        version = "0+unknown"
    return f"session-race-harness/{version} ({kind})"


_LIB_TIMEOUT_S = 3600.0  # the agent's asyncio.timeout is the real bound
# One client per client kind is shared by every session (as an RL framework shares one client per
# rollout worker): enough connections for thousands of concurrent sessions.
_MAX_CONNECTIONS = 2000
_MAX_KEEPALIVE = 200

# Set by the agent around one call: a client that can tell puts ``sent`` in it, False when the request
# starts and True once the whole request has been written (httpx's trace events; the sim's network when
# it hands the request to the server). A request the client gave up on before ``sent`` may never have
# reached the server: a starved client's timeout can fire first (liveness, #16).
REQUEST_PROGRESS: ContextVar[dict[str, bool] | None] = ContextVar("REQUEST_PROGRESS", default=None)
SENT_EVENTS = frozenset({"http11.send_request_body.complete", "http2.send_request_body.complete"})


def _trace_extensions() -> dict[str, Any] | None:
    progress = REQUEST_PROGRESS.get()
    if progress is None:
        return None
    progress["sent"] = False

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event in SENT_EVENTS:
            progress["sent"] = True

    return {"trace": trace}


@dataclass
class Reply:
    status: int
    header_pairs: list[tuple[str, str]]  # lower-case names, in wire order, duplicates kept
    body: Any  # parsed JSON, or None
    text: str
    body_bytes: int
    error: str | None = None  # a client-side complaint about a response it still got
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, header_pairs: list[tuple[str, str]], raw: bytes) -> Reply:
        """A plain (not streamed) answer: its body parsed as JSON where it is JSON, and as text."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return cls(status, header_pairs, _parse_json(raw), raw.decode("utf-8", "replace"), len(raw))
        # A valid UTF-8 object or array: json.loads(raw) would decode it as this same text (its encoding
        # detection says utf-8 for a first byte "{" or "[" followed by a non-NUL one), so parse the text once.
        body = _parse_json_text(text) if raw[:1] in (b"{", b"[") and raw[1:2] != b"\x00" else _parse_json(raw)
        return cls(status, header_pairs, body, text, len(raw))

    def header(self, name: str) -> str | None:
        for k, v in self.header_pairs:
            if k == name:
                return v
        return None


@dataclass
class Upload:
    """A request body sent the way a client on a slow link sends it: in pieces, over time.

    ``Content-Length`` is declared up front (the client knows the body; its link is what is slow), the first
    piece goes with the headers and each later one ``gap_s`` after the previous. ``sent`` counts the pieces
    taken so far and ``done_at`` (the history's clock, ``clock``) is when the last one was taken: whoever pulls
    the body takes them, the server's ASGI ``receive`` in process (``reader == "server"``: then ``sent`` is what
    the server read), the HTTP library writing to the socket live (``"socket"``: the server has read at most
    that much). Either way the server cannot have the whole body before ``done_at``.
    """

    chunks: list[bytes]
    gap_s: float
    clock: Callable[[], float]
    reader: str = "server"
    sent: int = 0
    done_at: float | None = None

    @classmethod
    def split(cls, raw: bytes, pieces: int, span_s: float, clock: Callable[[], float]) -> Upload:
        """``raw`` in ``pieces`` (at most one per byte) of about equal size, the last ``span_s`` after the first."""
        n = max(1, min(pieces, len(raw)))
        step = -(-len(raw) // n) if raw else 0
        chunks = [raw[i : i + step] for i in range(0, len(raw), step)] if raw else [b""]
        return cls(chunks, span_s / (len(chunks) - 1) if len(chunks) > 1 else 0.0, clock)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i and self.gap_s > 0:
                await asyncio.sleep(self.gap_s)
            self.sent = i + 1
            if self.sent == len(self.chunks):
                self.done_at = self.clock()
            yield chunk

    def facts(self) -> dict[str, Any]:
        """For the history's completion: how much of the body was taken, and when the last piece went."""
        return {
            "upload_sent": self.sent,
            "upload_done": None if self.done_at is None else round(self.done_at, 6),
            "upload_reader": self.reader,
        }

    def headers(self, headers: dict[str, str] | None, *, declared: bool = True) -> dict[str, str]:
        """``headers`` with this body's ``Content-Length`` (``declared``), or none: httpx then frames it chunked."""
        out = {k: v for k, v in (headers or {}).items() if k.lower() != "content-length"}
        out.setdefault("content-type", "application/json")
        if declared:
            out["content-length"] = str(self.size)
        return out


class ClientFailure(Exception):
    """The call produced no usable response. ``outcome``: "fail" (never happened) or "info" (unknown)."""

    def __init__(self, outcome: str, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.outcome = outcome
        self.kind = kind


class HttpClient(Protocol):
    kind: str

    async def send(
        self, method: str, url: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply: ...

    async def chat(self, server: str, session_id: str, body: dict[str, Any], headers: dict[str, str]) -> Reply: ...

    async def upload(self, method: str, url: str, up: Upload, headers: dict[str, str] | None = None) -> Reply:
        """``up``'s body sent in its pieces over time (a slow link), with its Content-Length."""
        ...

    async def aclose(self) -> None: ...


_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_~-]+)+")  # segments of unreserved characters, no dots: as httpx sends it


def _origin(origin: str) -> tuple[str, int, str] | None:
    """(host, port, Host header) of ``http://authority`` as httpx parses it; None: not one ``_split`` may reuse."""
    if any(c in origin for c in "?#\\@%") or not origin.isascii():
        return None
    u = httpx.URL(origin + "/")
    if u.scheme != "http" or not u.host or u.raw_path != b"/":
        return None
    return u.host, u.port or 80, u.netloc.decode("ascii")


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _parse_json_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def chat_url(server: str, session_id: str) -> str:
    return f"{server}/sessions/{session_id}/v1/chat/completions"


def _from_httpx(resp: httpx.Response) -> Reply:
    raw = resp.content
    return Reply.of(resp.status_code, [(k.lower(), v) for k, v in resp.headers.multi_items()], raw)


def _httpx_failure(exc: Exception) -> ClientFailure:
    if isinstance(exc, httpx.ConnectError):
        return ClientFailure("fail", "refused", str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return ClientFailure("info", "timeout", str(exc) or type(exc).__name__)
    return ClientFailure("info", "disconnected", f"{type(exc).__name__}: {exc}")


class HttpxClient:
    kind = "httpx"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *, client: httpx.AsyncClient | None = None):
        limits = httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE)
        self.http = client or httpx.AsyncClient(
            # sockets: httpx's transport on an O(1) pool (harness/agents/_pool.py), not httpcore's O(connections) one
            transport=transport if transport is not None else fast_transport(limits),
            timeout=_LIB_TIMEOUT_S,
            limits=limits,
        )
        if transport is None and client is None:  # over sockets: an honest User-Agent, where httpx puts its own
            self.http.headers["User-Agent"] = user_agent(self.kind)
        self._urls: dict[str, httpx.URL] = {}
        # A client built here has no auth, no event hooks, no redirect following: its send is the transport's
        # call plus the cookie jar, and taking that path directly halves httpx's own client-layer CPU (#15).
        self._lean = client is None
        self._in_process = transport is not None  # an ASGI app reads the body itself (sim, tests)

    def _url(self, url: str) -> httpx.URL:
        """``url`` parsed once: httpx parses a ``str`` on every request (~10% of its cost), a ``URL`` it reuses."""
        u = self._urls.get(url)
        if u is None:
            if len(self._urls) >= 4096:  # a session's URLs repeat every turn; older sessions' are dropped
                self._urls.clear()
            u = self._urls[url] = httpx.URL(url)
        return u

    async def send(
        self, method: str, url: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        try:
            request = self.http.build_request(
                method, self._url(url), json=json_body, headers=headers, extensions=_trace_extensions()
            )
            resp = await (self._send_lean(request) if self._lean else self.http.send(request))
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from exc
        return _from_httpx(resp)

    async def _send_lean(self, request: httpx.Request) -> httpx.Response:
        """What ``AsyncClient.send`` does for a client with no auth, hooks or redirects, without its layers.

        The request is the one ``build_request`` made (the client's headers, cookies and timeouts merged,
        byte for byte what ``send`` would put on the wire); the response's cookies go into the client's jar
        as ``send`` does; the body is read whole and the connection released, or closed on any error.
        """
        if self.http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        resp = await self.http._transport_for_url(request.url).handle_async_request(request)
        resp.request = request
        try:
            if any(k.lower() == b"set-cookie" for k, _ in resp.headers.raw):
                self.http.cookies.extract_cookies(resp)
            await resp.aread()
        except BaseException:
            await resp.aclose()
            raise
        return resp

    async def chat(self, server: str, session_id: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        return await self.send("POST", chat_url(server, session_id), json_body=body, headers=headers)

    async def upload(self, method: str, url: str, up: Upload, headers: dict[str, str] | None = None) -> Reply:
        if not self._in_process:
            up.reader = "socket"
        try:
            request = self.http.build_request(
                method, self._url(url), content=up.stream(), headers=up.headers(headers), extensions=_trace_extensions()
            )
            resp = await (self._send_lean(request) if self._lean else self.http.send(request))
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from exc
        return _from_httpx(resp)

    async def aclose(self) -> None:
        await self.http.aclose()


class H1Client:
    """The default agent client over sockets: httpx's requests, h11's reading, 2.4-3.3x less CPU (#15).

    ``harness/agents/_h1.py`` says what "the same as httpx" covers; its kind,
    ``httpx->h1``, says in the history which code spoke for ``client = "httpx"``
    (``httpx-lib`` selects the library itself).
    """

    kind = "httpx->h1"

    def __init__(
        self, *, max_connections: int = _MAX_CONNECTIONS, max_keepalive: int = _MAX_KEEPALIVE, agent: str | None = None
    ) -> None:
        """``agent``: the ``User-Agent`` (default ``user_agent(kind)``)."""
        ua = agent if agent is not None else user_agent(self.kind)
        self.pool = H1Pool(max_connections=max_connections, max_keepalive=max_keepalive, user_agent=ua)
        self._urls: dict[str, tuple[str, int, str, str] | None] = {}
        self._origins: dict[str, tuple[str, int, str] | None] = {}  # "http://host:port" -> (host, port, Host header)
        self._other: HttpxClient | None = None  # any scheme but plain http (not one the harness drives)

    def _split(self, url: str) -> tuple[str, int, str, str] | None:
        """(host, port, request target, Host header) as httpx sends them, parsed once per URL; None: not http://.

        A new session's URLs are its server's origin plus a path of plain segments (``/sessions/<id>``): the
        origin is parsed by httpx once, and such a path is its own request target (httpx leaves unreserved
        characters as they are, and there are no dot segments to resolve). Any other URL is httpx's to parse.
        """
        try:
            return self._urls[url]
        except KeyError:
            pass
        if len(self._urls) >= 4096:  # a session's URLs repeat every turn; older sessions' are dropped
            self._urls.clear()
            self._origins.clear()
        parts: tuple[str, int, str, str] | None = None
        slash = url.find("/", 7)
        if slash != -1 and url.startswith("http://") and _PLAIN_PATH.fullmatch(url, slash) is not None:
            origin = url[:slash]
            try:
                o = self._origins[origin]
            except KeyError:
                o = self._origins[origin] = _origin(origin)
            if o is not None:
                parts = (o[0], o[1], url[slash:], o[2])
        if parts is None:
            u = httpx.URL(url)
            ok = u.scheme == "http" and bool(u.host)
            parts = (u.host, u.port or 80, u.raw_path.decode("ascii"), u.netloc.decode("ascii")) if ok else None
        self._urls[url] = parts
        return parts

    async def exchange(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        progress: dict[str, bool] | None = None,
        timeout_s: float | None = None,
    ) -> Response | None:
        """One request to a plain ``http://`` URL: the raw answer (httpx's exceptions); None for another scheme."""
        parts = self._split(url)
        if parts is None:
            return None
        host, port, target, netloc = parts
        body = json_bytes(json_body) if json_body is not None else None
        return await self.pool.request(method, host, port, target, headers, body, progress, netloc, timeout_s)

    async def send(
        self, method: str, url: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        parts = self._split(url)  # ``exchange`` inlined: one coroutine less per request (#15)
        if parts is None:
            if self._other is None:
                self._other = HttpxClient()
            return await self._other.send(method, url, json_body=json_body, headers=headers)
        body = json_bytes(json_body) if json_body is not None else None
        try:
            r = await self.pool.request(
                method, parts[0], parts[1], parts[2], headers, body, REQUEST_PROGRESS.get(), parts[3]
            )
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from exc
        return Reply.of(r.status, r.headers, r.body)

    async def chat(self, server: str, session_id: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        return await self.send("POST", chat_url(server, session_id), json_body=body, headers=headers)

    async def upload(self, method: str, url: str, up: Upload, headers: dict[str, str] | None = None) -> Reply:
        """A body sent over time is the httpx library's (a streamed request body); this pool writes bytes."""
        if self._other is None:
            self._other = HttpxClient()
        return await self._other.upload(method, url, up, headers)

    async def aclose(self) -> None:
        await self.pool.aclose()
        if self._other is not None:
            await self._other.aclose()


class _Httpx2Bridge:
    """An httpx2 transport that forwards to an httpx transport (the openai SDK ships on httpx2).

    Simulation injects one httpx transport (ASGI); this lets the SDK use it too.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: Any) -> Any:
        import httpx2

        body = await request.aread()
        req = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.multi_items()),
            content=body,
            extensions=request.extensions,  # the trace hook's "sent" (harness/agents/_openai.py)
        )
        resp = await self.inner.handle_async_request(req)
        content = await resp.aread()
        await resp.aclose()
        # a stream, not content=: httpx2 would add a content-length the server never sent (to a chunked reply too)
        return httpx2.Response(
            resp.status_code, headers=list(resp.headers.multi_items()), stream=httpx2.ByteStream(content)
        )

    async def aclose(self) -> None:
        return None


def _from_httpx2(resp: Any) -> Reply:
    raw: bytes = resp.content
    return Reply.of(int(resp.status_code), [(str(k).lower(), str(v)) for k, v in resp.headers.multi_items()], raw)


class OpenAIClient(HttpxClient):
    """Chat through ``AsyncOpenAI(base_url=server/sessions/{id}/v1)``; lifecycle calls through httpx.

    ``with_raw_response`` is how an SDK user reads ``x-sglang-aborted``; the
    SDK's own retries are off (the agent's retry policy is under test). The
    SDK runs on ``httpx2`` (its own fork of httpx), so it gets its own
    connection pool, bridged to the injected transport when there is one.
    """

    kind = "openai"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        import httpx2
        import openai  # noqa: F401 - imported here, before the run's first request, not inside the first chat

        from harness.agents._openai import trace_request

        super().__init__(transport)
        bridge: Any = _Httpx2Bridge(transport) if transport is not None else None
        limits = httpx2.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE)
        self.http2 = httpx2.AsyncClient(
            transport=bridge if bridge is not None else fast_transport(limits, sdk=True),
            timeout=_LIB_TIMEOUT_S,
            limits=limits,
            event_hooks={"request": [trace_request]},
        )
        self._sdk: dict[str, Any] = {}
        # over sockets an honest User-Agent instead of the SDK's own; in simulation the SDK's, as before
        self._sdk_headers: dict[str, str] | None = {"User-Agent": user_agent(self.kind)} if transport is None else None

    async def chat(self, server: str, session_id: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        import httpx2
        import openai

        from harness.agents._openai import read_stream

        base_url = f"{server}/sessions/{session_id}/v1"
        oc = self._sdk.get(base_url)
        if oc is None:
            if len(self._sdk) > 256:  # one per live session is plenty; building one costs ~1 ms
                self._sdk.clear()
            oc = self._sdk[base_url] = openai.AsyncOpenAI(
                api_key="harness",
                base_url=base_url,
                http_client=self.http2,
                max_retries=0,
                timeout=_LIB_TIMEOUT_S,
                default_headers=self._sdk_headers,
            )
        kwargs = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        stream = body.get("stream") is True  # streamed through the SDK's AsyncStream (harness/agents/_openai.py)
        streaming: dict[str, Any] = {"stream": True} if stream else {}
        try:
            raw = await oc.chat.completions.with_raw_response.create(
                model=body.get("model", "fake"),
                messages=body["messages"],
                extra_headers=headers,
                extra_body=kwargs or None,
                **streaming,
            )
            if stream:
                return await read_stream(raw)
        except openai.APIStatusError as exc:
            return _from_httpx2(exc.response)
        except openai.APITimeoutError as exc:
            raise ClientFailure("info", "timeout", str(exc)) from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx2.ConnectError | httpx.ConnectError):
                raise ClientFailure("fail", "refused", str(cause)) from exc
            raise ClientFailure("info", "disconnected", f"{type(exc).__name__}: {exc}: {cause!r}") from exc
        reply = _from_httpx2(raw.http_response)
        try:
            parsed = raw.parse()
            reply.extra["sdk_finish_reason"] = parsed.choices[0].finish_reason if parsed.choices else None
        except Exception as exc:  # the SDK refusing a 200 is a client-visible failure
            reply.error = f"openai SDK could not parse the response: {type(exc).__name__}: {exc}"
        return reply

    async def aclose(self) -> None:
        await self.http2.aclose()
        await super().aclose()


class AiohttpClient:
    """aiohttp with its strict (llhttp) response parser: framing errors surface here."""

    kind = "aiohttp"

    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2000),
            timeout=aiohttp.ClientTimeout(total=_LIB_TIMEOUT_S),
            headers={"User-Agent": user_agent(self.kind)},  # instead of aiohttp's "Python/3.x aiohttp/3.x"
        )
        self._streamer: HttpxClient | None = None

    async def send(
        self, method: str, url: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        aiohttp = self._aiohttp
        try:
            async with self.http.request(method, url, json=json_body, headers=headers) as resp:
                raw = await resp.read()
                pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.raw_headers]
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise ClientFailure("fail", "refused", str(exc)) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise ClientFailure("info", "timeout", str(exc)) from exc
        except aiohttp.ClientResponseError as exc:  # includes the parser's framing complaints
            raise ClientFailure("info", "protocol", f"{type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ClientFailure("info", "disconnected", f"{type(exc).__name__}: {exc}") from exc
        return Reply.of(status, pairs, raw)

    async def chat(self, server: str, session_id: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        return await self.send("POST", chat_url(server, session_id), json_body=body, headers=headers)

    async def upload(self, method: str, url: str, up: Upload, headers: dict[str, str] | None = None) -> Reply:
        """A body sent over time goes through the httpx library (a streamed body with its Content-Length)."""
        if self._streamer is None:
            self._streamer = HttpxClient()
        return await self._streamer.upload(method, url, up, headers)

    async def aclose(self) -> None:
        await self.http.close()
        if self._streamer is not None:
            await self._streamer.aclose()


class RouteByHost(httpx.AsyncBaseTransport):
    """One transport for many in-process servers: picks the transport by the URL's ``host:port``.

    Agents address servers by URL; in-process (tests, simulation) each URL's
    host maps to an ASGI transport of its own app, so multi-process routing,
    wrong-process probes and ownership behave as over sockets.
    """

    def __init__(self, routes: dict[str, httpx.AsyncBaseTransport]) -> None:
        self.routes = routes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host if request.url.port is None else f"{request.url.host}:{request.url.port}"
        t = self.routes.get(host)
        if t is None:
            raise httpx.ConnectError(f"no route to {host}", request=request)
        return await t.handle_async_request(request)

    async def aclose(self) -> None:
        for t in self.routes.values():
            await t.aclose()


def make_client(kind: str, transport: httpx.AsyncBaseTransport | None = None) -> HttpClient:
    """A client of ``kind``; with an injected transport, aiohttp is replaced by httpx (kind says so).

    ``httpx`` is :class:`H1Client` over sockets and the httpx library on an injected transport (simulation,
    in-process tests: there are no sockets to speak bytes on); ``httpx-lib`` is the library everywhere.
    """
    if kind == "httpx":
        return HttpxClient(transport) if transport is not None else H1Client()
    if kind == "httpx-lib":
        c = HttpxClient(transport)
        c.kind = "httpx-lib"
        if transport is None:
            c.http.headers["User-Agent"] = user_agent(c.kind)
        return c
    if kind == "openai":
        return OpenAIClient(transport)
    if kind == "aiohttp":
        if transport is not None:
            c = HttpxClient(transport)
            c.kind = "aiohttp->httpx"
            return c
        return AiohttpClient()
    raise ValueError(f"unknown client kind {kind!r}; allowed: httpx, httpx-lib, openai, aiohttp")
