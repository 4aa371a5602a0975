"""A session server that differs from ours only where the protocol (CONTEXT.md) allows it to.

An ASGI wrapper around the reference app, for ``--target asgi:protocol_wrapper:create_app`` in
simulation: the same three-phase chat, TITO and DELETE semantics, but

- ``GET /sessions/{id}`` names the token ids ``metadata.accumulated_token_ids`` (not ``token_ids``),
  returns no stored ``messages``, no ``num_assistant`` / ``checkpoints``, and records without our
  extras: no ``caller_request_id`` / ``req_id`` echo, no ``turn`` / ``attempt``, no ``kind``
  (a provisional record is told by its aborted answer);
- there is no ``/stats``.

Checkers that assume only the protocol give it the verdicts they give ours; the known-bad variants
(``variants=...``) behind the same wrapper must still be flagged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from harness.coverage._bugs import reference_app  # the seam list the sim's asgi: factory offers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

SESSION_GET = re.compile(r"^/sessions/[^/]+/?$")
RECORD_EXTRAS = ("caller_request_id", "req_id", "turn", "attempt", "kind")


def reshape(body: dict[str, Any]) -> dict[str, Any]:
    """Our GET body as the other server shapes it."""
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    out_meta = {"accumulated_token_ids": meta.get("token_ids", [])}
    records = [{k: v for k, v in r.items() if k not in RECORD_EXTRAS} for r in body.get("records") or []]
    return {"session_id": body.get("session_id"), "records": records, "metadata": out_meta}


class ProtocolWrapper:
    def __init__(self, inner: ASGI) -> None:
        self.inner = inner
        self.state = getattr(inner, "state", None)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path.rstrip("/") == "/stats":
            body = json.dumps({"error": {"type": "NotFound", "message": "no such endpoint"}}).encode()
            await send({"type": "http.response.start", "status": 404, "headers": _headers(len(body))})
            await send({"type": "http.response.body", "body": body})
            return
        if method != "GET" or not SESSION_GET.match(path):
            await self.inner(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                start.update(msg)
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        await self.inner(scope, receive, capture)
        raw = b"".join(chunks)
        if start.get("status") == 200:
            raw = json.dumps(reshape(json.loads(raw))).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": raw})


def _headers(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(n).encode())]


def create_app(**kw: Any) -> ProtocolWrapper:
    return ProtocolWrapper(reference_app(**kw))
