"""Raw ASGI requests for hostile-input tests: any path, any header bytes, any body chunks.

Why not only httpx: an httpx client normalizes what a hostile client would not
(``/./`` and ``/../`` are removed from URLs, header values must be ASCII), so
the cases that broke the servers could not even be sent through it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunks_read: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    app: Any,
    method: str,
    raw_path: bytes | str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    chunks: Sequence[bytes] | None = None,
    query: bytes = b"",
    disconnect: bool = False,
) -> RawResponse:
    """One request straight into an ASGI app, as uvicorn would present it (path percent-decoded).

    ``disconnect``: the client goes away after the last chunk, mid-body (more_body stays true).
    """
    raw = raw_path.encode("latin-1") if isinstance(raw_path, str) else raw_path
    parts = list(chunks) if chunks is not None else [body]
    received: list[int] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw.decode("latin-1")),
        "raw_path": raw,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"server"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        if len(received) < len(parts):
            i = len(received)
            received.append(i)
            return {"type": "http.request", "body": parts[i], "more_body": disconnect or i < len(parts) - 1}
        return {"type": "http.disconnect"}

    status = 0
    out_headers: list[tuple[bytes, bytes]] = []
    out_body: list[bytes] = []

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
            out_headers.extend(msg.get("headers", []))
        elif msg["type"] == "http.response.body":
            out_body.append(msg.get("body", b""))

    await app(scope, receive, send)
    return RawResponse(status, out_headers, b"".join(out_body), len(received))
