"""Benchmark: the harness's own cost per request, and the client-vs-server time gap, as offered load rises.

Why (issue 15): every client-measured latency includes the harness's own time (its
event loop getting round to the request, httpx building it, parsing the answer, the
history record). This measures that floor against a trivial ASGI echo server (uvicorn
in its own OS process, answering every POST with a fixed chat completion): the server
puts its own handling time in ``x-server-ns``, so ``client time - server time`` is what
the harness (and loopback, and uvicorn's HTTP layer) added.

The client is the agents' own path: ``make_client(kind).chat`` (``httpx`` is the agents' own HTTP/1.1
client over sockets, ``harness/agents/_h1.py``; ``httpx-lib`` the httpx library) plus one
``History.invoke`` / ``History.ok`` pair per request, as an agent turn records it; open
loop at ``--rates`` requests/s (Poisson-free, evenly spaced) with up to ``--concurrency``
in flight, one event loop, one process. Per rate it prints achieved turns/s, the
client's CPU ms per request (process time / requests: what one core can drive is
``1000 / cpu_ms``), and the gap p50/p99 in ms.

Goals: >= 2,000 turns/s per core driven (cpu_ms <= 0.5), gap < 1 ms at p99 while the
server is not saturated. The box is shared: the load average is printed with each run.

What the uvicorn gap measures is more than the client: uvicorn's own HTTP parsing and
response writing happen outside the app's timing. ``--server proto`` measures the
client-side overhead as what it is: a bare asyncio-Protocol echo in its own process
stamps CLOCK_MONOTONIC (``time.monotonic_ns``: one clock for all processes on a Linux
machine) when a request's first bytes reach it and just before it writes the answer;
the client stamps the same clock before and after ``chat``, and the overhead is
``(first byte - client start) + (client done - server write)``: the client's own work,
the loopback transfer and the server process's wake-up, nothing of the server's handling.

Run: ``.venv/bin/python bench/bench_harness.py [--rates 200,500,1000,2000] [--seconds 3] [--server uvicorn,proto]
[--profile 14 [--profile-out FILE]]`` (the profile counts CPU time, not wall time), or ``--agents N`` for whole
agent episodes.
Not part of the test suite; it prints figures (bench/results_harness.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.agents._clients import (  # noqa: E402
    _LIB_TIMEOUT_S,
    _MAX_CONNECTIONS,
    _MAX_KEEPALIVE,
    AiohttpClient,
    HttpClient,
    HttpxClient,
    OpenAIClient,
    make_client,
)
from harness.agents._clients import make_client as make_client_orig  # noqa: E402
from harness.history import History  # noqa: E402
from harness.runner._drive import live_gc  # noqa: E402
from harness.seams import LoopClock  # noqa: E402

ECHO = r"""
import json, time
BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "fake", "choices": [{"index": 0,
    "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    t0 = time.perf_counter_ns()
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    dt = time.perf_counter_ns() - t0
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()), (b"x-server-ns", str(dt).encode())]})
    await send({"type": "http.response.body", "body": BODY})
"""

# The same echo, speaking just enough of the session protocol for whole agent episodes (``--agents``):
# create answers a fresh id, a chat the fixed completion, GET a session with no records, DELETE 204.
SESSION_ECHO = r"""
import itertools, json, time
BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "fake", "choices": [{"index": 0,
    "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
IDS = itertools.count()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    t0 = time.perf_counter_ns()
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    path, method, status = scope["path"], scope["method"], 200
    if method == "POST" and path == "/sessions":
        body = json.dumps({"session_id": "%032x" % next(IDS)}).encode()
    elif method == "POST":
        body = BODY
    elif method == "DELETE":
        status, body = 204, b""
    elif path.startswith("/sessions/"):
        body = json.dumps({"session_id": path.split("/")[2], "records": [], "metadata": {}}).encode()
    else:
        body = b"{}"
    dt = time.perf_counter_ns() - t0
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()), (b"x-server-ns", str(dt).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


# A minimal HTTP/1.1 echo on asyncio's Protocol (``--server proto``), its own process: no HTTP framework between
# the socket and the two stamps. ``x-first-byte-ns``: CLOCK_MONOTONIC (``time.monotonic_ns``, one clock for every
# process on a Linux machine) when the first bytes of a request reach the server's ``data_received``;
# ``x-write-ns``: just before the response goes to ``transport.write``. So for a client that stamps the same clock
# around its call, (first byte - client start) + (client done - write) is everything outside the server process's
# handling of the request: the client's own work, the loopback transfer and the server process's wake-up.
PROTO_ECHO = r"""
import asyncio, json, sys, time
BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "fake", "choices": [{"index": 0,
    "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(BODY)

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf, self.first = transport, bytearray(), 0
    def data_received(self, data):
        if not self.buf:
            self.first = time.monotonic_ns()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            first = self.first
            self.first = time.monotonic_ns()  # a pipelined next request's bytes are already here
            self.t.write(HEAD + b"x-first-byte-ns: %d\r\nx-write-ns: %d\r\n\r\n" % (first, time.monotonic_ns()) + BODY)

async def main(port):
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""


def start_proto_echo(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    (tmp / "proto_echo.py").write_text(PROTO_ECHO)
    proc = subprocess.Popen([sys.executable, str(tmp / "proto_echo.py"), str(port)], cwd=tmp)
    _wait_listening(proc, port)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_echo(port: int, tmp: Path, app: str = ECHO) -> subprocess.Popen[bytes]:
    (tmp / "echo_app.py").write_text(app)
    cmd = [sys.executable, "-m", "uvicorn", "echo_app:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=tmp)
    _wait_listening(proc, port)
    return proc


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("echo server did not start")


def _p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def make(kind: str, pool: str) -> HttpClient:
    """The agents' client of ``kind``; ``pool="httpcore"`` puts httpcore's own pool back (the "before")."""
    client: HttpClient
    if kind == "aiohttp":
        return AiohttpClient()
    if kind == "httpx":
        return make_client("httpx")  # the agents' own HTTP/1.1 client: no pool to swap
    client = OpenAIClient() if kind == "openai" else HttpxClient()
    if pool == "httpcore":
        import httpx
        import httpx2

        assert isinstance(client, HttpxClient)
        if isinstance(client, OpenAIClient):
            lim2 = httpx2.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE)
            client.http2 = httpx2.AsyncClient(timeout=_LIB_TIMEOUT_S, limits=lim2)
        lim = httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE)
        client.http = httpx.AsyncClient(timeout=_LIB_TIMEOUT_S, limits=lim)
    return client


async def drive(
    url: str, rate: float, seconds: float, concurrency: int, kind: str, pool: str, gc_mode: str = "live"
) -> dict[str, Any]:
    """Open-loop bare requests; ``gc_mode="live"`` runs under ``live_gc`` as the runner's live drive does."""
    with live_gc() if gc_mode == "live" else contextlib.nullcontext():
        return await _drive(url, rate, seconds, concurrency, kind, pool)


async def _drive(url: str, rate: float, seconds: float, concurrency: int, kind: str, pool: str) -> dict[str, Any]:
    client = make(kind, pool)
    history = History(LoopClock())
    history.now()
    sem = asyncio.Semaphore(concurrency)
    gaps: list[float] = []
    overheads: list[float] = []  # --server proto only: client start to first byte + server write to client done
    body = {"model": "fake", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 8}

    async def one(i: int) -> None:
        async with sem:
            op = history.invoke(process=f"a{i % concurrency}", f="chat", session="s", server=url, turn=i)
            t0 = time.monotonic_ns()  # seam-ok: bench tooling (CLOCK_MONOTONIC: the server's clock too)
            reply = await client.chat(url, "s", body, {})
            t1 = time.monotonic_ns()  # seam-ok: bench tooling
            history.ok(op, status=reply.status)
            h = dict(reply.header_pairs)
            if "x-write-ns" in h:
                first, wrote = int(h["x-first-byte-ns"]), int(h["x-write-ns"])
                gaps.append((t1 - t0 - (wrote - first)) / 1e6)
                overheads.append(((first - t0) + (t1 - wrote)) / 1e6)
            else:
                gaps.append((t1 - t0 - int(h.get("x-server-ns", "0"))) / 1e6)

    # warm the connection pool and the code paths before measuring
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    gaps.clear()
    overheads.clear()
    pauses: list[float] = []  # the cyclic collector's pauses in the measured window, ms (each one a stall)
    started = [0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()  # seam-ok: bench tooling
        else:
            pauses.append(1000.0 * (time.perf_counter() - started[0]))  # seam-ok: bench tooling

    gc.callbacks.append(on_gc)
    n = int(rate * seconds)
    tasks = []
    c0, w0 = time.process_time(), time.perf_counter()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    gc.callbacks.remove(on_gc)
    await client.aclose()
    return {
        "client": kind,
        "pool": pool if kind in ("httpx-lib", "openai") else "own",
        "load": os.getloadavg()[0],
        "offered": rate,
        "achieved": n / wall,
        "cpu_ms_per_req": 1000.0 * cpu / n,
        "cpu_fraction": cpu / wall,
        "gap_p50_ms": _p(gaps, 0.5),
        "gap_p99_ms": _p(gaps, 0.99),
        "overhead_p50_ms": _p(overheads, 0.5) if overheads else None,
        "overhead_p90_ms": _p(overheads, 0.9) if overheads else None,
        "overhead_p99_ms": _p(overheads, 0.99) if overheads else None,
        "overhead_p999_ms": _p(overheads, 0.999) if overheads else None,
        "overhead_max_ms": max(overheads) if overheads else None,
        "gc_runs": len(pauses),
        "gc_max_ms": max(pauses, default=0.0),
    }


class CannedClient:
    """No network: the session echo's answers, as the agents' client interface returns them (``--client canned``:
    what the agent, history and runner cost per turn without any HTTP library)."""

    kind = "httpx"
    CHAT = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()

    def __init__(self) -> None:
        self.n = 0

    async def send(self, method: str, url: str, *, json_body: Any = None, headers: Any = None) -> Any:
        from harness.agents._clients import Reply

        await asyncio.sleep(0)
        if json_body is not None:
            json.dumps(json_body)  # what a client's serialisation costs at least
        path = url.split("/", 3)[3] if url.count("/") >= 3 else ""
        status, raw = 200, b"{}"
        if method == "POST" and path == "sessions":
            self.n += 1
            raw = json.dumps({"session_id": f"{self.n:032x}"}).encode()
        elif method == "POST":
            raw = self.CHAT
        elif method == "DELETE":
            status, raw = 204, b""
        elif path.startswith("sessions/"):
            raw = json.dumps({"session_id": path.split("/")[1], "records": [], "metadata": {}}).encode()
        pairs = [("content-type", "application/json"), ("content-length", str(len(raw)))]
        return Reply(status, pairs, json.loads(raw) if raw else None, raw.decode(), len(raw))

    async def chat(self, server: str, session_id: str, body: Any, headers: Any) -> Any:
        return await self.send("POST", f"{server}/sessions/{session_id}/v1/chat/completions", json_body=body)

    async def aclose(self) -> None:
        return None


async def drive_agents(url: str, sessions: int, turns: int, concurrency: int, kind: str, sink: Path) -> dict[str, Any]:
    """Whole agent episodes through the runner's own ``drive`` (create, turns, collect, delete, the final
    probes), history streamed to ``sink`` as a live run does: what one agent turn costs end to end."""
    import harness.runner._drive as drive_mod
    from harness.runner._drive import drive as run_drive

    if kind == "canned":
        drive_mod.make_client = lambda k, t=None: CannedClient()  # type: ignore[assignment,misc]
        kind = "httpx"
    from harness.scenario import AgentSpec, Scenario, WorkloadSpec

    def scenario(n: int) -> Scenario:
        w = WorkloadSpec(sessions=n, concurrency=concurrency, turns=(turns, turns), duration_s=600.0)
        return Scenario(name="bench_agents", seed=1, workload=w, agent=AgentSpec(clients={kind: 1.0}))

    await run_drive(scenario(min(sessions, concurrency)), [url])  # warm the code paths and imports
    with sink.open("w") as fh:
        c0, w0 = time.process_time(), time.perf_counter()
        result = await run_drive(scenario(sessions), [url], history_sink=fh)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    events = result.data.history
    agent_done = [e for e in events if e["type"] != "invoke" and str(e["process"]).startswith("agent-")]
    chats = [e for e in agent_done if e["f"] == "chat" and e["type"] == "ok"]
    sent = {e["op"]: e["time"] for e in events if e["type"] == "invoke" and e["f"] == "chat"}
    lat = [1000.0 * (e["time"] - sent[e["op"]]) for e in chats]
    return {
        "client": "canned" if drive_mod.make_client is not make_client_orig else kind,
        "load": os.getloadavg()[0],
        "sessions": sessions,
        "requests": len(agent_done),
        "chats": len(chats),
        "cpu_ms_per_req": 1000.0 * cpu / max(1, len(agent_done)),
        "cpu_ms_per_turn": 1000.0 * cpu / max(1, len(chats)),
        "turns_per_s": len(chats) / wall,
        "cpu_fraction": cpu / wall,
        "lat_p50_ms": _p(lat, 0.5),
        "lat_p99_ms": _p(lat, 0.99),
    }


def main_agents(args: argparse.Namespace) -> None:
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_echo(port, Path(tmp), SESSION_ECHO)
        try:
            url = f"http://127.0.0.1:{port}"
            print(
                f"# session echo ASGI server (uvicorn), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            print(
                f"# {args.agents} agent episodes x {args.turns} turns, concurrency {args.concurrency}, "
                "through runner._drive.drive, history streamed to a file"
            )
            print(
                "client   load  requests  chats  cpu_ms/req  cpu_ms/turn  turns/s/core  turns/s  harness_cpu  "
                "lat_p50_ms  lat_p99_ms"
            )
            for kind in args.client.split(","):
                run = drive_agents(url, args.agents, args.turns, args.concurrency, kind, Path(tmp) / "history.jsonl")
                if args.profile:
                    import cProfile
                    import pstats

                    prof = cProfile.Profile(time.process_time)  # CPU, not wall: a descheduled send is not cost
                    r = prof.runcall(asyncio.run, run)
                    if args.profile_out:
                        prof.dump_stats(args.profile_out)
                    pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
                    args.profile = 0
                else:
                    r = asyncio.run(run)
                if args.json:
                    print(json.dumps(r))
                print(
                    f"{r['client']:8} {r['load']:5.1f}  {r['requests']:8}  {r['chats']:5}  "
                    f"{r['cpu_ms_per_req']:10.3f}  "
                    f"{r['cpu_ms_per_turn']:11.3f}  {1000.0 / r['cpu_ms_per_turn']:12.0f}  {r['turns_per_s']:7.0f}  "
                    f"{r['cpu_fraction']:10.0%}  {r['lat_p50_ms']:10.2f}  {r['lat_p99_ms']:10.2f}"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="200,500,1000,2000,4000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument(
        "--client",
        default="httpx",
        help="httpx (the agents' own client), httpx-lib, openai, aiohttp or, with --agents, canned "
        "(comma-separated: each in turn)",
    )
    ap.add_argument(
        "--pool",
        default="fast",
        help="fast (the agents' pool, harness/agents/_pool.py), httpcore (httpcore's own: the before), or both",
    )
    ap.add_argument(
        "--server",
        default="uvicorn",
        help="with --rates: uvicorn (the ASGI echo, gap = client time - the app's own time) or proto (a bare "
        "asyncio-Protocol echo stamping CLOCK_MONOTONIC at the request's first byte and before its write: adds "
        "the client-side overhead columns); comma-separated: each in turn",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--gc",
        default="live",
        choices=["live", "default"],
        help="with --rates: live (the runner's live_gc: start-up heap frozen, gen0 threshold raised) or default "
        "(CPython's thresholds: the before)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="with --rates: run every rate this many times")
    ap.add_argument(
        "--agents",
        type=int,
        metavar="N",
        help="instead of bare requests: N whole agent episodes through the runner (create, --turns chats, "
        "collect, delete), against a session-protocol echo; --concurrency sessions at once",
    )
    ap.add_argument("--turns", type=int, default=8, help="chat turns per episode with --agents")
    ap.add_argument("--profile", type=int, metavar="N", help="cProfile the first rate; print the top N functions")
    ap.add_argument("--profile-out", metavar="FILE", help="with --profile: also save the stats to FILE (pstats)")
    args = ap.parse_args()
    if args.agents:
        return main_agents(args)

    for server in args.server.split(","):
        main_rates(args, server)


def main_rates(args: argparse.Namespace, server: str) -> None:
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_proto_echo(port, Path(tmp)) if server == "proto" else start_echo(port, Path(tmp))
        try:
            url = f"http://127.0.0.1:{port}"
            what = "asyncio-Protocol HTTP/1.1 echo (proto)" if server == "proto" else "echo ASGI server (uvicorn)"
            print(f"# {what}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            if server == "proto":
                print(
                    "# overhead = (server first byte - client start) + (client done - server write), CLOCK_MONOTONIC;"
                    " with this server it is also the old gap (client time - the server's own handling window)"
                )
            gap = "ovh" if server == "proto" else "gap"
            print(
                "client   pool      load  offered/s  achieved/s  cpu_ms/req  turns/s/core  harness_cpu  "
                f"{gap}_p50_ms  {gap}_p99_ms"
                + ("  ovh_p90_ms  ovh_p999_ms  ovh_max_ms  gc_runs  gc_max_ms" if server == "proto" else "")
            )
            pools = ["httpcore", "fast"] if args.pool == "both" else [args.pool]
            for rate in (float(r) for r in args.rates.split(",")):
                for kind in args.client.split(","):
                    for pool in (
                        [p for p in pools for _ in range(args.repeat)]
                        if kind in ("httpx-lib", "openai")
                        else ["fast"] * args.repeat
                    ):
                        run = drive(url, rate, args.seconds, args.concurrency, kind, pool, args.gc)
                        if args.profile:
                            import cProfile
                            import pstats

                            prof = cProfile.Profile(time.process_time)  # CPU, not wall: a descheduled send is not cost
                            r = prof.runcall(asyncio.run, run)
                            if args.profile_out:
                                prof.dump_stats(args.profile_out)
                            pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
                            args.profile = 0
                        else:
                            r = asyncio.run(run)
                        if args.json:
                            print(json.dumps(r))
                        print(
                            f"{r['client']:8} {r['pool']:8} {r['load']:5.1f}  {r['offered']:9.0f}  "
                            f"{r['achieved']:10.0f}  {r['cpu_ms_per_req']:10.3f}  "
                            f"{1000.0 / r['cpu_ms_per_req']:12.0f}  {r['cpu_fraction']:10.0%}  "
                            + (
                                f"{r['overhead_p50_ms']:10.3f}  {r['overhead_p99_ms']:10.3f}  "
                                f"{r['overhead_p90_ms']:10.3f}  {r['overhead_p999_ms']:11.3f}  "
                                f"{r['overhead_max_ms']:10.3f}  {r['gc_runs']:6}  {r['gc_max_ms']:9.2f}"
                                if r["overhead_p50_ms"] is not None
                                else f"{r['gap_p50_ms']:10.2f}  {r['gap_p99_ms']:10.2f}"
                            )
                        )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
