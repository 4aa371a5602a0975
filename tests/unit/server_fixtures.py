"""Helpers for the reference server's HTTP-level tests: an in-process server wired to a backend.

``make_rig`` builds the server app with a seeded id source, a list log sink,
an executor that can be parked (to hold Phase 1 or 3 under the lock at an
exact point) and an ASGI transport to either the controllable backend
(server_backend.py) or the real fake SGLang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from server_backend import ControlBackend

from harness.seams import IdSource
from reference_impl import ServerConfig, create_app
from reference_impl.app import SessionServer
from reference_impl.logs import ListSink

T = TypeVar("T")

SYSTEM = {"role": "system", "content": "You are a careful agent."}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


class GateExecutor:
    """Inline executor that, when ``hold`` is set, parks each call until ``release`` is set."""

    def __init__(self) -> None:
        self.hold = False
        self.release = asyncio.Event()
        self.waiting = 0

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        if self.hold:
            self.waiting += 1
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1
        return fn(*args)

    async def wait_parked(self, n: int = 1) -> None:
        while self.waiting < n:  # noqa: ASYNC110 - polling a counter the test owns
            await asyncio.sleep(0)


@dataclass
class Rig:
    server: SessionServer
    client: httpx.AsyncClient
    logs: ListSink
    backend: ControlBackend | None
    executor: GateExecutor
    turn: dict[str, int] = field(default_factory=dict)

    async def new_session(self) -> str:
        r = await self.client.post("/sessions")
        assert r.status_code == 200, r.text
        return str(r.json()["session_id"])

    async def chat(
        self, sid: str, messages: list[dict[str, Any]], *, headers: dict[str, str] | None = None, **body: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/sessions/{sid}/v1/chat/completions", json={"model": "m", "messages": messages, **body}, headers=headers
        )

    async def get(self, sid: str) -> httpx.Response:
        return await self.client.get(f"/sessions/{sid}")

    async def state(self, sid: str) -> dict[str, Any]:
        r = await self.get(sid)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def done(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs.events("chat_done") if all(e.get(k) == v for k, v in match.items())]


@contextlib.asynccontextmanager
async def make_rig(
    *variants: str,
    backend_app: Any = None,
    transport: httpx.AsyncBaseTransport | None = None,
    seed: int = 7,
    **config: Any,
) -> AsyncIterator[Rig]:
    """The server under test; ``backend_app`` (an ASGI app) replaces the controllable backend."""
    backend: ControlBackend | None = None
    if transport is None:
        if backend_app is None:
            backend = ControlBackend()
            backend_app = backend.app
        transport = httpx.ASGITransport(app=backend_app)
    logs = ListSink()
    executor = GateExecutor()
    cfg = ServerConfig(backend_url="http://backend", variants=frozenset(variants), worker_port=9999, **config)
    app = create_app(cfg, ids=IdSource(seed), executor=executor, backend_transport=transport, log_sink=logs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server") as client:
        try:
            yield Rig(app.state.server, client, logs, backend, executor)
        finally:
            await app.state.server.aclose()


async def lock_queue(server: SessionServer, sid: str, n: int) -> None:
    """Until ``n`` coroutines wait on the session lock."""
    session = server.store.get(sid)
    assert session is not None
    while len(getattr(session.lock, "_waiters", None) or ()) < n:  # noqa: ASYNC110 - no event for lock waiters
        await asyncio.sleep(0)


async def hold_in_proxy(r: Rig, sid: str, messages: list[dict[str, Any]], **kw: Any) -> asyncio.Task[httpx.Response]:
    assert r.backend is not None
    r.backend.hold = True
    task = asyncio.create_task(r.chat(sid, messages, **kw))
    await r.backend.wait_entered(1)
    return task
