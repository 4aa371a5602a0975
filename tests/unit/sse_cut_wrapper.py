"""The reference server, except that its streamed answers lose the ``data: [DONE]`` terminator.

For ``--target asgi:sse_cut_wrapper:create_app`` in simulation: a server bug that a lenient client
never notices and a strict OpenAI streaming client does (tests/unit/test_agents_sse.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from reference_impl import ServerConfig
from reference_impl import create_app as create_reference

Message = MutableMapping[str, Any]


class CutDone:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.state = getattr(inner, "state", None)

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        streamed = False

        async def cut(msg: Message) -> None:
            nonlocal streamed
            if msg["type"] == "http.response.start":
                streamed = any(k == b"content-type" and b"event-stream" in v for k, v in msg.get("headers", []))
                if streamed:  # the length changes with the body
                    msg = {**msg, "headers": [(k, v) for k, v in msg["headers"] if k != b"content-length"]}
            elif msg["type"] == "http.response.body" and streamed:
                msg = {**msg, "body": msg.get("body", b"").replace(b"data: [DONE]\n\n", b"")}
            await send(msg)

        await self.inner(scope, receive, cut)


def create_app(
    *,
    backend_url: str,
    backend_transport: Any,
    clock: Any,
    ids: Any,
    executor: Any,
    log_sink: Any,
    pid: int,
    worker_port: int,
    variants: frozenset[str] = frozenset(),
) -> CutDone:
    config = ServerConfig(backend_url=backend_url, variants=variants, worker_port=worker_port)
    inner = create_reference(
        config,
        clock=clock,
        ids=ids,
        executor=executor,
        backend_transport=backend_transport,
        log_sink=log_sink,
        pid=pid,
    )
    return CutDone(inner)
