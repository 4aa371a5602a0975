"""Run the server as N independent uvicorn processes, and never leave one behind.

Why processes and not workers of one uvicorn: the deployment under test is N
*independent* servers (own event loop, own port, own sessions, no shared
state, no coordinator). A session lives in the process that created it; a
request sent to another process gets 404. Reproducing multi-process races
needs exactly that shape, so each process is its own ``python -m
reference_impl --processes 1`` child on port ``P + i``.

No orphans. The parent forwards SIGTERM / SIGINT to every child, waits, and
kills what is left. A child also watches its parent's pid: if the parent dies
without cleaning up (SIGKILL, a crash), ``getppid()`` changes and the child
shuts itself down. A leaked server process would hold its port and make the
next run's multi-process test talk to a stale server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

__all__ = ["build_parser", "main", "serve_main"]


def build_parser(prog: str = "python -m reference_impl") -> argparse.ArgumentParser:
    from .config import VARIANTS

    variants = "; ".join(f"{name}: {doc}" for name, doc in VARIANTS.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description="The reference session server (TITO chat proxy with a three-phase split lock).",
        epilog=f"variants: {variants}",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="first port; process i listens on PORT+i")
    p.add_argument("--backend-url", required=True, help="SGLang (or fake SGLang) base URL")
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME|DIR",
        help="shipped tokenizer (chatml, reasoning, tools, headers, trail) or local HF tokenizer dir; default chatml",
    )
    p.add_argument("--variant", action="append", default=[], metavar="NAME", help="enable a variant (repeatable)")
    p.add_argument("--processes", type=int, default=1, help="number of independent server processes")
    p.add_argument("--log-file", default=None, help="append log lines here (default: stderr)")
    p.add_argument(
        "--log-format",
        default="json",
        choices=("json", "text"),
        help="json: one object per line; text: Python-logging prefix + key=value, as production servers print",
    )
    p.add_argument("--heartbeat-interval", type=float, default=30.0, help="seconds between heartbeat lines")
    p.add_argument("--no-tokenize-thread", action="store_true", help="tokenize on the event loop, not in a thread")
    p.add_argument("--max-trim-tokens", type=int, default=2, help="prefix-invariant tolerance in tokens")
    p.add_argument("--backend-timeout", type=float, default=600.0, help="seconds before a backend call fails")
    p.add_argument("--max-body-bytes", type=int, default=None, help="request body limit in bytes (default 4 MiB)")
    p.add_argument("--max-json-depth", type=int, default=None, help="JSON nesting limit (default 64)")
    p.add_argument(
        "--passthrough-path",
        action="append",
        default=None,
        metavar="PATH",
        help="backend path reachable through /sessions/{id}/PATH (repeatable, replaces the default allowlist; "
        "'/prefix/*' allows everything below /prefix/)",
    )
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    return p


def _config(args: argparse.Namespace, port: int) -> Any:
    from .config import ServerConfig

    return ServerConfig(
        backend_url=args.backend_url,
        tokenizer=args.tokenizer,
        variants=frozenset(args.variant),
        max_trim_tokens=args.max_trim_tokens,
        worker_port=port,
        heartbeat_interval=args.heartbeat_interval,
        tokenize_in_thread=not args.no_tokenize_thread,
        backend_timeout=args.backend_timeout,
        **_limits(args),
    )


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.max_body_bytes is not None:
        out["max_body_bytes"] = args.max_body_bytes
    if args.max_json_depth is not None:
        out["max_json_depth"] = args.max_json_depth
    if args.passthrough_path is not None:
        out["passthrough_paths"] = tuple(args.passthrough_path)
    return out


async def _watch_parent(server: Any, parent_pid: int) -> None:
    while not server.should_exit:
        await asyncio.sleep(0.5)
        if os.getppid() != parent_pid:
            server.should_exit = True


async def _announce(server: Any, url: str) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.05)
    print(url, flush=True)


def run_one(args: argparse.Namespace) -> int:
    """One server process in this process (uvicorn handles SIGTERM / SIGINT itself)."""
    import uvicorn

    from .app import create_app
    from .logs import make_sink

    sink = make_sink(args.log_format, path=args.log_file, stream=None if args.log_file else sys.stderr)
    app = create_app(_config(args, args.port), log_sink=sink)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        backlog=4096,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        tasks = []
        if args.parent_pid is not None:
            tasks.append(asyncio.create_task(_watch_parent(server, args.parent_pid)))
        else:
            tasks.append(asyncio.create_task(_announce(server, f"http://{args.host}:{args.port}")))
        try:
            await server.serve()
        finally:
            for t in tasks:
                t.cancel()

    asyncio.run(serve())
    sink.close()
    return 0 if server.started else 1


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _stop(children: list[subprocess.Popen[bytes]], grace_s: float = 8.0) -> None:
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    for c in children:
        try:
            c.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def run_many(args: argparse.Namespace, argv: list[str]) -> int:
    """N children on PORT..PORT+N-1; print their URLs; stop them all on SIGTERM / SIGINT."""
    stop = {"signal": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    base = [a for a in _strip(argv, "--processes", "--port", "--parent-pid")]
    children: list[subprocess.Popen[bytes]] = []
    ports = [args.port + i for i in range(args.processes)]
    try:
        for port in ports:
            cmd = [sys.executable, "-m", "reference_impl", *base, "--port", str(port), "--processes", "1"]
            cmd += ["--parent-pid", str(os.getpid())]
            children.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
        pending = set(ports)
        for _ in range(1200):  # up to ~60 s for every child to listen
            if stop["signal"] or any(c.poll() is not None for c in children):
                break
            pending = {p for p in pending if not _port_open(args.host, p)}
            if not pending:
                break
            time.sleep(0.05)
        if pending or stop["signal"]:
            if not stop["signal"]:
                print(f"reference_impl: processes on ports {sorted(pending)} did not start", file=sys.stderr)
            return 0 if stop["signal"] else 1
        for port in ports:
            print(f"http://{args.host}:{port}", flush=True)
        while not stop["signal"]:
            dead = [c for c in children if c.poll() is not None]
            if dead:
                print(f"reference_impl: child pid {dead[0].pid} exited with {dead[0].returncode}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        return 0
    finally:
        _stop(children)


def _strip(argv: list[str], *options: str) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in options:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def serve_main(argv: list[str] | None = None) -> int:
    """``harness serve``: the same launcher, its help naming the command the user typed."""
    return main(argv, prog="harness serve")


def main(argv: list[str] | None = None, prog: str = "python -m reference_impl") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    from harness.tokenizer import TokenizerError, load_tokenizer, resolve_tokenizer

    from .config import VariantError

    try:
        _config(args, args.port)
        if args.processes < 1:
            raise ValueError(f"--processes must be >= 1, got {args.processes}")
        resolve_tokenizer(args.tokenizer)  # a bad name or folder exits 2 before any process starts
        if args.processes == 1 or args.parent_pid is not None:
            load_tokenizer(args.tokenizer)
    except (VariantError, TokenizerError, ValueError) as exc:
        print(f"reference_impl: {exc}", file=sys.stderr)
        return 2
    if args.processes == 1:
        return run_one(args)
    return run_many(args, argv)
