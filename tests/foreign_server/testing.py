"""Run the foreign server and a fake SGLang on loopback sockets inside the test's own event loop.

No subprocess and no thread: the fake (an ASGI app) runs under ``uvicorn.Server.serve()`` and
the foreign server under aiohttp's ``AppRunner``, both on free 127.0.0.1 ports, both stopped on
exit. What a test sees over those sockets is what the harness sees of a deployed server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.foreign_server.app import Config, create_app
from tests.foreign_server.tokens import Tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    backend_url: str
    urls: list[str] = field(default_factory=list)


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


@contextlib.asynccontextmanager
async def fake_backend(*, seed: int = 0, plan: Any = None, tokenizer: str | None = None) -> AsyncIterator[str]:
    import uvicorn

    from harness.fake_sglang import create_app as fake_app

    port = free_port()
    config = uvicorn.Config(
        fake_app(seed=seed, plan=plan, tokenizer=tokenizer),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def foreign_servers(
    backend_url: str, *, processes: int = 1, bugs: Iterable[str] = (), seed: int = 0, tokenizer: str | None = None
) -> AsyncIterator[list[str]]:
    from harness.tokenizer import load_tokenizer

    tokens = Tokens(load_tokenizer(tokenizer))
    runners: list[web.AppRunner] = []
    urls: list[str] = []
    try:
        for i in range(processes):
            rng = random.Random(seed * 100 + i)
            port = free_port()
            app = create_app(
                Config(backend_url=backend_url, worker_port=port, bugs=frozenset(bugs)),
                tokens,
                new_id=lambda n, rng=rng: rng.randbytes(n).hex(),  # type: ignore[misc]
                wall=asyncio.get_running_loop().time,
                offload=_inline,
            )
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", port).start()
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for r in runners:
            await r.cleanup()


@contextlib.asynccontextmanager
async def deployment(
    *, processes: int = 1, bugs: Iterable[str] = (), seed: int = 0, plan: Any = None, tokenizer: str | None = None
) -> AsyncIterator[Deployment]:
    """A fake SGLang and ``processes`` foreign servers, sharing one tokenizer (a shipped family name, or a dir)."""
    async with (
        fake_backend(seed=seed, plan=plan, tokenizer=tokenizer) as backend,
        foreign_servers(backend, processes=processes, bugs=bugs, seed=seed, tokenizer=tokenizer) as urls,
    ):
        yield Deployment(backend, urls)
