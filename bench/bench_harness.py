"""Benchmark: the harness's own cost per request, and the client-vs-server time gap, as offered load rises.

Why (issue 15): every client-measured latency includes the harness's own time (its
event loop getting round to the request, httpx building it, parsing the answer, the
history record). This measures that floor against a trivial ASGI echo server (uvicorn
in its own OS process, answering every POST with a fixed chat completion): the server
puts its own handling time in ``x-server-ns``, so ``client time - server time`` is what
the harness (and loopback, and uvicorn's HTTP layer) added.

The client is the agents' own path: ``harness.agents._clients.HttpxClient.chat`` plus one
``History.invoke`` / ``History.ok`` pair per request, as an agent turn records it; open
loop at ``--rates`` requests/s (Poisson-free, evenly spaced) with up to ``--concurrency``
in flight, one event loop, one process. Per rate it prints achieved turns/s, the
client's CPU ms per request (process time / requests: what one core can drive is
``1000 / cpu_ms``), and the gap p50/p99 in ms.

Goals: >= 2,000 turns/s per core driven (cpu_ms <= 0.5), gap < 1 ms at p99 while the
server is not saturated. The box is shared: the load average is printed with each run.

Run: ``.venv/bin/python bench/bench_harness.py [--rates 200,500,1000,2000] [--seconds 3] [--profile 14]``
Not part of the test suite; it prints figures (bench/results_harness.md).
"""

from __future__ import annotations

import argparse
import asyncio
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
)
from harness.history import History  # noqa: E402
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_echo(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    (tmp / "echo_app.py").write_text(ECHO)
    cmd = [sys.executable, "-m", "uvicorn", "echo_app:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=tmp)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
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


async def drive(url: str, rate: float, seconds: float, concurrency: int, kind: str, pool: str) -> dict[str, Any]:
    client = make(kind, pool)
    history = History(LoopClock())
    history.now()
    sem = asyncio.Semaphore(concurrency)
    gaps: list[float] = []
    body = {"model": "fake", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 8}

    async def one(i: int) -> None:
        async with sem:
            op = history.invoke(process=f"a{i % concurrency}", f="chat", session="s", server=url, turn=i)
            t0 = time.perf_counter_ns()  # seam-ok: bench tooling
            reply = await client.chat(url, "s", body, {})
            client_ns = time.perf_counter_ns() - t0
            history.ok(op, status=reply.status)
            server_ns = int(dict(reply.header_pairs).get("x-server-ns", "0"))
            gaps.append((client_ns - server_ns) / 1e6)

    # warm the connection pool and the code paths before measuring
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    gaps.clear()
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
    await client.aclose()
    return {
        "client": kind,
        "pool": pool if kind != "aiohttp" else "aiohttp",
        "load": os.getloadavg()[0],
        "offered": rate,
        "achieved": n / wall,
        "cpu_ms_per_req": 1000.0 * cpu / n,
        "cpu_fraction": cpu / wall,
        "gap_p50_ms": _p(gaps, 0.5),
        "gap_p99_ms": _p(gaps, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="200,500,1000,2000,4000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--client", default="httpx", help="httpx, openai or aiohttp (comma-separated: each in turn)")
    ap.add_argument(
        "--pool",
        default="fast",
        help="fast (the agents' pool, harness/agents/_pool.py), httpcore (httpcore's own: the before), or both",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", type=int, metavar="N", help="cProfile the first rate; print the top N functions")
    args = ap.parse_args()
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_echo(port, Path(tmp))
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"# echo ASGI server (uvicorn), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print(
                "client   pool      load  offered/s  achieved/s  cpu_ms/req  turns/s/core  harness_cpu  "
                "gap_p50_ms  gap_p99_ms"
            )
            pools = ["httpcore", "fast"] if args.pool == "both" else [args.pool]
            for rate in (float(r) for r in args.rates.split(",")):
                for kind in args.client.split(","):
                    for pool in pools if kind != "aiohttp" else ["fast"]:
                        run = drive(url, rate, args.seconds, args.concurrency, kind, pool)
                        if args.profile:
                            import cProfile
                            import pstats

                            prof = cProfile.Profile()
                            r = prof.runcall(asyncio.run, run)
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
                            f"{r['gap_p50_ms']:10.2f}  {r['gap_p99_ms']:10.2f}"
                        )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
