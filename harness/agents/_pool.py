"""A connection pool for the agents' httpx clients whose per-request cost does not grow with its size.

Why (issue 15): httpcore's ``AsyncConnectionPool`` re-plans the whole pool on
every request and every response close (``_assign_requests_to_connections``:
``is_idle`` / ``has_expired`` on every pooled connection, and ``has_expired``
polls each idle socket through anyio's ``extra_attributes``). At the 64-2,000
connections an agent client keeps open that was 38% of the harness's CPU per
request, and it is O(connections) per request, so the harness got slower the
harder it drove a server.

This pool keeps the same connection objects and the same wire behaviour, only
the bookkeeping is O(1):

- a connection is httpcore's own ``AsyncHTTPConnection`` (HTTP/1.1 through
  ``h11``): request framing, response parsing and the strictness a real httpx
  client has are httpcore's and h11's, untouched; exceptions are httpcore's, so
  httpx maps them to the same ``httpx`` exceptions;
- idle connections wait in a stack per origin; a request takes the most
  recently used one, after the same check httpcore makes (``has_expired``:
  keep-alive expiry, or the server closed it while idle), on that one
  connection only;
- the limits are httpx's ``Limits``: at most ``max_connections`` open (a request
  beyond waits for one, up to the pool timeout, as in httpcore), at most
  ``max_keepalive_connections`` idle (a surplus one is closed when released),
  ``keepalive_expiry`` seconds of idleness;
- the sockets are asyncio's own (a ``Protocol`` on the running loop) instead of
  anyio's wrappers around the same asyncio transports: less Python per read and
  write, and "did the server close this idle connection" is the protocol's
  state, with no ``poll`` system call.

Plain ``http://`` only, which is what the harness drives (loopback, CONTEXT.md);
any other scheme (``https://``) goes to httpcore's own pool, unchanged. The same
code serves ``httpx``/``httpcore`` and the openai SDK's ``httpx2``/``httpcore2``
fork (same classes, same names): the module is a parameter.
"""

# ruff: noqa: ASYNC109 - the `timeout` parameters are httpcore's network-backend interface, not ours

from __future__ import annotations

import asyncio
import collections
import select
import types
from collections.abc import AsyncIterator
from typing import Any

import anyio

__all__ = ["AsyncioBackend", "FastPool", "fast_transport"]

_READ_HIGH_WATER = 1 << 20  # bytes buffered before the socket stops being read (flow control)
_CORK_BYTES = 1 << 16  # request bytes queued before they are sent without waiting for the read


class _Protocol(asyncio.Protocol):
    """Bytes from one socket into a buffer; one reader waits on it at a time (h11 reads in turn)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.drainer: asyncio.Future[None] | None = None
        self.read_paused = False
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_HIGH_WATER and self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close our side too: HTTP/1.1 has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake_reader()
        self._wake_drainer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drainer()

    def _wake_reader(self) -> None:
        r = self.reader
        if r is not None and not r.done():
            r.set_result(None)

    def _wake_drainer(self) -> None:
        d = self.drainer
        if d is not None and not d.done():
            d.set_result(None)


class _Stream:
    """httpcore's ``AsyncNetworkStream`` over an asyncio transport (the interface is duck-typed)."""

    def __init__(self, hc: types.ModuleType, proto: _Protocol) -> None:
        self._hc = hc
        self._proto = proto
        assert proto.transport is not None
        self._transport: asyncio.Transport = proto.transport
        self._pending: list[bytes] = []
        self._fd = self._transport.get_extra_info("socket").fileno()
        self._pending_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._proto
        if self._pending:
            try:
                await self._flush(limit_s=timeout)
            except self._hc.WriteError:
                pass  # as httpcore does after a failed write: the server may still have answered
        if not p.buffer and not p.eof:
            p.reader = p.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await p.reader
            except TimeoutError:
                raise self._hc.ReadTimeout("timed out") from None
            finally:
                p.reader = None
        if p.buffer:
            data = bytes(p.buffer[:max_bytes])
            del p.buffer[:max_bytes]
            if p.read_paused and len(p.buffer) <= _READ_HIGH_WATER // 4:
                p.read_paused = False
                self._transport.resume_reading()
            return data
        if p.error is not None:
            raise self._hc.ReadError(str(p.error) or type(p.error).__name__)
        return b""  # the peer closed: h11 turns this into "Server disconnected" where it matters

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Queue ``buffer``; it goes out with the next read (or once 64 KiB are queued).

        h11 hands over a request as two or three writes (head, body, end of
        message) and httpcore reads the response right after: one ``send`` per
        request instead of two, the same bytes in the same order.
        """
        if not buffer:
            return
        p = self._proto
        if p.error is not None or self._transport.is_closing():
            raise self._hc.WriteError(str(p.error) if p.error is not None else "connection closed")
        self._pending.append(buffer)
        self._pending_bytes += len(buffer)
        if self._pending_bytes >= _CORK_BYTES:
            await self._flush(limit_s=timeout)

    async def _flush(self, limit_s: float | None) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        self._pending_bytes = 0
        p = self._proto
        self._transport.write(data)
        if p.write_paused:
            p.drainer = p.loop.create_future()
            try:
                async with asyncio.timeout(limit_s):
                    await p.drainer
            except TimeoutError:
                raise self._hc.WriteTimeout("timed out") from None
            finally:
                p.drainer = None
            if p.error is not None:
                raise self._hc.WriteError(str(p.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        raise NotImplementedError("FastPool serves plain http:// only; https goes to httpcore's pool")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # idle and readable: the server closed it (or sent bytes nobody asked for)
            p = self._proto
            if p.buffer or p.eof or self._transport.is_closing():
                return True
            # a FIN the loop has not read yet: ask the socket, as httpcore does (one poll, no anyio)
            poll = select.poll()
            poll.register(self._fd, select.POLLIN)
            return bool(poll.poll(0))
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        return None


class _LoopLock:
    """httpcore's ``AsyncLock`` interface on an ``asyncio.Lock``.

    httpcore's own takes an ``anyio.Lock``, whose every acquire, contended or not, is a cancel-shielded
    checkpoint: one more trip through the event loop, twice per request (the connection's state lock at
    the request's start and at the response's close). asyncio's lock takes a free lock at once; waiting,
    fairness and cancellation while waiting are the same.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> _LoopLock:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class AsyncioBackend:
    """httpcore's ``AsyncNetworkBackend`` on the running asyncio loop, raising ``hc``'s exceptions."""

    def __init__(self, hc: types.ModuleType) -> None:
        self._hc = hc

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _Stream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, proto = await loop.create_connection(
                    lambda: _Protocol(loop),
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError:
            raise self._hc.ConnectTimeout("timed out") from None
        except OSError as exc:
            raise self._hc.ConnectError(str(exc) or type(exc).__name__) from exc
        stream = _Stream(self._hc, proto)
        sock = stream.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)  # asyncio already sets TCP_NODELAY, as anyio does
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise NotImplementedError("FastPool does not serve unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ReleasingStream:
    """A response body that hands its connection back to the pool when closed (httpcore's PoolByteStream)."""

    def __init__(self, stream: Any, pool: FastPool, conn: Any) -> None:
        self._stream = stream
        self._pool = pool
        self._conn = conn
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):  # what httpcore's AsyncShieldCancellation is on asyncio
                await self._stream.aclose()
        finally:
            await self._pool._release(self._conn)


class FastPool:
    """Drop-in for ``hc.AsyncConnectionPool`` (HTTP/1.1, plain http) with O(1) work per request."""

    def __init__(
        self,
        hc: types.ModuleType,
        *,
        max_connections: int | None,
        max_keepalive_connections: int | None,
        keepalive_expiry: float | None,
        fallback: Any,
    ) -> None:
        self._hc = hc
        self._max = max_connections if max_connections is not None else 1 << 62
        self._max_idle = max_keepalive_connections if max_keepalive_connections is not None else 1 << 62
        self._max_idle = min(self._max_idle, self._max)
        self._expiry = keepalive_expiry
        self._fallback = fallback  # httpcore's own pool: every scheme but plain http
        self._backend = AsyncioBackend(hc)
        self._idle: dict[Any, list[Any]] = {}  # (scheme, host, port) -> idle connections, most recently used last
        self._n_idle = 0
        self._open: dict[Any, Any] = {}  # every connection (idle, in use or connecting) -> its origin key
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def connections(self) -> list[Any]:
        return list(self._open)

    async def handle_async_request(self, request: Any) -> Any:
        if request.url.scheme != b"http":
            if self._fallback is None:
                raise self._hc.UnsupportedProtocol(f"this pool serves http:// only, not {request.url.scheme!r}")
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        conn = await self._acquire(request.url, timeouts.get("pool", None))
        try:
            response = await conn.handle_async_request(request)
        except BaseException:
            await self._release(conn)
            raise
        inner = getattr(conn, "_connection", None)  # the HTTP/1.1 connection, made by the first request
        if inner is not None and not isinstance(getattr(inner, "_state_lock", None), _LoopLock):
            inner._state_lock = _LoopLock()  # free now: held only around state changes, not while waiting
        return self._hc.Response(
            status=response.status,
            headers=response.headers,
            content=_ReleasingStream(response.stream, self, conn),
            extensions=response.extensions,
        )

    async def _acquire(self, url: Any, wait_s: float | None) -> Any:
        key = (url.scheme, url.host, url.port)  # httpcore's Origin compares by these but is not hashable
        while True:
            stack = self._idle.get(key)
            while stack:
                conn = stack.pop()
                self._n_idle -= 1
                if conn.is_available() and not conn.has_expired():
                    return conn
                await self._discard(conn)  # closed by the server while idle, or past its keep-alive
            if len(self._open) < self._max:
                break
            if self._n_idle:  # full, but some other origin has an idle one: close it to make room
                await self._discard(self._pop_any_idle())
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(wait_s):
                    await waiter
            except BaseException as exc:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled or timed out: pass the turn on
                if isinstance(exc, TimeoutError):
                    raise self._hc.PoolTimeout("timed out waiting for a connection from the pool") from None
                raise
        conn = self._hc.AsyncHTTPConnection(
            origin=url.origin, keepalive_expiry=self._expiry, network_backend=self._backend
        )
        conn._request_lock = _LoopLock()
        self._open[conn] = key
        return conn

    def _pop_any_idle(self) -> Any:
        for key, stack in self._idle.items():
            if stack:
                self._n_idle -= 1
                conn = stack.pop(0)  # that origin's least recently used
                if not stack:
                    del self._idle[key]
                return conn
        raise AssertionError("no idle connection")  # pragma: no cover - guarded by _n_idle

    async def _discard(self, conn: Any) -> None:
        self._open.pop(conn, None)
        with anyio.CancelScope(shield=True):
            await conn.aclose()
        self._wake()

    async def _release(self, conn: Any) -> None:
        """A request is done with ``conn``: keep it idle if it can take another one, else drop it."""
        if conn.is_closed() or not conn.is_idle() or conn not in self._open:
            await self._discard(conn)
            return
        if self._n_idle >= self._max_idle:
            await self._discard(conn)  # httpcore closes surplus idle connections too
            return
        stack = self._idle.setdefault(self._open[conn], [])
        stack.append(conn)
        self._n_idle += 1
        # httpcore closes expired idle connections on every request; here the least recently used one is
        # looked at on each release, so a connection idle past its keep-alive does not linger
        while stack[0] is not conn and stack[0].has_expired():
            self._n_idle -= 1
            await self._discard(stack.pop(0))
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def aclose(self) -> None:
        conns = list(self._open)
        self._open.clear()
        self._idle.clear()
        self._n_idle = 0
        with anyio.CancelScope(shield=True):
            for conn in conns:
                await conn.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()

    async def __aenter__(self) -> FastPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def fast_transport(limits: Any, *, sdk: bool = False) -> Any:
    """An ``httpx.AsyncHTTPTransport`` (``httpx2``'s when ``sdk``) whose pool is a :class:`FastPool`.

    httpx's transport is kept whole (request conversion, exception mapping,
    response streams); only its ``_pool`` is swapped.
    """
    hc: types.ModuleType
    hx: types.ModuleType
    if sdk:
        import httpcore2
        import httpx2

        hc, hx = httpcore2, httpx2
    else:
        import httpcore
        import httpx

        hc, hx = httpcore, httpx
    transport = hx.AsyncHTTPTransport(limits=limits)
    transport._pool = FastPool(
        hc,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        fallback=transport._pool,
    )
    return transport
