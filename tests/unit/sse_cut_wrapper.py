"""The reference server, except that its streamed answers lose the ``data: [DONE]`` terminator.

For ``--target asgi:sse_cut_wrapper:create_app`` in simulation: a server bug that a lenient client
never notices and a strict OpenAI streaming client does (tests/unit/test_agents_sse.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from protocol_wrapper import reference_app

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


def create_app(**kw: Any) -> CutDone:
    return CutDone(reference_app(**kw))
