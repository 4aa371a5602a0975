"""A tiny, controllable SGLang stand-in for the reference server's interleaving tests.

Why not only the real fake: interleaving tests need to *hold* a backend call
open at an exact point (a DELETE runs while the proxy phase is in flight) and
to release it on cue. This backend parks each call on an ``asyncio.Event``
when ``hold`` is set, and records every request it saw (headers, body) and
every ``/abort_request``. Answers are SGLang-shaped and built with the shipped
tokenizer, so completion tokens decode to the content.

Behaviour per call: ``script`` (a list consumed front to back) or the
``x-test-mode`` request header: ``stop`` (default), ``abort``, ``length``,
``tool``, ``no_meta``, ``null_content``, ``count_mismatch``, ``not_json``,
``status:<code>``, ``transport`` (raises ``httpx.ConnectError`` inside the
app, which an ASGI transport surfaces as a transport error), ``prompt_ids``
(reports corrupted prompt token ids in meta_info).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from harness.tokenizer import load_tokenizer


class ControlBackend:
    def __init__(self) -> None:
        self.tok = load_tokenizer(None)
        self.im_end = int(self.tok.convert_tokens_to_ids("<|im_end|>"))
        self.calls: list[dict[str, Any]] = []
        self.aborts: list[dict[str, Any]] = []
        self.script: list[str] = []
        self.raw_replies: list[bytes] = []  # bodies answered verbatim (200, JSON) before any mode
        self.hold = False
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.waiting = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/abort_request", self.abort_request, methods=["POST"]),
                Route("/echo/{rest:path}", self.echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ]
        )

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    async def wait_entered(self, n: int = 1) -> None:
        """Until ``n`` calls are parked on the hold gate."""
        while self.waiting < n:  # noqa: ASYNC110 - polling a counter the test owns
            await asyncio.sleep(0)

    async def abort_request(self, request: Request) -> Response:
        self.aborts.append(await request.json())
        return JSONResponse({"ok": True})

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": str(request.url.query),
                "headers": dict(request.headers),
                "body": body.decode(),
            },
            status_code=201,
            headers={"x-upstream": "yes"},
        )

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        n = len(self.calls)
        self.calls.append({"headers": dict(request.headers), "body": body})
        mode = self.script.pop(0) if self.script else request.headers.get("x-test-mode", "stop")
        if self.hold:
            self.waiting += 1
            self.entered.set()
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1
        if mode == "transport":
            raise httpx.ConnectError("connection refused (test)")
        if mode.startswith("status:"):
            code = int(mode.split(":", 1)[1])
            return JSONResponse({"error": {"message": "backend says no", "code": code}}, status_code=code)
        if self.raw_replies:
            return Response(self.raw_replies.pop(0), media_type="application/json")
        if mode == "not_json":
            return Response(b"{not json", media_type="application/json")
        content = f"Answer {n} to turn {request.headers.get('x-turn', '?')}."
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = "stop"
        if mode == "tool":
            message["tool_calls"] = [
                {"id": f"call_{n}", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}
            ]
            finish = "tool_calls"
        body_text = self.tok.apply_chat_template([message], tokenize=False)
        body_text = body_text[len("<|im_start|>assistant\n") : -len("<|im_end|>\n")]
        ids = list(self.tok.encode(body_text, add_special_tokens=False))
        if mode == "abort":
            ids = ids[: max(1, len(ids) // 2)]
            finish = "abort"
            message["content"] = self.tok.decode(ids)
        elif mode == "length":
            ids = ids[:3]
            finish = "length"
            message["content"] = self.tok.decode(ids)
        else:
            ids.append(self.im_end)
        pairs: list[list[float]] = [[-0.5, t] for t in ids]
        meta: dict[str, Any] = {
            "id": f"rid-{n}",
            "prompt_tokens": len(body["input_ids"]),
            "completion_tokens": len(ids),
            "finish_reason": {"type": finish},
            "output_token_logprobs": pairs,
        }
        if mode == "no_meta":
            meta = {}
        elif mode == "count_mismatch":
            meta["completion_tokens"] += 1
        elif mode == "null_content":
            message["content"] = None
        elif mode == "prompt_ids":
            meta["prompt_token_ids"] = [0] * len(body["input_ids"])
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if meta:
            choice["meta_info"] = meta
        data = {
            "id": f"rid-{n}",
            "object": "chat.completion",
            "created": 0,
            "model": "control",
            "choices": [choice],
            "usage": {"prompt_tokens": len(body["input_ids"]), "completion_tokens": len(ids)},
        }
        return Response(
            json.dumps(data).encode(),
            media_type="application/json",
            headers={"server": "control-backend", "date": "Thu, 01 Jan 1970 00:00:00 GMT"},
        )
