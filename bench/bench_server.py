"""Benchmark: turns/s and per-turn p50/p99 of the reference session server over loopback.

Workload (issue 3): 16 concurrent sessions x 8 turns each (create, 8 chat turns
whose history grows, delete), repeated ``--rounds`` times, against the fake
SGLang at zero latency, for 1 and 2 server processes, with tokenization in a
worker thread and inline. Every process is its own OS process: the fake, the
server (``python -m reference_impl --processes N``) and the load client
(aiohttp, in a ``multiprocessing`` child) so the client does not share an
event loop with what it measures.

Wall-clock turns/s on a shared 2-core machine measures the machine as much as
the server (the fake and the client run on the same cores), so the server's
own CPU time is read with psutil too: ``turns / server CPU seconds`` is the
one-core capacity of a server process, the figure to compare with the
>= 500 turns/s per process target.

Per tokenizer family (``--tokenizers``, default every shipped one): the fake
and the server both run on that family, and each line shows the server's own
tokenization time per turn (``tokenize_in_ms + tokenize_out_ms`` of
``chat_done``, p50 and p99) next to turns/s, so a family whose template makes
TITO expensive shows up.

Run: ``.venv/bin/python bench/bench_server.py [--rounds 8] [--configs 1:thread,1:inline,2:thread,2:inline]
[--tokenizers chatml,reasoning,tools,headers,trail]``
``--profile out.svg`` records the (first) server process with py-spy during the first config.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def free_port(n: int = 1) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for i in range(1, n):
                with socket.socket() as s2:
                    s2.bind(("127.0.0.1", port + i))
        except OSError:
            continue
        return port
    raise RuntimeError("no free ports")


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def _client(urls: list[str], sessions: int, turns: int, rounds: int, out: Any) -> None:
    import aiohttp

    async def run() -> dict[str, Any]:
        lat: list[float] = []
        errors: dict[int, int] = {}

        async def episode(i: int, r: int, http: aiohttp.ClientSession) -> None:
            base = urls[i % len(urls)]
            async with http.post(f"{base}/sessions") as resp:
                sid = (await resp.json())["session_id"]
            msgs: list[dict[str, Any]] = [
                {"role": "system", "content": "You are a helpful agent solving a task step by step."},
                {"role": "user", "content": f"Episode {r}-{i}: find the answer to question {i}."},
            ]
            for turn in range(turns):
                headers = {"x-turn": str(turn), "x-attempt": "0", "x-request-id": f"{r}-{i}-{turn}"}
                body = json.dumps({"model": "m", "messages": msgs, "max_tokens": 32})
                t0 = time.perf_counter()
                async with http.post(f"{base}/sessions/{sid}/v1/chat/completions", data=body, headers=headers) as resp:
                    data = await resp.read()
                    status = resp.status
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1
                    break
                msgs.append(json.loads(data)["choices"][0]["message"])
                msgs.append({"role": "user", "content": f"Tool result {turn}: value {turn * 7 + i}."})
            async with http.delete(f"{base}/sessions/{sid}") as resp:
                await resp.read()

        conn = aiohttp.TCPConnector(limit=sessions * 2)
        async with aiohttp.ClientSession(connector=conn, headers={"content-type": "application/json"}) as http:
            await asyncio.gather(*(episode(i, -1, http) for i in range(sessions)))  # warm-up round
            lat.clear()
            t0 = time.perf_counter()
            for r in range(rounds):
                await asyncio.gather(*(episode(i, r, http) for i in range(sessions)))
            wall = time.perf_counter() - t0
        lat.sort()
        return {
            "turns": len(lat),
            "errors": errors,
            "wall": wall,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        }

    out.put(asyncio.run(run()))


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def run_config(
    fake_url: str, processes: int, thread: bool, args: argparse.Namespace, profile: str | None, tokenizer: str
) -> dict[str, Any]:
    port = free_port(processes)
    fd, log_path = tempfile.mkstemp(prefix="bench_server_", suffix=".jsonl")
    os.close(fd)
    opts = ["--port", str(port), "--processes", str(processes), "--backend-url", fake_url, "--log-file", log_path]
    opts += ["--tokenizer", tokenizer]
    if not thread:
        opts.append("--no-tokenize-thread")
    cmd = [sys.executable, "-m", "reference_impl", *opts]
    if args.switch_interval is not None:  # experiment: GIL hand-off latency to the tokenizer thread (1 process)
        code = f"import sys; sys.setswitchinterval({args.switch_interval}); from reference_impl.launcher import main; "
        code += f"sys.exit(main({opts!r}))"
        cmd = [sys.executable, "-c", code]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
    urls = [f"http://127.0.0.1:{port + i}" for i in range(processes)]
    spy: subprocess.Popen[bytes] | None = None
    try:
        for u in urls:
            wait_http(u + "/health", proc)
        root = psutil.Process(proc.pid)
        servers = root.children(recursive=True) if processes > 1 else [root]
        if profile:
            spy_bin = Path(sys.executable).with_name("py-spy")
            fmt = ["--format", "raw"] if profile.endswith((".txt", ".folded")) else []
            spy = subprocess.Popen([str(spy_bin), "record", "-p", str(servers[0].pid), "-o", profile, *fmt])
            time.sleep(1.0)
        cpu0 = _cpu(servers)
        q: mp.Queue[Any] = mp.Queue()
        client = mp.Process(target=_client, args=(urls, args.sessions, args.turns, args.rounds, q))
        client.start()
        res: dict[str, Any] = q.get()
        client.join()
        res["server_cpu"] = _cpu(servers) - cpu0
        with open(log_path) as f:
            done = [json.loads(line) for line in f if '"chat_done"' in line]
        done = done[-res["turns"] :]
        for bucket in ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms"):
            vals = sorted(d[bucket] for d in done)
            res[bucket] = (vals[len(vals) // 2], vals[min(len(vals) - 1, int(len(vals) * 0.99))])
        tok = sorted(d["tokenize_in_ms"] + d["tokenize_out_ms"] for d in done)
        res["tokenize_ms"] = (tok[len(tok) // 2], tok[min(len(tok) - 1, int(len(tok) * 0.99))], sum(tok) / len(tok))
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(2)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(log_path)
    return res


def tito_cost(family: str, sessions: int, turns: int) -> tuple[float, float]:
    """In-process CPU ms per turn of TITO alone (Phase 1 plan + Phase 3 commit), history growing over ``turns``.

    No sockets, no fake, no event loop: the server's tokenization work per turn
    on this family, mean and p99 over ``sessions`` episodes.
    """
    from harness.tokenizer import load_tokenizer
    from reference_impl.sessions import Session
    from reference_impl.tito import Tito

    tito = Tito(load_tokenizer(family))
    stop = next(i for i, t in tito.special_ids.items() if t in ("<|im_end|>", "<|eot|>"))
    per_turn: list[float] = []
    for s in range(sessions):
        session = Session(f"s{s}")
        msgs: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a helpful agent solving a task step by step."},
            {"role": "user", "content": f"Episode {s}: find the answer to question {s}."},
        ]
        for turn in range(turns):
            reply = {"role": "assistant", "content": f"Step {turn}: I looked at the value and it is {turn * 7 + s}."}
            t0 = time.process_time()
            plan = tito.plan(session.view(), msgs)
            completion = [*tito.encode(str(reply["content"])), stop]
            session.apply(tito.commit(plan, plan.input_ids, completion, reply), plan.base_assistant)
            per_turn.append(time.process_time() - t0)
            msgs = [*msgs, reply, {"role": "user", "content": f"Tool result {turn}: value {turn * 7 + s}."}]
    per_turn.sort()
    return sum(per_turn) / len(per_turn) * 1000, per_turn[int(len(per_turn) * 0.99)] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=8, help="repetitions of the sessions x turns workload")
    ap.add_argument("--configs", default="1:thread,1:inline,2:thread,2:inline", help="processes:thread|inline,...")
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval in the server")
    ap.add_argument("--profile", default=None, help="py-spy output (.svg, or .txt collapsed) for the first config")
    ap.add_argument(
        "--tokenizers",
        default="chatml,reasoning,tools,headers,trail",
        help="tokenizer families (or local tokenizer dirs), comma-separated: one block of configs each",
    )
    args = ap.parse_args(argv)

    print(f"TITO alone, in process: CPU ms per turn (plan + commit), {args.sessions * 8} episodes x {args.turns} turns")
    for family in args.tokenizers.split(","):
        mean, p99 = tito_cost(family, args.sessions * 8, args.turns)
        print(f"{family:>9}  mean {mean:.3f} ms  p99 {p99:.3f} ms", flush=True)
    print(
        f"reference server bench: {args.sessions} sessions x {args.turns} turns x {args.rounds} rounds, "
        f"fake SGLang at zero latency, {os.cpu_count()} cores (shared)"
    )
    header = f"{'tokenizer':>9} {'procs':>5} {'tokenize':>8} {'turns/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
    header += f"{'CPU us/turn':>11} {'turns/CPU-s':>11} {'tok ms/turn mean p50/p99':>24}  "
    header += "server p50/p99 ms: lock_wait tokenize_in proxy tokenize_out total"
    print(header)
    first = True
    for family in args.tokenizers.split(","):
        fake_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_cmd = [sys.executable, "-m", "harness.cli", "fake-sglang", "--port", str(fake_port), "--seed", "1"]
        fake = subprocess.Popen(
            [*fake_cmd, "--tokenizer", family],
            cwd=ROOT,
            env=ENV,
        )
        try:
            wait_http(fake_url + "/health", fake)
            for spec in args.configs.split(","):
                n, mode = spec.split(":")
                res = run_config(fake_url, int(n), mode == "thread", args, args.profile if first else None, family)
                first = False
                turns = res["turns"]
                buckets = "  ".join(
                    f"{res[b][0]:.2f}/{res[b][1]:.2f}"
                    for b in ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
                )
                tok_p50, tok_p99, tok_mean = res["tokenize_ms"]
                err = f" errors={res['errors']}" if res["errors"] else ""
                print(
                    f"{family:>9} {n:>5} {mode:>8} {turns / res['wall']:>8.0f} {res['p50_ms']:>7.2f} "
                    f"{res['p99_ms']:>7.2f} {res['server_cpu'] / turns * 1e6:>11.0f} "
                    f"{turns / res['server_cpu']:>11.0f} "
                    f"{tok_mean:>10.3f} {tok_p50:>6.3f}/{tok_p99:<6.3f}  {buckets}{err}",
                    flush=True,
                )
        finally:
            fake.terminate()
            try:
                fake.wait(timeout=10)
            except subprocess.TimeoutExpired:
                fake.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
