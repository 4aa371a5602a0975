"""Known-bad session servers for the checkers that no named variant of reference_impl proves.

A checker earns its place in docs/coverage.md only when some broken server is
flagged by it on a run where the correct server passes. The named variants
(reference_impl/config.py ``BAD_VARIANTS``) cover most checkers; the rest are
proven here by small, realistic bugs wrapped around the reference app: each
factory below is a ``--target asgi:harness.coverage._bugs:NAME`` for
simulation (it takes the seams the sim offers, harness/sim/world.py), changes
one behaviour, and names in its docstring the bug class it stands for. They
change the server's answers, its backend calls or its log lines; they never
touch the harness's own records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import httpx

from harness.tokenizer import load_tokenizer
from reference_impl import create_app as create_reference
from reference_impl.launcher import _config as launcher_config
from reference_impl.launcher import build_parser
from reference_impl.tito import Tito, normalize_messages

__all__ = [
    "BUGS",
    "corrupt_prompt",
    "crash_on_bad_json",
    "crash_on_upstream_error",
    "double_backend_call",
    "drop_chat_done",
    "drop_provisional",
    "drop_record",
    "forward_hop_by_hop",
    "ignore_backend_timeout",
    "no_prefix_check",
    "open_passthrough",
    "prompt_mismatch",
    "reference_app",
    "refuse_passthrough",
    "refuse_retries",
    "slow_delete",
    "sse_without_done",
    "wrong_routing_key",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_GET = re.compile(r"^/sessions/[^/]+/?$")
CHAT = re.compile(r"^/sessions/[^/]+/v1/chat/completions/?$")


def reference_app(
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
    tokenizer: str | None = None,
    passthrough_paths: tuple[str, ...] | None = None,
    server_args: Sequence[str] = (),
    **_unused: Any,  # the sim offers every seam it has (e.g. seed)
) -> Any:
    """The reference server as the sim's ``--target asgi:`` factory builds it: what the bug wrappers wrap.

    Configured as harness/sim/world.py ``reference_factory`` configures the built-in one: the scenario's
    ``target.server_args`` (``--backend-timeout``, ``--passthrough-path``, ``--max-trim-tokens``, ...) through
    the launcher's own parser, so a wrapper differs from the reference server in its one bug and nothing else.
    ``passthrough_paths`` (a wrapper's own) replaces the allowlist the arguments give.
    """
    argv = ["--backend-url", backend_url, *[str(a) for a in server_args]]
    if tokenizer:
        argv += ["--tokenizer", tokenizer]
    for v in sorted(variants):
        argv += ["--variant", v]
    config = launcher_config(build_parser().parse_args(argv), worker_port)
    if passthrough_paths is not None:
        config = dataclasses.replace(config, passthrough_paths=passthrough_paths)
    return create_reference(
        config,
        clock=clock,
        ids=ids,
        executor=executor,
        backend_transport=backend_transport,
        log_sink=log_sink,
        pid=pid,
    )


class _Wrap:
    """An ASGI app around the reference app; subclasses override ``handle``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.state = getattr(inner, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner(scope, receive, send)

    async def captured(self, scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                start.update(msg)
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        await self.inner(scope, receive, capture)
        return int(start.get("status", 500)), list(start.get("headers", [])), b"".join(chunks)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    hs = [(k, v) for k, v in headers if k.lower() != b"content-length"] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, kind: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    return status, [(b"content-type", b"application/json")], body


class _Rewrite(_Wrap):
    """Rewrite the JSON body of successful ``GET /sessions/{id}`` answers."""

    def rewrite(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "GET" or not SESSION_GET.match(scope.get("path", "")):
            await self.inner(scope, receive, send)
            return
        status, headers, raw = await self.captured(scope, receive)
        if status == 200:
            raw = json.dumps(self.rewrite(json.loads(raw))).encode()
        await _answer(send, status, headers, raw)


class _DropRecord(_Rewrite):
    def rewrite(self, body: dict[str, Any]) -> dict[str, Any]:
        recs = body.get("records") or []
        committed = [i for i, r in enumerate(recs) if r.get("kind") == "committed"]
        if len(committed) >= 2:
            recs = [r for i, r in enumerate(recs) if i != committed[0]]
        return {**body, "records": recs}


def drop_record(**kw: Any) -> Any:
    """Lost update: a session with two or more committed turns has forgotten its first one."""
    return _DropRecord(reference_app(**kw))


class _DropProvisional(_Rewrite):
    def rewrite(self, body: dict[str, Any]) -> dict[str, Any]:
        recs = [r for r in body.get("records") or [] if r.get("kind") != "provisional"]
        return {**body, "records": recs}


def drop_provisional(**kw: Any) -> Any:
    """An aborted turn leaves no record: the provisional (the honest ABORTED turn) is never kept."""
    return _DropProvisional(reference_app(**kw))


class _CorruptPrompt(_Rewrite):
    def rewrite(self, body: dict[str, Any]) -> dict[str, Any]:
        recs = [dict(r) for r in body.get("records") or []]
        committed = [r for r in recs if r.get("kind") == "committed"]
        if len(committed) >= 2:
            last = committed[-1]
            req = dict(last.get("request") or {})
            ids = list(req.get("input_ids") or [])
            if len(ids) > 4:
                del ids[2]  # a token of the stored history silently lost from the new prompt
                req["input_ids"] = ids
                last["request"] = req
                recs[recs.index(committed[-1])] = last
        return {**body, "records": recs}


def corrupt_prompt(**kw: Any) -> Any:
    """A later turn's prompt does not extend the stored checkpoint (a token of the history dropped)."""
    return _CorruptPrompt(reference_app(**kw))


class _GenerationPromptTito(Tito):
    """Renders every conversation as a prompt (``add_generation_prompt=True``), whatever it is asked."""

    def render(self, messages: Any, *, generation_prompt: bool, kwargs: Any = None) -> str:
        return super().render(messages, generation_prompt=True, kwargs=kwargs)


class _PromptMismatch(_Rewrite):
    def __init__(self, inner: Any, tokenizer: str | None) -> None:
        super().__init__(inner)
        self.tito = _GenerationPromptTito(load_tokenizer(tokenizer))

    def rewrite(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.get("metadata")
        if not isinstance(meta, dict) or "token_mismatch" not in meta:
            return body
        msgs, ids = meta.get("messages") or [], meta.get("token_ids") or []
        return {**body, "metadata": {**meta, "token_mismatch": self.tito.mismatch(normalize_messages(msgs), ids)}}


def prompt_mismatch(**kw: Any) -> Any:
    """A diagnostic that renders the stored messages as a prompt (with the generation prompt), not as the
    conversation: ``token_mismatch`` reports the generation prompt's tokens as a difference, with the wrong
    lengths and window."""
    return _PromptMismatch(reference_app(**kw), kw.get("tokenizer"))


class _SseWithoutDone(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        streamed = False

        async def cut(msg: Message) -> None:
            nonlocal streamed
            if msg["type"] == "http.response.start":
                streamed = any(k == b"content-type" and b"event-stream" in v for k, v in msg.get("headers", []))
                if streamed:
                    msg = {**msg, "headers": [(k, v) for k, v in msg["headers"] if k != b"content-length"]}
            elif msg["type"] == "http.response.body" and streamed:
                msg = {**msg, "body": msg.get("body", b"").replace(b"data: [DONE]\n\n", b"")}
            await send(msg)

        await self.inner(scope, receive, cut)


def sse_without_done(**kw: Any) -> Any:
    """A streamed answer without its ``data: [DONE]`` terminator (a lenient client never notices)."""
    return _SseWithoutDone(reference_app(**kw))


_FORWARDED = ((b"keep-alive", b"timeout=5, max=100"), (b"proxy-connection", b"keep-alive"))


class _ForwardHopByHop(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        chat = bool(CHAT.match(str(scope.get("path", ""))))

        async def forward(msg: Message) -> None:
            if chat and msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *_FORWARDED]}
            await send(msg)

        await self.inner(scope, receive, forward)


def forward_hop_by_hop(**kw: Any) -> Any:
    """Chat replies carry the connection fields of the backend's own hop (``keep-alive``, ``proxy-connection``
    from a front end that announces keep-alive): a relay that copies upstream headers without RFC 9110 7.6.1's
    hop-by-hop filter. No client parser rejects them; only http_framing's hop_by_hop rule tells."""
    return _ForwardHopByHop(reference_app(**kw))


class _CrashOnUpstream(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers, raw = await self.captured(scope, receive)
        if status in (502, 503):
            status, headers, raw = _error(500, "internal_error", "unhandled backend failure")
        await _answer(send, status, headers, raw)


def crash_on_upstream_error(**kw: Any) -> Any:
    """A backend failure (transport error, malformed answer, 503) escapes the handler as a 500."""
    return _CrashOnUpstream(reference_app(**kw))


class _CrashOnBadJson(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST" or not CHAT.match(scope.get("path", "")):
            await self.inner(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = bool(msg.get("more_body"))
        raw = b"".join(chunks)
        try:
            json.loads(raw)
        except ValueError:
            await _answer(send, *_error(500, "internal_error", "JSONDecodeError"))
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.inner(scope, replay, send)


def crash_on_bad_json(**kw: Any) -> Any:
    """A chat body that is not JSON crashes the handler (500) instead of a 400."""
    return _CrashOnBadJson(reference_app(**kw))


class _RefuseRetries(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if (
            scope.get("method") == "POST"
            and CHAT.match(scope.get("path", ""))
            and headers.get(b"x-attempt", b"0") != b"0"
        ):
            await _answer(send, *_error(400, "bad_request", "request does not extend the stored history"))
            return
        await self.inner(scope, receive, send)


def refuse_retries(**kw: Any) -> Any:
    """A legal retry of a turn (same messages after an abort) is refused with 400."""
    return _RefuseRetries(reference_app(**kw))


_SESSION_PATH = re.compile(r"^/sessions/[^/]+/(?P<rest>.+)$")


class _RefusePassthrough(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = _SESSION_PATH.match(scope.get("path", ""))
        if m is not None and not CHAT.match(scope.get("path", "")) and m.group("rest") != "generate":
            await _answer(send, *_error(403, "forbidden", "path not allowed through the session"))
            return
        await self.inner(scope, receive, send)


def refuse_passthrough(**kw: Any) -> Any:
    """An allowlist of pass-through paths too narrow: only ``generate`` is proxied, every other backend path
    (its health and model routes too) is refused 403, as if it were an admin endpoint."""
    return _RefusePassthrough(reference_app(**kw))


class _SlowDelete(_Wrap):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "DELETE":
            await asyncio.sleep(30.0)  # the loop's timer: virtual time under simulation
        await self.inner(scope, receive, send)


def slow_delete(**kw: Any) -> Any:
    """DELETE waits 30 s (e.g. for every in-flight request of the server to drain) before answering."""
    return _SlowDelete(reference_app(**kw))


class _RoutingKeyTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, *, twice: bool = False) -> None:
        self.inner = inner
        self.twice = twice

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.twice and request.url.path.endswith("/chat/completions"):
            body = request.content
            first = await self.inner.handle_async_request(
                httpx.Request(request.method, request.url, headers=request.headers, content=body)
            )
            await first.aread()
            await first.aclose()
            return await self.inner.handle_async_request(
                httpx.Request(request.method, request.url, headers=request.headers, content=body)
            )
        if not self.twice and "x-smg-routing-key" in request.headers:
            key = request.headers["x-smg-routing-key"]
            request.headers["x-smg-routing-key"] = key[::-1]
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def wrong_routing_key(**kw: Any) -> Any:
    """The backend request carries a routing key that is not the session id (a router sends it astray)."""
    return reference_app(**{**kw, "backend_transport": _RoutingKeyTransport(kw["backend_transport"])})


def double_backend_call(**kw: Any) -> Any:
    """Each chat is sent to the backend twice (a retry-on-any-error proxy layer): generation runs twice."""
    return reference_app(**{**kw, "backend_transport": _RoutingKeyTransport(kw["backend_transport"], twice=True)})


def drop_chat_done(**kw: Any) -> Any:
    """Every third chat_done line is lost (an early return that skips the log call)."""
    sink = kw["log_sink"]
    seen = [0]

    def lossy(event: dict[str, Any]) -> None:
        if event.get("event") == "chat_done":
            seen[0] += 1
            if seen[0] % 3 == 0:
                return
        sink(event)

    return reference_app(**{**kw, "log_sink": lossy})


def no_prefix_check(**kw: Any) -> Any:
    """The prefix invariant is not checked: whatever prompt the backend reports is committed (a server that
    trusts ``meta_info.prompt_token_ids`` blindly, or lost the check in a refactor). Stored history the
    model never extended reaches training."""
    app = reference_app(**kw)
    app.state.server.tito.check_prefix = lambda base_ids, new_ids: None
    return app


def no_trim_tolerance(**kw: Any) -> Any:
    """The prefix check tolerates no trailing token (``max_trim_tokens`` 0): a turn whose backend re-tokenized
    only the end of the stored turn (the end-of-turn token, the newline after it) is refused with 500,
    though CONTEXT.md tolerates "a few trailing tokens"."""
    app = reference_app(**kw)
    app.state.server.tito.max_trim_tokens = 0
    return app


def prefix_crash(**kw: Any) -> Any:
    """A broken prefix crashes the check (as an arithmetic slip in its error message would) instead of
    raising the tokenization error: still a 500, but an internal error, not CONTEXT.md's "500 with a
    tokenization error"."""
    app = reference_app(**kw)
    tito = app.state.server.tito
    check = tito.check_prefix

    def crashing(base_ids: Any, new_ids: list[int]) -> None:
        try:
            check(base_ids, new_ids)
        except Exception as exc:
            raise ZeroDivisionError("integer division or modulo by zero") from exc

    tito.check_prefix = crashing
    return app


def open_passthrough(**kw: Any) -> Any:
    """A pass-through without its allowlist (configured as ``/*``): every backend path a session names is
    proxied, paths off the documented list and the engine's control plane included."""
    return reference_app(**{**kw, "passthrough_paths": ("/*",)})


class _NoTimeoutTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "timeout": {"connect": None, "read": None, "write": None}}
        return await self.inner.handle_async_request(request)


def ignore_backend_timeout(**kw: Any) -> Any:
    """The backend call loses its timeout on the way (a transport that drops it): a hung backend call waits
    until the backend lets go, whatever ``--backend-timeout`` says."""
    return reference_app(**{**kw, "backend_transport": _NoTimeoutTransport(kw["backend_transport"])})


# name -> factory, for proofs.toml (``bug = "NAME"``)
BUGS: dict[str, Callable[..., Any]] = {
    "no_prefix_check": no_prefix_check,
    "no_trim_tolerance": no_trim_tolerance,
    "prefix_crash": prefix_crash,
    "corrupt_prompt": corrupt_prompt,
    "crash_on_bad_json": crash_on_bad_json,
    "crash_on_upstream_error": crash_on_upstream_error,
    "double_backend_call": double_backend_call,
    "drop_chat_done": drop_chat_done,
    "drop_provisional": drop_provisional,
    "drop_record": drop_record,
    "forward_hop_by_hop": forward_hop_by_hop,
    "refuse_passthrough": refuse_passthrough,
    "open_passthrough": open_passthrough,
    "ignore_backend_timeout": ignore_backend_timeout,
    "refuse_retries": refuse_retries,
    "slow_delete": slow_delete,
    "prompt_mismatch": prompt_mismatch,
    "sse_without_done": sse_without_done,
    "wrong_routing_key": wrong_routing_key,
}
