"""An in-process deployment for one scenario: fake SGLang, N session servers, one network.

Why a "world": live mode gets its isolation from the operating system (one
process per server, sockets between them, SIGKILL for a crash). Simulation
must reproduce the same facts inside one event loop, or a race that depends
on them cannot be found:

- **independent processes**: every server is its own ASGI app with its own
  state, ids, clock and log sink; nothing is shared but the network;
- **a network that routes by host**: ``http://server-<i>.sim:<port>`` and
  ``http://fake-sglang.sim:30000`` are dispatched by :class:`SimNetwork` to
  the app behind them. Each request runs in a task of its own, as a server
  connection does: a client that gives up (timeout, disconnect) does *not*
  cancel the server's handler, which runs on and may still commit, exactly
  as under uvicorn. A duplicate in-flight retry is only a race if that holds;
- **crashes**: :meth:`SimProcesses.kill` makes the host refuse connections
  (``httpx.ConnectError``, a "fail" in the history), ends its in-flight
  requests with a dropped connection (``httpx.RemoteProtocolError``, an
  "info") and throws its state away; its log lines stop mid-request, as
  SIGKILL leaves them. ``restart`` builds a fresh app: empty, new pid;
- **a slow client** (``[chaos] client_delay_ms = [lo, hi]``): every request
  to a session server waits a seeded draw from ``[lo, hi]`` ms before it
  reaches the server (send) and another before its answer reaches the client
  (receive), as a starved client box does. The send delay runs in the
  request's own task, so a request the client has given up on still arrives
  late, after its twin: the race between a late duplicate and the copy that
  already committed is explored on purpose. Server-to-backend calls are not
  delayed;
- **determinism**: each server gets ``IdSource`` seeded from (run seed,
  index, restart count), ``LoopClock`` at a fixed epoch, a
  :class:`~harness.sim.executor.VirtualCostExecutor` (tokenization costs
  virtual time, so a DELETE can queue behind it as it does behind a worker
  thread), and a pid and worker port derived from its index. Nothing reads
  the wall clock, ``os.getpid()`` or global randomness.

A user's own server (``--target asgi:module:factory``) is built by calling
the factory with whichever of ``backend_url``, ``backend_transport``,
``clock``, ``ids``, ``executor``, ``log_sink``, ``pid``, ``worker_port``,
``variants``, ``tokenizer`` (the scenario's ``target.tokenizer``, None for the
default) and ``seed`` it accepts; whatever it does not accept it must not
need (a factory that reads ``time.time`` itself makes its own runs diverge,
which the determinism check then reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.scenario import Scenario
from harness.seams import IdSource, LoopClock
from harness.sim.executor import VirtualCostExecutor
from harness.workload import derive_rng, derive_seed

__all__ = [
    "BACKEND_URL",
    "EPOCH",
    "AppFactory",
    "SimNetwork",
    "SimProcesses",
    "World",
    "build_world",
    "load_target",
    "reference_factory",
    "running",
    "server_host",
    "server_url",
]

EPOCH = 1_700_000_000.0  # every simulated wall clock starts here: logs and records replay byte for byte
BACKEND_HOST = "fake-sglang.sim:30000"
BACKEND_URL = f"http://{BACKEND_HOST}"
BASE_PORT = 31000
BASE_PID = 40000
TOKENIZE_COST_S = 0.0005  # virtual seconds per tokenization (VirtualCostExecutor)

# (index, generation, seed, backend transport, log sink) -> ASGI app
AppFactory = Callable[[int, int, int, httpx.AsyncBaseTransport, Callable[[dict[str, Any]], None]], Any]


def server_host(index: int) -> str:
    return f"server-{index}.sim:{BASE_PORT + index}"


def server_url(index: int) -> str:
    return f"http://{server_host(index)}"


class _Killed(Exception):
    """Marks a request task that its process's kill ended."""


@dataclass
class _Host:
    """One simulated process (or the backend): its app, liveness and requests in flight."""

    name: str
    app: Any
    raise_app_exceptions: bool
    client_facing: bool = False  # a session server: the client delay applies to its requests
    alive: bool = True
    generation: int = 0
    # A dict, not a set: cancelling in insertion order keeps a kill replayable.
    inflight: dict[asyncio.Task[httpx.Response], None] = field(default_factory=dict)
    transport: httpx.ASGITransport = field(init=False)

    def __post_init__(self) -> None:
        self.set_app(self.app)

    def set_app(self, app: Any) -> None:
        self.app = app
        self.transport = httpx.ASGITransport(app=app, raise_app_exceptions=self.raise_app_exceptions)


def _read_timeout(request: httpx.Request) -> float | None:
    t = request.extensions.get("timeout")
    if isinstance(t, dict):
        v = t.get("read")
        if isinstance(v, int | float) and v > 0:
            return float(v)
    return None


def _settle(inflight: dict[asyncio.Task[httpx.Response], None]) -> Callable[[asyncio.Task[httpx.Response]], None]:
    """Forget a finished request; retrieve its exception (an orphan's caller is gone, nobody else will)."""

    def done(task: asyncio.Task[httpx.Response]) -> None:
        inflight.pop(task, None)
        if not task.cancelled():
            task.exception()

    return done


def _declared_length(values: list[str]) -> tuple[int | None, str | None]:
    """The one Content-Length a message declares, or why there is none a parser would accept."""
    distinct = {v.strip() for v in values}
    if len(distinct) > 1:
        return None, f"conflicting Content-Length headers {sorted(distinct)}"
    (v,) = distinct
    if not (v.isascii() and v.isdigit()):
        return None, f"invalid Content-Length {v!r}"
    return int(v), None


def _framing_headers(headers: httpx.Headers) -> tuple[list[str], bool]:
    """(the Content-Length values, whether a Transfer-Encoding is present): ``get_list`` and ``in``, one pass.

    httpx's own lookups re-detect the headers' encoding on every call (they ran
    four times per request here); the names are compared lower-cased as httpx
    does. Values in ASCII decode the same under any encoding httpx would pick;
    anything else is left to httpx's own decoding.
    """
    lengths: list[bytes] = []
    chunked = False
    for k, v in headers.raw:
        name = k.lower()
        if name == b"content-length":
            lengths.append(v)
        elif name == b"transfer-encoding":
            chunked = True
    if not all(v.isascii() for v in lengths):
        return headers.get_list("content-length"), chunked
    return [v.decode("ascii") for v in lengths], chunked


def request_framing_error(request: httpx.Request) -> str | None:
    """HTTP/1.1 framing of a request as a real client library would send it (None: fine).

    In-process ASGI transports hand the body over whatever the headers say; on a
    socket, a request whose Content-Length does not match its body is refused by
    the sending client (h11: "Too much data for declared Content-Length") or cut.
    A proxy that forwards the client's length header onto a rewritten body has
    this bug; CONTEXT.md: forwarded headers go "less hop-by-hop and length headers".
    """
    values, chunked = _framing_headers(request.headers)
    if not values:
        return None
    if chunked:
        return "request carries both Content-Length and Transfer-Encoding"
    n, why = _declared_length(values)
    if why is not None:
        return why
    try:
        body = request.content
    except httpx.RequestNotRead:
        return None  # a streamed upload: its length is only known on the wire
    if n != len(body):
        more = "Too much" if len(body) > (n or 0) else "Too little"
        return f"{more} data for declared Content-Length ({n} declared, {len(body)} bytes of body)"
    return None


def response_framing_error(request: httpx.Request, response: httpx.Response) -> str | None:
    """HTTP/1.1 framing of a buffered reply as a strict client parses it (None: fine)."""
    values, chunked = _framing_headers(response.headers)
    if not values:
        return None
    n, why = _declared_length(values)
    if why is not None:
        return why
    if chunked:
        return "reply carries both Content-Length and Transfer-Encoding"
    got = len(response.content)
    if request.method != "HEAD" and response.status_code not in (204, 304) and n != got:
        return f"payload length mismatch: Content-Length {n} but {got} bytes of body"
    return None


SERVER_HEADER = b"harness-sim"
_NO_BODY_STATUS = frozenset({204, 304})


def http_server_layer(request: httpx.Request, response: httpx.Response, now: float) -> None:
    """Add what the HTTP/1.1 server under an ASGI app adds to every reply, as uvicorn does live.

    An ASGI app hands ``http.response.start`` headers and body bytes to its
    server; the server owns the connection and adds its own ``server`` and
    ``date`` fields *before* the app's (uvicorn prepends them whatever the app
    sent), and frames a reply that declares no length with
    ``transfer-encoding: chunked`` (RFC 9112 6.1/6.3: no body framing is sent
    on 1xx, 204 and 304, nor for HEAD). In process nothing else adds them, so
    without this a server that copies its backend's ``server`` / ``date`` /
    ``transfer-encoding`` onto its reply (``echo_upstream_framing``) would look
    clean in simulation and broken live. ``now`` is virtual time: the ``date``
    replays byte for byte.
    """
    from email.utils import formatdate

    layer = [(b"server", SERVER_HEADER), (b"date", formatdate(now, usegmt=True).encode("ascii"))]
    lengths, chunked = _framing_headers(response.headers)
    status = response.status_code
    bodyless = request.method == "HEAD" or status < 200 or status in _NO_BODY_STATUS
    if not lengths and not chunked and not bodyless:
        layer.append((b"transfer-encoding", b"chunked"))
    response.headers = httpx.Headers([*layer, *response.headers.raw])


class SimNetwork(httpx.AsyncBaseTransport):
    """Routes requests by ``host:port`` to in-process ASGI apps, one task per request.

    The task is shielded from the caller: cancelling the client (its timeout
    fired, the agent "disconnected") leaves the server handler running. A
    killed host refuses new requests and its in-flight ones end with a
    dropped connection. The request's read timeout (httpx ``extensions``) is
    honoured in virtual time, so a server's ``backend_timeout`` works here.

    ``client_delay`` ((lo, hi) seconds) slows the client side of every request
    to a client-facing host: a send delay before the request reaches the app
    (inside the shielded task: a request whose client gave up still arrives)
    and a receive delay before the answer reaches the caller (a client timeout
    can fire during it). Both are drawn, in request order, from one generator
    seeded by ``seed``: the same run draws the same delays.
    """

    def __init__(self, *, client_delay: tuple[float, float] | None = None, seed: int = 0) -> None:
        self.hosts: dict[str, _Host] = {}
        self.requests = 0
        self.client_delay = client_delay if client_delay is not None and client_delay[1] > 0 else None
        self._delay_rng = derive_rng(seed, "client_delay")

    def add(self, host: str, app: Any, *, raise_app_exceptions: bool = False, client_facing: bool = False) -> _Host:
        h = self.hosts[host] = _Host(host, app, raise_app_exceptions, client_facing)
        return h

    def _delays(self, host: _Host) -> tuple[float, float]:
        """(send, receive) delay for one request to ``host``: zero unless it is client-facing and delay is on."""
        if self.client_delay is None or not host.client_facing:
            return 0.0, 0.0
        lo, hi = self.client_delay
        return self._delay_rng.uniform(lo, hi), self._delay_rng.uniform(lo, hi)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        port = request.url.port
        key = request.url.host if port is None else f"{request.url.host}:{port}"
        host = self.hosts.get(key)
        if host is None or not host.alive:
            why = "no such host" if host is None else "process is down"
            raise httpx.ConnectError(f"[sim] connection refused by {key} ({why})", request=request)
        problem = request_framing_error(request)
        if problem is not None:  # what h11 says before (or instead of) sending such a request live
            raise httpx.LocalProtocolError(f"[sim] {problem}", request=request)
        self.requests += 1
        send, receive = self._delays(host)
        task = asyncio.get_running_loop().create_task(self._serve(host, request, send))
        host.inflight[task] = None
        task.add_done_callback(_settle(host.inflight))
        timeout = _read_timeout(request)
        try:
            async with asyncio.timeout(timeout):
                response = await asyncio.shield(task)
                if receive > 0:
                    await asyncio.sleep(receive)
                return response
        except TimeoutError:
            raise httpx.ReadTimeout(f"[sim] no response from {key} within {timeout:g} s", request=request) from None
        except _Killed:
            raise httpx.RemoteProtocolError(
                f"[sim] {key} went away mid-request: server disconnected without sending a response",
                request=request,
            ) from None

    async def _serve(self, host: _Host, request: httpx.Request, send_delay: float = 0.0) -> httpx.Response:
        generation = host.generation
        if send_delay > 0:
            await asyncio.sleep(send_delay)
            if host.generation != generation or not host.alive:
                raise _Killed()  # the process died while the request was on its way
        trace = request.extensions.get("trace")
        if trace is not None:  # the whole request is with the server now, as httpcore reports it live
            await trace("http11.send_request_body.complete", {"request": request})
        try:
            response = await host.transport.handle_async_request(request)
        except asyncio.CancelledError:
            if host.generation != generation:
                raise _Killed() from None
            raise
        if host.generation != generation:
            raise _Killed()
        await response.aread()  # the ASGI transport has buffered the body already: this only exposes it
        http_server_layer(request, response, EPOCH + asyncio.get_running_loop().time())
        problem = response_framing_error(request, response)
        if problem is not None:  # a strict HTTP/1.1 client (h11, llhttp) refuses such a reply
            raise httpx.RemoteProtocolError(f"[sim] {problem}", request=request)
        return response

    def kill(self, host_name: str) -> None:
        host = self.hosts[host_name]
        host.alive = False
        host.generation += 1
        for t in list(host.inflight):
            t.cancel()

    def revive(self, host_name: str, app: Any) -> None:
        host = self.hosts[host_name]
        host.set_app(app)
        host.alive = True

    async def drain(self) -> None:
        """Cancel every request still running server-side (orphans of client timeouts); end of run."""
        tasks = [t for h in self.hosts.values() for t in h.inflight if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        return None


class _ProcessLog:
    """A server process's log sink: appends to the shared list while that process instance lives.

    SIGKILL leaves no last words: lines a killed instance emits while its
    cancelled handlers unwind are dropped, as they are live.
    """

    def __init__(self, lines: list[dict[str, Any]], alive: Callable[[], bool]) -> None:
        self._lines = lines
        self._alive = alive

    def __call__(self, event: dict[str, Any]) -> None:
        if self._alive():
            self._lines.append(event)


class SimProcesses:
    """:class:`harness.chaos.ProcessControl` for simulated servers: kill drops state, restart is a fresh app."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def kill(self, index: int) -> None:
        self.world.network.kill(server_host(index))
        await asyncio.sleep(0)

    async def restart(self, index: int) -> None:
        self.world.generations[index] += 1
        self.world.network.revive(server_host(index), self.world.make_server(index))
        await asyncio.sleep(0)


@dataclass
class World:
    """The deployment: URLs the drive loop talks to, the network, process control, log lines."""

    seed: int
    servers: list[str]
    backend_url: str
    network: SimNetwork
    factory: AppFactory
    logs: list[dict[str, Any]]  # every process's lines, in emission order
    generations: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def processes(self) -> SimProcesses:
        return SimProcesses(self)

    def make_server(self, index: int) -> Any:
        generation = self.generations[index]
        host = server_host(index)

        def alive() -> bool:
            h = self.network.hosts.get(host)
            return h is None or (h.alive and self.generations[index] == generation)

        sink = _ProcessLog(self.logs, alive)
        return self.factory(index, generation, self.seed, self.network, sink)

    def server_logs(self) -> list[dict[str, Any]]:
        """Every server's log lines in the order they were emitted (one loop: a true total order)."""
        return list(self.logs)


def reference_factory(sc: Scenario) -> AppFactory:
    """The reference server, configured as ``harness serve`` would be from the scenario's target."""
    from reference_impl import create_app
    from reference_impl.launcher import _config, build_parser

    argv = ["--backend-url", BACKEND_URL, *sc.target.server_args]
    if sc.target.tokenizer:
        argv += ["--tokenizer", sc.target.tokenizer]
    for v in sc.target.variants:
        argv += ["--variant", v]
    args = build_parser().parse_args(argv)

    def make(index: int, generation: int, seed: int, transport: httpx.AsyncBaseTransport, sink: Any) -> Any:
        config = _config(args, BASE_PORT + index)
        return create_app(
            config,
            clock=LoopClock(epoch=EPOCH),
            ids=IdSource(derive_seed(seed, "server", index, generation)),
            executor=VirtualCostExecutor(TOKENIZE_COST_S),
            backend_transport=transport,
            log_sink=sink,
            pid=BASE_PID + 100 * index + generation,
        )

    return make


def load_target(spec: str, sc: Scenario) -> AppFactory:
    """``asgi:module:factory`` (or ``module:factory``): a user's ASGI session-server factory."""
    ref = spec.removeprefix("asgi:")
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"--target {spec!r}: expected asgi:module:factory, e.g. asgi:myserver.app:create_app")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--target {spec!r}: cannot import {mod_name}:{attr} ({exc})") from None
    if not callable(factory):
        raise ValueError(f"--target {spec!r}: {mod_name}:{attr} is not callable")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def make(index: int, generation: int, seed: int, transport: httpx.AsyncBaseTransport, sink: Any) -> Any:
        offered: dict[str, Any] = {
            "backend_url": BACKEND_URL,
            "backend_transport": transport,
            "clock": LoopClock(epoch=EPOCH),
            "ids": IdSource(derive_seed(seed, "server", index, generation)),
            "executor": VirtualCostExecutor(TOKENIZE_COST_S),
            "log_sink": sink,
            "pid": BASE_PID + 100 * index + generation,
            "worker_port": BASE_PORT + index,
            "variants": frozenset(sc.target.variants),
            "tokenizer": sc.target.tokenizer,  # the family or folder the fake generates with
            "seed": derive_seed(seed, "server", index, generation),
            "server_args": tuple(sc.target.server_args),  # as `harness serve` would get them (reference options)
        }
        kwargs = offered if takes_all else {k: v for k, v in offered.items() if k in params}
        return factory(**kwargs)

    return make


def build_world(sc: Scenario, seed: int, *, target: str | None = None) -> World:
    """The fake SGLang and ``sc.target.processes`` servers on one :class:`SimNetwork`."""
    from harness.fake_sglang import create_app as create_fake
    from harness.fake_sglang.plan import parse_plan
    from harness.tokenizer import load_tokenizer

    if sc.target.kind != "reference" and target is None:
        raise ValueError(
            f"{sc.source}: target.kind = {sc.target.kind!r} names live URLs; simulation needs the reference "
            "server or --target asgi:module:factory"
        )
    lo, hi = sc.chaos.client_delay_ms
    network = SimNetwork(client_delay=(lo / 1000.0, hi / 1000.0), seed=seed)
    fake = create_fake(
        seed=sc.backend.seed,
        plan=parse_plan(sc.backend.plan(), f"{sc.source} [backend]"),
        tokenizer=load_tokenizer(sc.target.tokenizer),
        clock=LoopClock(epoch=EPOCH),
    )
    # The fake raises httpx transport errors to model resets and cut bodies: let them through.
    network.add(BACKEND_HOST, fake, raise_app_exceptions=True)
    n = sc.target.processes
    factory = load_target(target, sc) if target else reference_factory(sc)
    world = World(
        seed=seed,
        servers=[server_url(i) for i in range(n)],
        backend_url=BACKEND_URL,
        network=network,
        factory=factory,
        logs=[],
        generations=[0] * n,
    )
    if network.client_delay is not None:
        world.notes.append(f"client send/receive delay {lo:g}-{hi:g} ms per request (chaos.client_delay_ms)")
    for i in range(n):
        network.add(server_host(i), world.make_server(i), client_facing=True)
    return world


@contextlib.asynccontextmanager
async def running(world: World) -> Any:
    """Hold the world for one run; at the end, orphaned server-side requests are cancelled."""
    try:
        yield world
    finally:
        await world.network.drain()
