"""The agents' own HTTP/1.1 client: httpx's bytes and h11's rules, without their objects (issue 15).

Why: driving a server through the ``httpx`` library costs 1.8-2.4 ms of CPU
per agent request on this box (``bench/bench_harness.py --agents``), most of it
h11's event machinery and httpx's request and response objects, so the harness
was far from 2,000 turns/s per core and its own time showed in client
latencies. This client does the same exchange in a few Python calls: 0.6-0.7 ms
per agent request, of which ~0.4 ms is the agent and history with no HTTP at
all (bench/results_harness.md).

"The same" is the contract, and ``tests/unit/test_agents_h1.py`` holds it
against a stock ``httpx.AsyncClient`` on the same raw server answers:

- **on the wire**: a request is the bytes httpx 0.28 writes (request line,
  ``Host``, httpx's default headers in its order, the caller's headers, then
  ``Content-Length`` and ``Content-Type``; JSON encoded as httpx does, compact
  and UTF-8; ``Content-Length: 0`` on a body-less POST/PUT/PATCH); cookies a
  server set come back in a ``Cookie`` header, as httpx's jar sends them (name
  and value per host; paths and expiry are not modelled);
- **reading**: h11's grammar, with h11's own regular expressions (status line,
  header fields, obsolete line folding, chunk headers) and its checks: a
  conflicting ``Content-Length`` is refused, identical repeats are merged into
  one, ``Transfer-Encoding`` other than ``chunked`` is refused and wins over a
  length, no body on HEAD/204/304, a body without either ends at close, 1xx
  answers are skipped, bytes after a response wait for the next request on
  that connection (as in h11, which reads them as the next answer); the
  common head (ASCII, final status, no ``Transfer-Encoding``, at most one
  plain ``Content-Length``) is read in a few C calls with the same grammar,
  anything else line by line as h11 does;
- **failures**: httpx's exception classes with h11's and httpcore's messages
  (``RemoteProtocolError: Server disconnected without sending a response.``,
  ``peer closed connection without sending complete message body ...``,
  ``illegal status line``, ``conflicting Content-Length headers``), so
  ``ClientFailure`` and the ``http_framing`` checker see what they saw with
  httpx; a refused connection is ``ConnectError`` ("fail": it never happened);
- **connections**: keep-alive per origin, most recently used first; one not
  reused after ``connection: close``, an HTTP/1.0 answer, a body read to EOF,
  an error, or a cancelled request; idle ones dropped after 5 s (httpx's
  ``keepalive_expiry``) or when the server closed them; at most
  ``max_connections`` open (a request beyond waits) and ``max_keepalive`` idle;
- **content codings**: a ``content-encoding`` answer is decoded by httpx's own
  decoders, as httpx would.

Timeouts are the caller's: the agent wraps each call in ``asyncio.timeout``
(the seams' clock); a cancelled call closes its connection. The runner's
control client asks for httpx's own timeout per phase instead (``timeout_s``). ``sent`` (the
agent's ``REQUEST_PROGRESS``) turns True once the request is handed to the
socket. Plain ``http://`` only (the harness drives loopback servers); any other
scheme is sent through httpx.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import select
from typing import Any

import httpx
from h11._headers import CONTENT_LENGTH_MAX_DIGITS, _content_length_re
from h11._readers import chunk_header_re, header_field_re, obs_fold_re, status_line_re

__all__ = ["H1Pool", "Response", "default_headers", "encode_request", "json_bytes"]

_MAX_HEAD = 100 * 1024  # httpcore's MAX_INCOMPLETE_EVENT_SIZE for h11: a longer unfinished head is refused
_KEEPALIVE_S = 5.0  # httpx.Limits' default keepalive_expiry
_READ_CHUNK = 1 << 16
_READ_HIGH_WATER = 1 << 20


def default_headers(user_agent: str) -> str:
    """httpx's default headers in its order, with ``user_agent`` where httpx puts its own (``python-httpx/...``)."""
    if "\r" in user_agent or "\n" in user_agent:
        raise ValueError(f"a User-Agent on one line, not {user_agent!r}")
    return f"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: {user_agent}\r\n"


_DEFAULT_HEADERS = default_headers(f"python-httpx/{httpx.__version__}")  # stock httpx's, unless told otherwise
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CRLF = b"\r\n"
# httpx 0.28 writes compact JSON (no spaces, UTF-8); 0.27 wrote json.dumps' default
_COMPACT_JSON = tuple(int(x) for x in httpx.__version__.split(".")[:2]) >= (0, 28)


# httpx 0.28's json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False), its encoder built
# once (json.dumps with arguments builds a JSONEncoder per call)
_ENCODE_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def json_bytes(value: Any) -> bytes:
    """A JSON body as the installed httpx encodes it."""
    if _COMPACT_JSON:
        return _ENCODE_COMPACT(value).encode("utf-8")
    return json.dumps(value).encode("utf-8")


def encode_request(
    method: str,
    host: str,
    target: str,
    headers: dict[str, str] | None,
    body: bytes | None,
    cookie: str | None,
    defaults: str = _DEFAULT_HEADERS,
) -> bytes:
    """The bytes httpx writes for this request (see the module docstring); ``defaults``: ``default_headers(ua)``."""
    parts = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    if body is None and method in _BODY_METHODS:
        parts.append("Content-Length: 0\r\n")
    parts.append(defaults)
    if headers:
        for k, v in headers.items():
            if "\r" in v or "\n" in v or "\r" in k or "\n" in k or ":" in k:
                raise httpx.LocalProtocolError(f"Illegal header value {v.encode()!r}")
            parts.append(f"{k}: {v}\r\n")
    if cookie:
        parts.append(f"Cookie: {cookie}\r\n")
    if body is not None:
        parts.append(f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n")
    parts.append("\r\n")
    head = "".join(parts).encode("utf-8")
    return head + body if body else head


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names, wire order, values as h11 leaves them
        self.body = body


class _Conn(asyncio.Protocol):
    """One socket: bytes into ``buf``; one request at a time waits on ``waiter``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drainer: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.idle_since = 0.0
        self.timeout_s: float | None = None  # per wait, as httpx's read/write timeouts; None: the caller's bound
        self._poll: Any = None  # select.poll on the socket, made at the first reuse check

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _READ_HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        d = self.drainer
        if d is not None and not d.done():
            d.set_result(None)

    def _wake(self) -> None:
        for f in (self.waiter, self.drainer):
            if f is not None and not f.done():
                f.set_result(None)

    def usable(self, now: float) -> bool:
        """Idle and still good: not closed by the server (a FIN the loop has not read yet too), not expired."""
        t = self.transport
        if self.eof or t is None or t.is_closing() or now - self.idle_since > _KEEPALIVE_S:
            return False
        poll = self._poll
        if poll is None:
            sock = t.get_extra_info("socket")
            if sock is None:
                return False
            poll = self._poll = select.poll()  # one per connection: registered once, asked before each reuse
            poll.register(sock.fileno(), select.POLLIN)
        return not poll.poll(0)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.eof = True

    async def more(self) -> None:
        """Wait for bytes (or EOF). Caller checks ``buf``/``eof`` first."""
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        w = self.waiter = self.loop.create_future()
        try:
            if self.timeout_s is None:
                await w
            else:
                await _bounded(w, self.timeout_s, httpx.ReadTimeout)
        finally:
            self.waiter = None

    def eof_error(self) -> httpx.HTTPError | None:
        """At EOF: the socket's error as httpcore reports it (``ReadError``), else None (a clean close)."""
        if self.error is not None:
            return httpx.ReadError(str(self.error) or type(self.error).__name__)
        return None

    def write_now(self, data: bytes) -> bool:
        """Hand ``data`` to the socket; True when the caller must then ``await drain()`` (the buffer is full)."""
        t = self.transport
        if t is None or t.is_closing() or self.error is not None:
            return False  # as httpcore after a failed write: read on, the server may have answered (or EOF says so)
        t.write(data)
        return self.write_paused

    async def drain(self) -> None:
        if self.write_paused:
            d = self.drainer = self.loop.create_future()
            try:
                if self.timeout_s is None:
                    await d
                else:
                    await _bounded(d, self.timeout_s, httpx.WriteTimeout)
            finally:
                self.drainer = None


async def _bounded(fut: asyncio.Future[None], timeout_s: float, error: type[httpx.TimeoutException]) -> None:
    """Wait for ``fut`` at most ``timeout_s``; then ``error`` with httpcore's message, as httpx raises it."""
    try:
        async with asyncio.timeout(timeout_s):
            await fut
    except TimeoutError:
        raise error("timed out") from None


def _protocol_error(msg: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(msg)


def _validate(regex: Any, data: bytes, msg: str) -> dict[str, bytes]:
    m = regex.fullmatch(data)
    if m is None:
        raise _protocol_error(msg.format(bytearray(data)))  # h11 parses bytearrays: its messages show them
    groups: dict[str, bytes] = m.groupdict()
    return groups


def _header_lines(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """h11's ``_decode_header_lines``: obsolete line folding, then each ``name: value`` against its grammar."""
    folded: list[bytes] = []
    for line in lines:
        m = obs_fold_re.match(line)
        if m:
            if not folded:
                raise _protocol_error("continuation line at start of headers")
            folded[-1] = folded[-1] + b" " + line[m.end() :]
        else:
            folded.append(line)
    out = []
    for line in folded:
        g = _validate(header_field_re, line, "illegal header line: {!r}")
        out.append((g["field_name"], g["field_value"]))
    return out


def _normalize(fields: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], int | None, bool, bool]:
    """h11's ``normalize_and_validate`` for a parsed head: (fields, content length, chunked, connection: close)."""
    out: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    chunked = False
    close = False
    for raw_name, value in fields:
        name = raw_name.lower()
        if name == b"content-length":
            lengths = {v.strip() for v in value.split(b",")}
            if len(lengths) != 1:
                raise _protocol_error("conflicting Content-Length headers")
            value = lengths.pop()
            if _content_length_re.fullmatch(value) is None or len(value) > CONTENT_LENGTH_MAX_DIGITS:
                raise _protocol_error("bad Content-Length")
            if length is None:
                length = value
                out.append((name, value))
            elif length != value:
                raise _protocol_error("conflicting Content-Length headers")
        elif name == b"transfer-encoding":
            if chunked:
                raise _protocol_error("multiple Transfer-Encoding headers")
            value = value.lower()
            if value != b"chunked":
                raise _protocol_error("Only Transfer-Encoding: chunked is supported")
            chunked = True
            out.append((name, value))
        else:
            if name == b"connection" and b"close" in [v.strip().lower() for v in value.split(b",")]:
                close = True
            out.append((name, value))
    return out, (int(length) if length is not None else None), chunked, close


def _decode_headers(fields: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """httpx's header decoding: ascii, else utf-8, else latin-1, chosen for the whole set."""
    for enc in ("ascii", "utf-8"):
        try:
            return [(k.decode(enc), v.decode(enc)) for k, v in fields]
        except UnicodeDecodeError:
            continue
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]


def _content_decode(raw_fields: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A ``content-encoding`` body through httpx's own decoders (the rare path: our servers do not compress)."""
    resp = httpx.Response(200, headers=raw_fields, stream=httpx.ByteStream(body))
    try:
        return resp.read()
    finally:
        resp.close()


# The common answer's head in a few C calls (``_fast_head``). h11's field grammar (``header_field_re``) on ASCII
# text: a token, ":", then a value whose characters are anything but NUL and the whitespace other than space and
# tab (its ``[^\x00\s]`` and ``[ \t]``: CR, LF, VT, FF), its leading and trailing spaces and tabs not part of it.
# One match per line from the line's start (``^`` with MULTILINE) to its LF: as many matches as LFs means every
# line is a valid field (a folded or bad line cannot match at its start).
_STATUS_ASCII = re.compile(status_line_re.pattern.decode("ascii"), re.ASCII)
_FIELD_LINE = re.compile(r"^([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*([^\x00\r\n\x0b\x0c]*)\r?\n", re.ASCII | re.MULTILINE)
_BYTES_WS = " \t\n\r\x0b\x0c"  # what ``bytes.strip()`` strips (``str.strip()`` strips more)

# A parsed final head: (status, HTTP/1.0 or older, header pairs as httpx decodes them, content length, chunked,
# connection: close, the normalized raw fields or None when the pairs are ASCII and say the same)
_Head = tuple[int, bool, list[tuple[str, str]], int | None, bool, bool, list[tuple[bytes, bytes]] | None]


def _fast_head(block: bytes) -> _Head | None:
    """``_slow_head``'s answer for the common head, or None to let ``_slow_head`` decide (and word any error).

    Taken only when the outcome cannot differ: an all-ASCII head (so the header pairs decode as ``ascii``),
    a final status (not 1xx), every line matching h11's field grammar (so no obsolete folding), no
    ``Transfer-Encoding``, and at most one ``Content-Length`` of plain digits. Everything else, every error
    included, goes through the line-by-line h11 rules.
    """
    if not block.isascii():
        return None
    text = block.decode("ascii")
    nl = text.find("\n")
    line = text[:nl]
    m = _STATUS_ASCII.fullmatch(line[:-1] if line.endswith("\r") else line)
    if m is None:
        return None
    status = int(m["status_code"])
    if 100 <= status < 200:
        return None
    fields = text[nl + 1 : len(text) - (2 if text.endswith("\r\n") else 1)]  # without the blank line
    found = _FIELD_LINE.findall(fields)
    if len(found) != fields.count("\n"):
        return None
    pairs = [(name.lower(), value.rstrip(" \t")) for name, value in found]
    length: int | None = None
    close = False
    for name, value in pairs:
        if name == "content-length":
            if length is not None or not value.isdigit() or len(value) > CONTENT_LENGTH_MAX_DIGITS:
                return None
            length = int(value)
        elif name == "transfer-encoding":
            return None
        elif name == "connection" and "close" in [v.strip(_BYTES_WS).lower() for v in value.split(",")]:
            close = True
    return status, m["http_version"] < "1.1", pairs, length, False, close, None


def _slow_head(block: bytes) -> _Head | None:
    """h11's reading of one head, line by line, with its errors; None for an informational (1xx) answer."""
    lines = block.split(b"\n")
    del lines[-2:]
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    g = _validate(status_line_re, lines[0], "illegal status line: {!r}")
    status = int(g["status_code"])
    fields = _header_lines(lines[1:])
    if 100 <= status < 200 and status != 101:
        return None  # informational: httpcore reads on to the final answer
    version = g["http_version"] or b"1.1"
    fields, length, chunked, close = _normalize(fields)
    return status, version < b"1.1", _decode_headers(fields), length, chunked, close, fields


async def _read_head(conn: _Conn) -> _Head:
    """The next final response head on ``conn``; 1xx answers skipped."""
    while True:
        buf = conn.buf
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            raise _protocol_error("no response line received")
        end = buf.find(b"\n\r\n")
        end2 = buf.find(b"\n\n")
        if end2 != -1 and (end == -1 or end2 < end):
            cut = end2 + 2
        elif end != -1:
            cut = end + 3
        else:
            if buf and buf[0] < 0x21:
                raise _protocol_error("illegal request line")  # h11's words for a garbage first byte
            if len(buf) > _MAX_HEAD:
                raise _protocol_error("Receive buffer too long")
            if conn.eof:
                err = conn.eof_error()
                if err is not None:
                    raise err
                raise _protocol_error("Server disconnected without sending a response.")
            await conn.more()
            continue
        block = bytes(buf[:cut])
        del buf[:cut]
        head = _fast_head(block)
        if head is None:
            head = _slow_head(block)
        if head is not None:
            return head


async def _read_exact(conn: _Conn, n: int) -> bytes:
    while len(conn.buf) < n:
        if conn.eof:
            err = conn.eof_error()
            if err is not None:
                raise err
            raise _protocol_error(
                f"peer closed connection without sending complete message body (received {len(conn.buf)} bytes,"
                f" expected {n})"
            )
        await conn.more()
    data = bytes(conn.buf[:n])
    del conn.buf[:n]
    return data


async def _read_line(conn: _Conn) -> bytes:
    """Up to and with the next CRLF (h11's ``maybe_extract_next_line``), for chunk headers."""
    start = 0
    while True:
        i = conn.buf.find(b"\r\n", start)
        if i != -1:
            line = bytes(conn.buf[: i + 2])
            del conn.buf[: i + 2]
            return line
        start = max(0, len(conn.buf) - 1)
        await _need(conn, "(incomplete chunked read)")


async def _need(conn: _Conn, what: str) -> None:
    if conn.eof:
        err = conn.eof_error()
        if err is not None:
            raise err
        raise _protocol_error(f"peer closed connection without sending complete message body {what}")
    await conn.more()


async def _read_chunked(conn: _Conn) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await _read_line(conn)
        g = _validate(chunk_header_re, line, "illegal chunk header: {!r}")
        size = int(g["chunk_size"], 16)
        if size == 0:
            break
        while len(conn.buf) < size + 2:
            if len(conn.buf) >= size and bytes(conn.buf[size : size + 1]) not in (b"", b"\r"):
                break  # the footer is already wrong: say so now, as h11 does
            await _need(conn, "(incomplete chunked read)")
        parts.append(bytes(conn.buf[:size]))
        footer = bytes(conn.buf[size : size + 2])
        if footer != b"\r\n":
            raise _protocol_error(f"malformed chunk footer: {bytearray(footer)!r} (expected {_CRLF!r})")
        del conn.buf[: size + 2]
    # trailer fields, up to the blank line (validated as h11 does, then dropped as httpx does)
    while True:
        if conn.buf[:2] == b"\r\n" or conn.buf[:1] == b"\n":
            del conn.buf[: 2 if conn.buf[:1] == b"\r" else 1]
            break
        i = conn.buf.find(b"\n\r\n")
        j = conn.buf.find(b"\n\n")
        if i == -1 and j == -1:
            await _need(conn, "(incomplete chunked read)")
            continue
        cut = j + 2 if j != -1 and (i == -1 or j < i) else i + 3
        lines = bytes(conn.buf[:cut]).split(b"\n")
        del conn.buf[:cut]
        del lines[-2:]
        _header_lines([ln[:-1] if ln.endswith(b"\r") else ln for ln in lines])
        break
    return b"".join(parts)


async def _read_to_eof(conn: _Conn) -> bytes:
    while not conn.eof:
        await conn.more()
    data = bytes(conn.buf)
    conn.buf.clear()
    return data


class H1Pool:
    """Keep-alive connections per ``(host, port)`` and the request/response exchange on them."""

    def __init__(self, *, max_connections: int, max_keepalive: int, user_agent: str | None = None) -> None:
        self._defaults = _DEFAULT_HEADERS if user_agent is None else default_headers(user_agent)
        self._max = max_connections
        self._max_idle = min(max_keepalive, max_connections)
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._n_idle = 0
        self._n_open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._cookies: dict[str, dict[str, str]] = {}  # host -> name -> value
        self._closed = False

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: dict[str, str] | None,
        body: bytes | None,
        progress: dict[str, bool] | None,
        host_header: str | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """One exchange; ``host_header`` as httpx writes it (the URL's netloc: no default port, IPv6 bracketed).

        ``timeout_s``: httpx's timeout, per phase (waiting for a connection, connecting, each write and read
        wait), raising httpx's timeout exceptions with httpcore's messages; None (the agents): the caller bounds
        the whole call.
        """
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        jar = self._cookies.get(host)
        cookie = "; ".join(f"{k}={v}" for k, v in jar.items()) if jar else None
        data = encode_request(method, host_header or f"{host}:{port}", target, headers, body, cookie, self._defaults)
        if progress is not None:
            progress["sent"] = False
        key = (host, port)
        conn = self._take_idle(key, asyncio.get_running_loop().time()) or await self._acquire(key, timeout_s)
        conn.timeout_s = timeout_s
        reusable = False
        try:
            if conn.write_now(data):
                await conn.drain()
            if progress is not None:
                progress["sent"] = True
            status, old, pairs, length, chunked, close, fields = await _read_head(conn)
            to_eof = False
            if status in (204, 304) or method == "HEAD" or status == 101:
                raw = b""
            elif chunked:
                raw = await _read_chunked(conn)
            elif length is not None:
                if len(conn.buf) >= length:  # the whole body came with the head (the usual case)
                    raw = bytes(conn.buf[:length])
                    del conn.buf[:length]
                else:
                    raw = await _read_exact(conn, length)
            else:
                to_eof = True
                raw = await _read_to_eof(conn)
            reusable = not (close or to_eof or status == 101 or old)
        finally:
            self._release(conn, reusable)
        if raw:
            for k, _v in pairs:
                if k == "content-encoding":
                    if fields is None:  # an ASCII head: its raw fields are the pairs, encoded back
                        fields = [(n.encode("ascii"), x.encode("ascii")) for n, x in pairs]
                    raw = _content_decode(fields, raw)
                    break
        for k, v in pairs:
            if k == "set-cookie":
                name, eq, rest = v.partition("=")
                if name.strip() and eq:
                    self._cookies.setdefault(host, {})[name.strip()] = rest.split(";", 1)[0].strip()
        return Response(status, pairs, raw)

    def _take_idle(self, key: tuple[str, int], now: float) -> _Conn | None:
        """The most recently used idle connection to ``key`` that is still good (others on the way are closed)."""
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            self._n_idle -= 1
            if conn.usable(now):
                return conn
            self._drop(conn)
        return None

    async def _acquire(self, key: tuple[str, int], timeout_s: float | None = None) -> _Conn:
        loop = asyncio.get_running_loop()
        while True:
            conn = self._take_idle(key, loop.time())
            if conn is not None:
                return conn
            if self._n_open < self._max:
                break
            if self._n_idle:  # full, but another origin has an idle one: close it to make room
                self._drop(self._pop_any_idle())
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout_s):
                    await waiter
            except BaseException as exc:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                if isinstance(exc, TimeoutError) and timeout_s is not None:
                    raise httpx.PoolTimeout("timed out waiting for a connection from the pool") from None
                raise
        self._n_open += 1
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(lambda: _Conn(loop, key), key[0], key[1])
        except BaseException as exc:
            self._n_open -= 1
            self._wake()
            if isinstance(exc, TimeoutError) and timeout_s is not None:
                raise httpx.ConnectTimeout("timed out") from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return conn

    def _pop_any_idle(self) -> _Conn:
        for key, stack in self._idle.items():
            if stack:
                self._n_idle -= 1
                conn = stack.pop(0)
                if not stack:
                    del self._idle[key]
                return conn
        raise AssertionError("no idle connection")  # pragma: no cover - guarded by _n_idle

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        self._n_open -= 1
        self._wake()

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if not reusable or self._closed or conn.eof or self._n_idle >= self._max_idle:
            self._drop(conn)
            return
        conn.idle_since = conn.loop.time()
        stack = self._idle.setdefault(conn.key, [])
        stack.append(conn)
        self._n_idle += 1
        while stack[0] is not conn and conn.idle_since - stack[0].idle_since > _KEEPALIVE_S:
            self._n_idle -= 1
            self._drop(stack.pop(0))
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    @property
    def open_connections(self) -> int:
        return self._n_open

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
                self._n_open -= 1
        self._idle.clear()
        self._n_idle = 0
