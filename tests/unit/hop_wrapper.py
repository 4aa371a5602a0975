"""The reference server behind a careless proxy layer that forwards its upstream's connection fields.

For ``--target asgi:hop_wrapper:create_app`` in simulation (tests/unit/test_framing_sim.py): every
chat reply gains the ``keep-alive`` and ``proxy-connection`` fields a front end in front of the
backend sent on *its* connection, which no HTTP/1.1 client parser rejects: only http_framing's
hop-by-hop rule (RFC 9110 7.6.1) can tell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from protocol_wrapper import reference_app

Message = MutableMapping[str, Any]
FORWARDED = [(b"keep-alive", b"timeout=5, max=100"), (b"proxy-connection", b"keep-alive")]


class ForwardHopByHop:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.state = getattr(inner, "state", None)

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        chat = scope.get("type") == "http" and str(scope.get("path", "")).endswith("/chat/completions")

        async def forward(msg: Message) -> None:
            if chat and msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *FORWARDED]}
            await send(msg)

        await self.inner(scope, receive, forward)


def create_app(**kw: Any) -> ForwardHopByHop:
    return ForwardHopByHop(reference_app(**kw))
