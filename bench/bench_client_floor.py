"""Benchmark: the floor under the agents' httpx client, in CPU microseconds per request.

Why (issue 15): after the O(1) pool, what is left of a request's cost? Two
floors, one request at a time: ``HttpxClient.chat`` on a transport that returns
a canned response (httpx's own client layer, no network, no h11), and a bare
asyncio-streams client doing the HTTP exchange with the echo server of
bench_harness.py (the event loop and the loopback socket, no HTTP library).

Run: ``.venv/bin/python bench/bench_client_floor.py [--n 5000]``
Not part of the test suite; it prints figures (bench/results_harness.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_harness  # noqa: E402

from harness.agents._clients import HttpxClient  # noqa: E402

BODY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}).encode()
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 8}


class Canned(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return httpx.Response(200, headers=[("content-type", "application/json")], content=BODY)


async def canned(n: int) -> float:
    c = HttpxClient(Canned())
    t0 = time.process_time()
    for _ in range(n):
        await c.chat("http://127.0.0.1:1", "s", CHAT, {})
    return (time.process_time() - t0) / n * 1e6


async def raw(port: int, n: int) -> float:
    body = json.dumps(CHAT).encode()
    req = b"POST /sessions/s/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    req += b"content-length: %d\r\n\r\n" % len(body) + body
    r, w = await asyncio.open_connection("127.0.0.1", port)

    async def one() -> None:
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await r.readexactly(length)

    for _ in range(100):
        await one()
    t0 = time.process_time()
    for _ in range(n):
        await one()
    w.close()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"HttpxClient.chat on a canned transport: {asyncio.run(canned(args.n)):.0f} us CPU/req")
    port = bench_harness.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = bench_harness.start_echo(port, Path(tmp))
        try:
            print(f"bare asyncio streams vs the echo server: {asyncio.run(raw(port, args.n)):.0f} us CPU/req")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
