"""The openai SDK agent's streamed chat: ``chat.completions.create(stream=True)``, read through the SDK.

A rollout worker that streams with the SDK sees only what the SDK's
``AsyncStream`` yields: ``ChatCompletionChunk`` objects, folded by the caller
(content deltas joined, tool-call deltas merged by ``index``, the last
``finish_reason``, ``usage`` when a chunk carries it). The agent records that
fold, so a stream the SDK reads differently from the raw text shows in the
history as the SDK user would have had it.

The SDK is lenient where the OpenAI streaming rules are not: it stops at
``data: [DONE]`` but a stream that simply ends is accepted as complete, and
a chunk of the wrong shape is built without validation. So the bytes the SDK
read are also kept (a tap on the response stream, which sees the bytes the
SDK drains after ``[DONE]`` too) and held to the same rules as the httpx
agent's (:func:`harness.agents._episode.sse_problems`): a missing terminator
or a malformed chunk is recorded in ``framing.sse_errors``, which
``http_framing`` flags. When the SDK itself gives up on the stream (a chunk
that is not JSON, an ``error`` event), that is recorded as the client's error
and as a stream violation; the terminator is then not judged (the SDK stopped
reading before it).

Transport failures mid-stream (``APIConnectionError``, ``APITimeoutError``)
are left to the caller, which maps them as for a non-streamed chat.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from harness.agents._clients import REQUEST_PROGRESS, Reply, _trace_extensions

__all__ = ["fold_chunks", "read_stream", "trace_request"]

_TERMINATOR = "missing the data: [DONE] terminator"


async def trace_request(request: httpx2.Request) -> None:
    """An ``httpx2`` request hook: the SDK's requests report ``sent`` as the httpx agent's do."""
    if REQUEST_PROGRESS.get() is not None:
        ext = _trace_extensions()
        if ext is not None:
            request.extensions = {**request.extensions, **ext}


class _Tap(httpx2.AsyncByteStream):
    """The response's raw byte stream, with every byte kept as it goes by.

    One pass over the wire, however often it is iterated: the SDK's drain after
    ``[DONE]`` continues where its decoder stopped, as on a socket (an
    in-process body could otherwise be replayed from the start).
    """

    def __init__(self, inner: Any, into: bytearray) -> None:
        self.inner = inner
        self.into = into
        self._wire: AsyncIterator[bytes] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._wire is None:
            self._wire = self.inner.__aiter__()
        async for part in self._wire:
            self.into += part
            yield part

    async def aclose(self) -> None:
        await self.inner.aclose()


def _decoded(resp: httpx2.Response, raw: bytes) -> bytes:
    """``raw`` (the bytes on the wire) with the response's content-coding undone, as the SDK read them."""
    from httpx2._decoders import SUPPORTED_DECODERS

    codings = [c.strip().lower() for c in resp.headers.get("content-encoding", "").split(",") if c.strip()]
    out = raw
    for c in reversed(codings):
        if c == "identity":
            continue
        decoder = SUPPORTED_DECODERS.get(c)
        if decoder is None:
            return raw
        d = decoder()
        out = b"".join([*d.decode(out), *d.flush()])
    return out


def fold_chunks(chunks: list[Any]) -> dict[str, Any] | None:
    """The SDK's chunks folded the way an SDK user folds them, in the shape of one chat completion."""
    if not chunks:
        return None
    content: list[str] = []
    tools: dict[int, dict[str, Any]] = {}
    finish: Any = None
    usage: Any = None
    for chunk in chunks:
        u = getattr(chunk, "usage", None)
        if u is not None:
            usage = u.model_dump() if hasattr(u, "model_dump") else u
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None)
            if isinstance(text, str):
                content.append(text)
            for tc in getattr(delta, "tool_calls", None) or []:
                i = getattr(tc, "index", None)
                slot = tools.setdefault(i if isinstance(i, int) else len(tools), {"function": {"arguments": ""}})
                if getattr(tc, "id", None):
                    slot["id"] = tc.id
                if getattr(tc, "type", None):
                    slot["type"] = tc.type
                fn = getattr(tc, "function", None)
                name, args = getattr(fn, "name", None), getattr(fn, "arguments", None)
                if name:
                    slot["function"]["name"] = name
                if isinstance(args, str):
                    slot["function"]["arguments"] += args
            finish = getattr(choice, "finish_reason", None) or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if tools:
        message["tool_calls"] = [tools[k] for k in sorted(tools)]
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage, "streamed": True}


async def read_stream(raw: Any) -> Reply:
    """Iterate the SDK's ``AsyncStream`` of a ``with_raw_response`` streamed create; the agent's :class:`Reply`.

    ``body`` is None (an event stream); ``extra["completion"]`` is the SDK fold,
    ``extra["sse_errors"]`` the stream's violations of the streaming rules.
    """
    import openai

    from harness.agents._episode import sse_problems

    resp: httpx2.Response = raw.http_response
    wire = bytearray()
    preread = getattr(resp, "_content", None)  # an in-process bridge hands over a buffered body
    if preread is None:
        resp.stream = _Tap(resp.stream, wire)
    chunks: list[Any] = []
    error: str | None = None
    try:
        async for chunk in raw.parse():
            chunks.append(chunk)
    except openai.APIConnectionError:  # the transport failed (timeouts included): the caller's business
        raise
    except Exception as exc:  # the SDK refused the stream: a client-visible failure
        error = f"openai SDK could not read the stream: {type(exc).__name__}: {exc}"
    data = bytes(preread) if preread is not None else _decoded(resp, bytes(wire))
    text = data.decode("utf-8", "replace")
    try:
        as_json = json.loads(data) if data.strip() else None
    except ValueError:
        as_json = None
    if isinstance(as_json, dict):
        problems = ["stream=true answered with a JSON body, not an event stream"]
    else:
        problems = sse_problems(text)
    if error is not None:
        problems = [p for p in problems if p != _TERMINATOR] + [error]
    folded = fold_chunks(chunks)
    finish = folded["choices"][0]["finish_reason"] if folded else None
    return Reply(
        status=int(resp.status_code),
        header_pairs=[(str(k).lower(), str(v)) for k, v in resp.headers.multi_items()],
        body=None,
        text=text,
        body_bytes=len(data),
        error=error,
        extra={"completion": folded, "sse_errors": problems, "sdk_finish_reason": finish, "streamed": True},
    )
