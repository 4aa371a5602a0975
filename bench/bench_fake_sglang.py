"""Benchmark: requests/s the fake SGLang serves over loopback at zero latency, and CPU per request.

Why: the fake must never be what limits a run (issue 2 aims at >= 2,000 req/s
on one core). The server runs as its own uvicorn process (``harness
fake-sglang``); the load comes from a separate client process (aiohttp, 32
concurrent connections) so the client does not steal the server's core. CPU
per request is read from the server process with psutil, so the figure holds
whatever the client costs: ``1 / cpu_per_request`` is the one-core capacity.

Run: ``.venv/bin/python bench/bench_fake_sglang.py [--seconds 10] [--concurrency 32]``.
Not part of the test suite; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake exited early with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("fake did not become healthy")


def _client(url: str, seconds: float, concurrency: int, prompt_tokens: int, path: str, out: Any) -> None:
    import aiohttp

    async def run() -> dict[str, Any]:
        ids = [(i * 7) % 1000 + 10 for i in range(prompt_tokens)]
        stop_at = time.monotonic() + seconds
        counts = {"ok": 0, "err": 0}
        lat: list[float] = []

        async def worker(w: int, session: aiohttp.ClientSession) -> None:
            turn = 0
            while time.monotonic() < stop_at:
                body = {"input_ids": ids, "max_tokens": 64} if path == "chat" else {"input_ids": ids}
                headers = {"x-smg-routing-key": f"s{w}", "x-turn": str(turn), "x-attempt": "0"}
                t0 = time.perf_counter()
                target = "/v1/chat/completions" if path == "chat" else "/generate"
                async with session.post(url + target, data=json.dumps(body), headers=headers) as r:
                    await r.read()
                    counts["ok" if r.status == 200 else "err"] += 1
                lat.append(time.perf_counter() - t0)
                turn += 1

        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn, headers={"content-type": "application/json"}) as session:
            t0 = time.monotonic()
            await asyncio.gather(*(worker(w, session) for w in range(concurrency)))
            wall = time.monotonic() - t0
        lat.sort()
        return {
            **counts,
            "wall": wall,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
        }

    out.put(asyncio.run(run()))


_FLOOR_BODY = b'{"choices":[{"message":{"content":"' + b"x" * 560 + b'"}}]}'


async def _floor_app(scope: Any, receive: Any, send: Any) -> None:
    """The floor: a raw ASGI app that reads the body and returns a fixed ~600-byte JSON (no work)."""
    if scope["type"] != "http":
        return
    msg = await receive()
    while msg.get("more_body"):
        msg = await receive()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(_FLOOR_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": hdrs})
    await send({"type": "http.response.body", "body": _FLOOR_BODY})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--path", choices=["chat", "generate"], default="chat")
    ap.add_argument("--http", default="auto", help="uvicorn protocol for the fake (auto, h11, httptools)")
    ap.add_argument("--profile", default=None, help="py-spy profile of the server: .svg flame graph, .txt stacks")
    ap.add_argument("--floor", action="store_true", help="serve a no-op ASGI app instead: uvicorn's own cost")
    ap.add_argument("--serve-floor", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_floor is not None:
        import uvicorn

        uvicorn.run(_floor_app, host="127.0.0.1", port=args.serve_floor, log_level="warning", lifespan="off")
        return 0

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "harness.cli", "fake-sglang", "--port", str(port), "--seed", "1", "--http", args.http]
    if args.floor:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    spy: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(url, proc)
        # Warm up (first requests pay for imports and caches).
        warm: mp.Queue[Any] = mp.Queue()
        _client(url, 1.0, 4, args.prompt_tokens, args.path, warm)
        warm.get()
        sp = psutil.Process(proc.pid)
        if args.profile:
            spy_bin = Path(sys.executable).with_name("py-spy")
            fmt = ["--format", "raw"] if args.profile.endswith((".txt", ".folded")) else []
            duration = str(int(args.seconds) + 1)
            spy_cmd = [str(spy_bin), "record", "-p", str(proc.pid), "-o", args.profile, "-d", duration, *fmt]
            spy = subprocess.Popen(spy_cmd)
            time.sleep(1.0)
        cpu0 = sp.cpu_times()
        q: mp.Queue[Any] = mp.Queue()
        load = (url, args.seconds, args.concurrency, args.prompt_tokens, args.path, q)
        client = mp.Process(target=_client, args=load)
        client.start()
        res = q.get()
        client.join()
        cpu1 = sp.cpu_times()
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        n = res["ok"] + res["err"]
        what = "FLOOR (no-op ASGI app)" if args.floor else "fake SGLang"
        print(f"{what} bench: path={args.path} concurrency={args.concurrency} prompt_tokens={args.prompt_tokens}")
        print(f"  requests          {n} ({res['err']} non-200) in {res['wall']:.2f} s")
        print(f"  throughput        {n / res['wall']:.0f} req/s over loopback")
        print(f"  client latency    p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms")
        print(f"  server CPU        {cpu:.2f} s = {cpu / n * 1e6:.0f} us/request")
        print(f"  one-core capacity {n / cpu:.0f} req/s (1 / CPU per request)")
        if spy is not None:
            spy.wait(timeout=60)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
