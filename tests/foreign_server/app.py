"""The foreign session server's HTTP side: aiohttp.web, one process, sessions in a dict.

Written from CONTEXT.md, not from reference_impl, so the harness is tested
against a server whose names and habits it did not choose: the metadata key
is ``accumulated_token_ids``, records carry no caller request id, there is no
``/stats`` and no stored messages in the GET body, and the log is plain
Python ``logging`` text (``chat_start`` / ``chat_done`` as ``key=value``
pairs after the logging prefix, warnings in free text).

Per chat, the split lock of CONTEXT.md: Phase 1 under the session lock
(closing re-check, parse, rollback, ``input_ids``, remember the commit
count), Phase 2 without it (the backend call), Phase 3 under it again
(closing, the guard, abort -> provisional, else the prefix check and the
commit). The guard compares a commit counter, which also moves when a
rollback leaves ``num_assistant`` where it was.

``bugs`` switches on the known-bad behaviours the proof tests must see
flagged: ``commit_aborted``, ``auto_create``, ``malformed_500``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.foreign_server.tokens import BadMessages, Checkpoint, PrefixBroken, RollbackTooFar, Tokens, clean_messages

BUGS = ("commit_aborted", "auto_create", "malformed_500")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "accept-encoding",
    }
)
PASS_THROUGH = ("v1/", "generate", "health", "get_model_info")

log = logging.getLogger("foreign.sessions")
Offload = Callable[..., Awaitable[Any]]


class Refused(Exception):
    """An answer the server gives itself: status, error type, message, chat_done outcome."""

    def __init__(self, status: int, kind: str, message: str, outcome: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.outcome = outcome


@dataclass
class Session:
    sid: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing: bool = False
    stored: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    commits: int = 0


@dataclass
class Config:
    backend_url: str
    worker_port: int = 0
    bugs: frozenset[str] = frozenset()
    backend_timeout_s: float = 60.0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


def parse_body(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, valid UTF-8 text throughout (no lone surrogates)."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise Refused(
            400, "invalid_request_error", f"body is not valid JSON: {type(exc).__name__}", "bad_request"
        ) from None
    return body


def _kv(event: str, **fields: Any) -> str:
    parts = [event]
    for k, v in fields.items():
        if isinstance(v, float):
            v = f"{v:.3f}"
        parts.append(f"{k}={'-' if v is None else v}")
    return " ".join(parts)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status, headers=headers)


class Server:
    def __init__(
        self,
        config: Config,
        tokens: Tokens,
        *,
        new_id: Callable[[int], str],
        wall: Callable[[], float],
        offload: Offload,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.new_id = new_id
        self.wall = wall
        self.offload = offload
        self.sessions: dict[str, Session] = {}
        self.inflight = 0
        self.http: aiohttp.ClientSession | None = None

    # ----------------------------------------------------------- plumbing

    async def _client(self) -> aiohttp.ClientSession:
        if self.http is None:
            timeout = aiohttp.ClientTimeout(total=self.config.backend_timeout_s)
            self.http = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)
        return self.http

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    def _forward_headers(self, request: web.Request, sid: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in request.headers.items():
            if k.lower() in HOP_BY_HOP or k.lower() == "x-smg-routing-key":
                continue
            try:
                v.encode("latin-1")
            except UnicodeError:
                raise Refused(
                    400, "invalid_request_error", f"header {k!r} cannot be forwarded", "bad_request"
                ) from None
            out[k] = v
        out["X-SMG-Routing-Key"] = sid
        return out

    def _live(self, sid: str) -> Session | None:
        s = self.sessions.get(sid)
        return None if s is None or s.closing else s

    # ----------------------------------------------------------- routes

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_post("/sessions", self.create)
        app.router.add_get("/sessions/{sid}", self.get)
        app.router.add_delete("/sessions/{sid}", self.delete)
        app.router.add_post("/sessions/{sid}/v1/chat/completions", self.chat)
        app.router.add_route("*", "/sessions/{sid}/{tail:.*}", self.passthrough)

        async def closer(_: web.Application) -> None:
            await self.close()

        app.on_cleanup.append(closer)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions_open": len(self.sessions)})

    async def create(self, request: web.Request) -> web.Response:
        sid = self.new_id(16)
        while sid in self.sessions:
            sid = self.new_id(16)
        self.sessions[sid] = Session(sid)
        return web.json_response({"session_id": sid})

    async def get(self, request: web.Request) -> web.Response:
        s = self._live(request.match_info["sid"])
        if s is None:
            return _error(404, "not_found", "no such session")
        last = s.checkpoints[-1].ids if s.checkpoints else ()
        meta = {"accumulated_token_ids": list(last), "assistant_turns": len(s.checkpoints)}
        return web.json_response({"session_id": s.sid, "records": s.records, "metadata": meta})

    async def delete(self, request: web.Request) -> web.Response:
        s = self._live(request.match_info["sid"])
        if s is None:
            return _error(404, "not_found", "no such session (or it is being deleted)")
        s.closing = True
        async with s.lock:  # an in-flight Phase 1 or 3 finishes first
            self.sessions.pop(s.sid, None)
        return web.Response(status=204)

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        sid, tail = request.match_info["sid"], request.match_info["tail"]
        s = self._live(sid)
        if "auto_create" in self.config.bugs and s is None and sid not in self.sessions:
            s = self.sessions[sid] = Session(sid)
        if s is None:
            return _error(404, "not_found", "no such session")
        if not tail.startswith(PASS_THROUGH) or ".." in tail.split("/"):
            return _error(404, "not_found", f"/{tail} is not passed through to the backend")
        url = f"{self.config.backend_url}/{tail}"
        try:
            headers = self._forward_headers(request, sid)
            if request.content_type:
                headers["Content-Type"] = request.content_type
            body = await request.read()
            client = await self._client()
            async with client.request(
                request.method, url, params=request.rel_url.query, data=body, headers=headers
            ) as r:
                data = await r.read()
                return web.Response(status=r.status, body=data, content_type=r.content_type or None)
        except Refused as exc:
            return _error(exc.status, exc.kind, str(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("pass-through to %s failed: %s (proxy_transport_error)", url, type(exc).__name__)
            return _error(502, "bad_gateway", f"backend unreachable: {type(exc).__name__}")

    # ----------------------------------------------------------- chat

    async def chat(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        req_id = self.new_id(4)
        sid = request.match_info["sid"]
        self.inflight += 1
        log.info(
            _kv(
                "chat_start",
                req_id=req_id,
                session_id=sid,
                worker_port=self.config.worker_port,
                caller_request_id=request.headers.get("x-request-id"),
                inflight_now=self.inflight,
            )
        )
        t: dict[str, float] = {"lock_wait_ms": 0.0, "tokenize_in_ms": 0.0, "proxy_elapsed_ms": 0.0}
        t["tokenize_out_ms"] = 0.0
        facts: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
        status, outcome = 500, "error"
        try:
            resp, outcome = await self._chat(request, sid, req_id, t, facts)
            status = resp.status
        except Refused as exc:
            resp, status, outcome = _error(exc.status, exc.kind, str(exc)), exc.status, exc.outcome
        except web.HTTPException as exc:  # aiohttp's own answer (413: a body past client_max_size): log it
            status, outcome = exc.status, "bad_request" if 400 <= exc.status < 500 else "error"
            raise
        finally:
            self.inflight -= 1
            log.info(
                _kv(
                    "chat_done",
                    req_id=req_id,
                    session_id=sid,
                    status=status,
                    outcome=outcome,
                    **{k: round(v, 3) for k, v in t.items()},
                    total_ms=round((loop.time() - t0) * 1000.0, 3),
                    inflight_now=self.inflight,
                    **facts,
                )
            )
        return resp

    async def _chat(
        self, request: web.Request, sid: str, req_id: str, t: dict[str, float], facts: dict[str, Any]
    ) -> tuple[web.StreamResponse, str]:
        loop = asyncio.get_running_loop()
        bugs = self.config.bugs
        s = self._live(sid)
        if s is None and "auto_create" in bugs and sid not in self.sessions:
            s = self.sessions[sid] = Session(sid)  # the known-bad behaviour: deleted ids come back
        if s is None:
            raise Refused(404, "not_found", "no such session", "not_found")
        raw = await request.read()
        if "malformed_500" in bugs:
            body = json.loads(raw)  # the known-bad behaviour: no checks, so bad input raises (500)
            clean_messages(body["messages"])
        else:
            body = parse_body(raw)
        if not isinstance(body, dict):
            raise Refused(400, "invalid_request_error", "body must be a JSON object", "bad_request")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise Refused(400, "invalid_request_error", "stream must be true or false", "bad_request")
        headers = self._forward_headers(request, sid)

        # Phase 1, under the lock.
        started = loop.time()
        async with s.lock:
            t["lock_wait_ms"] = (loop.time() - started) * 1000.0
            if s.closing or self.sessions.get(sid) is not s:
                raise Refused(404, "not_found", "session is being deleted", "closing")
            t1 = loop.time()
            try:
                prep = await self.offload(
                    self.tokens.prepare, list(s.stored), list(s.checkpoints), body.get("messages")
                )
            except (BadMessages, RollbackTooFar) as exc:
                raise Refused(400, "invalid_request_error", str(exc), "bad_request") from None
            t["tokenize_in_ms"] = (loop.time() - t1) * 1000.0
            expected_commits, expected_turns = s.commits, len(s.checkpoints)
        facts["prompt_tokens"] = len(prep.input_ids)

        # Phase 2, no lock.
        forward = {k: v for k, v in body.items() if k != "stream"}
        forward.update(input_ids=prep.input_ids, logprobs=True, return_meta_info=True, no_stop_trim=False, stream=False)
        url = f"{self.config.backend_url}/v1/chat/completions"
        start_ts = self.wall()
        t2 = loop.time()
        try:
            client = await self._client()
            async with client.post(url, json=forward, headers=headers) as r:
                status, data, ctype = r.status, await r.read(), r.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            elapsed = (loop.time() - t2) * 1000.0
            t["proxy_elapsed_ms"] = elapsed
            log.warning(
                "proxy_transport_error: backend call failed url=%s elapsed_ms=%.1f error=%s",
                url,
                elapsed,
                type(exc).__name__,
            )
            raise Refused(
                502, "bad_gateway", f"backend transport error: {type(exc).__name__}", "transport_error"
            ) from None
        t["proxy_elapsed_ms"] = (loop.time() - t2) * 1000.0
        if status != 200:  # passed through, unrecorded
            return web.Response(status=status, body=data, content_type=ctype or "application/json"), "upstream_error"
        answer, completion_ids, aborted = _validated(data)
        facts["completion_tokens"] = len(completion_ids)

        # Phase 3, under the lock.
        t3 = loop.time()
        tail = await self.offload(self.tokens.decode, completion_ids)
        t["tokenize_out_ms"] = (loop.time() - t3) * 1000.0
        started = loop.time()
        async with s.lock:
            t["lock_wait_ms"] += (loop.time() - started) * 1000.0
            record = {
                "kind": "committed",
                "start_ts": start_ts,
                "end_ts": self.wall(),
                "method": "POST",
                "path": request.path,
                "request": forward,
                "response": answer,
                "status_code": 200,
            }
            if s.closing or self.sessions.get(sid) is not s:
                outcome = "closing_skip"
            elif s.commits != expected_commits:
                log.warning(
                    "state_changed_during_proxy: session %s moved on while request %s was at the backend "
                    "(worker_port=%s inflight_chat_count=%d caller_request_id=%s proxy_elapsed_ms=%.1f "
                    "expected_num_assistant=%d actual_num_assistant=%d); not updating it",
                    sid,
                    req_id,
                    self.config.worker_port,
                    self.inflight,
                    request.headers.get("x-request-id"),
                    t["proxy_elapsed_ms"],
                    expected_turns,
                    len(s.checkpoints),
                )
                outcome = "state_changed_skip"
            elif aborted and "commit_aborted" not in bugs:
                record["kind"] = "provisional"
                s.records = [r for r in s.records if r["kind"] == "committed"] + [record]
                outcome = "aborted"
            else:
                base_ids = s.checkpoints[prep.base].ids if prep.base >= 0 else ()
                new_ids = [*prep.input_ids, *completion_ids]
                try:
                    self.tokens.check(base_ids, new_ids)
                except PrefixBroken as exc:
                    raise Refused(500, "tokenization_error", str(exc), "tokenization_error") from None
                message = answer["choices"][0]["message"]
                stored = [*prep.messages, *clean_messages([{**message, "role": "assistant"}])]
                kept = [r for r in s.records if r["kind"] == "committed"][: prep.base + 1]
                s.checkpoints = [*s.checkpoints[: prep.base + 1], Checkpoint(len(stored), tuple(new_ids), tail)]
                s.stored = stored
                s.records = [*kept, record]
                s.commits += 1
                outcome = "committed"
        marked = {"x-sglang-aborted": "1"} if aborted and "commit_aborted" not in bugs else {}
        if stream:
            return await _sse(request, answer, marked), outcome
        return web.json_response(answer, headers=marked), outcome


def _validated(data: bytes) -> tuple[dict[str, Any], list[int], bool]:
    """The backend answer, its completion token ids, and whether it was aborted; else 502."""

    def bad(why: str) -> Refused:
        return Refused(502, "bad_gateway", f"invalid backend response: {why}", "bad_gateway")

    try:
        answer = json.loads(data)
    except (ValueError, UnicodeError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list) or not answer["choices"]:
        raise bad("no choices")
    choice = answer["choices"][0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise bad("no message")
    meta = choice.get("meta_info", answer.get("meta_info"))
    if not isinstance(meta, dict):
        raise bad("no meta_info")
    pairs = meta.get("output_token_logprobs")
    if not isinstance(pairs, list):
        raise bad("no meta_info.output_token_logprobs")
    if meta.get("completion_tokens") != len(pairs):
        raise bad(f"{len(pairs)} logprobs for completion_tokens={meta.get('completion_tokens')!r}")
    if choice["message"].get("content") is None:
        raise bad("assistant content is null")
    try:  # the message is stored as the session's next assistant turn: one the template cannot read is malformed
        clean_messages([{**choice["message"], "role": "assistant"}])
    except BadMessages as exc:
        raise bad(f"assistant message: {exc}") from None
    ids: list[int] = []
    for p in pairs:
        if not isinstance(p, list) or len(p) < 2 or not isinstance(p[1], int) or isinstance(p[1], bool):
            raise bad("a logprob entry is not [logprob, token_id]")
        if isinstance(p[0], float) and not math.isfinite(p[0]):
            raise bad("a non-finite logprob")
        ids.append(p[1])
    reason = meta.get("finish_reason")
    aborted = choice.get("finish_reason") == "abort" or (isinstance(reason, dict) and reason.get("type") == "abort")
    return answer, ids, aborted


async def _sse(request: web.Request, answer: dict[str, Any], extra: dict[str, str]) -> web.StreamResponse:
    choice = answer["choices"][0]
    delta = {"role": "assistant", "content": choice["message"].get("content")}
    if choice["message"].get("tool_calls"):
        delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(choice["message"]["tool_calls"])]
    chunk = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}],
        "usage": answer.get("usage"),
    }
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", **extra})
    await resp.prepare(request)
    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def create_app(
    config: Config,
    tokens: Tokens,
    *,
    new_id: Callable[[int], str],
    wall: Callable[[], float],
    offload: Offload,
) -> web.Application:
    """The aiohttp application; ids, wall time and the tokenizer offload are injected."""
    return Server(config, tokens, new_id=new_id, wall=wall, offload=offload).app()
