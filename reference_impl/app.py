"""The session server: an ASGI app that proxies chat turns to SGLang and keeps their exact tokens.

The race this module is built around. A chat turn takes seconds in the
backend, so the session lock is *not* held while the backend generates
(CONTEXT.md, "The three-phase chat protocol"):

1. Phase 1, under the lock: re-check ``closing``, plan the tokens (TITO,
   rollback included), remember ``num_assistant`` (and ``version``);
2. Phase 2, no lock: the backend call; DELETE and other turns proceed;
3. Phase 3, under the lock: if the session is closing, or another turn
   committed meanwhile, the answer is returned but *not* written; an aborted
   answer becomes the single provisional record at the tail (with
   ``x-sglang-aborted: 1``, no token commit); else the prefix invariant is
   checked and the turn is committed, superseding a tail provisional.

DELETE sets ``closing`` *first* and only then waits for the lock, so a Phase 1
or 3 that holds the lock finishes, and everything after it sees ``closing``
and answers 404 / skips its write. A removed session never comes back.

Each rule can be switched off by a named variant (config.py) so the harness
can show that its checkers catch the resulting bug; every switch is a
``self._has(name)`` test at the exact line the bug lives on.

Hostile input (issue 13): a request body is read up to ``max_body_bytes``
(413 past it, without reading the rest) and parsed strictly
(harness/strict_json.py: no NaN / Infinity, no lone surrogates, nesting up to
``max_json_depth``), so nothing is stored that ``GET /sessions/{id}`` could not
serve back; a backend answer that breaks the same rules is a 502. Every JSON
reply goes through ``dumps_safe``, so a read endpoint cannot fail on its own
data. The pass-through normalizes its path, routes any spelling of the chat
path to the tracked chat handler, and reaches only allowlisted backend paths.

Observability: exactly one ``chat_start`` and one ``chat_done`` per chat
request, whatever its outcome (``try``/``finally``), with the timing buckets
``lock_wait_ms, tokenize_in_ms, proxy_elapsed_ms, tokenize_out_ms, total_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from harness.seams import Clock, Executor, IdSource, InlineExecutor, LoopClock, ThreadExecutor
from harness.strict_json import BodyTooLarge, JsonInputError, dumps_safe, loads_strict
from harness.tokenizer import load_tokenizer

from .config import ServerConfig
from .logs import Counters, EventLog, JsonLineSink, LogSink, heartbeat_loop
from .proxy import HOP_BY_HOP, Backend, PathError, forward_headers, normalize_path, path_allowed, routing_key
from .sessions import Session, SessionStore
from .tito import Commit, MessageError, RollbackError, Tito, TitoError, TurnPlan, normalize_messages, template_kwargs

__all__ = ["SessionServer", "create_app"]

CHAT_PATH = "v1/chat/completions"
ABORT_HEADER = "x-sglang-aborted"
FRAMING_HEADERS = (b"server", b"date", b"content-length")
# Never relayed from the backend: they describe the backend's connection and body encoding, not ours.
RELAY_DROP = frozenset(h.encode() for h in HOP_BY_HOP) | {b"server", b"date", b"content-length", b"content-encoding"}


class SafeJSONResponse(JSONResponse):
    """A JSON reply that always encodes (``dumps_safe``): a read endpoint never fails on its own data."""

    def render(self, content: Any) -> bytes:
        return dumps_safe(content)


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return SafeJSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


class BadGateway(Exception):
    """The backend answered 200 with a body the server cannot use."""


@dataclass
class BackendAnswer:
    data: dict[str, Any]
    message: dict[str, Any]
    finish_reason: str | None
    prompt_ids: list[int] | None
    completion_ids: list[int]

    @property
    def aborted(self) -> bool:
        return self.finish_reason == "abort"


@dataclass
class _Turn:
    """What Phases 1 and 2 hand to Phase 3."""

    plan: TurnPlan
    expected_n: int  # num_assistant seen in Phase 1
    expected_v: int  # commit version seen in Phase 1
    stream: bool
    backend_body: dict[str, Any]
    start_ts: float
    resp: httpx.Response
    answer: BackendAnswer
    aborted: bool
    commit: Commit | None = None
    tito_error: TitoError | None = None


def parse_answer(raw: bytes, max_depth: int = 64) -> BackendAnswer:
    """Validate a backend chat answer (CONTEXT.md): any violation is a 502.

    Parsed as strictly as a client's body: an answer holding NaN or a lone
    surrogate could be stored but never served back by ``GET /sessions/{id}``.
    """
    try:
        data = loads_strict(raw, max_depth_limit=max_depth)
    except JsonInputError as exc:
        if exc.reason in ("invalid_json", "not_utf8"):
            raise BadGateway(f"backend body is not JSON: {exc}") from None
        raise BadGateway(f"backend answer cannot be stored: {exc}") from None
    if not isinstance(data, dict):
        raise BadGateway("backend body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadGateway("backend answer has no choices[0]")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadGateway("backend answer has no choices[0].message")
    if message.get("content") is None:
        raise BadGateway("backend answer has null assistant content")
    try:
        normalize_messages([{**message, "role": message.get("role") or "assistant"}])
    except MessageError as exc:
        raise BadGateway(f"backend assistant message is malformed: {exc}") from None
    meta = choice.get("meta_info")
    if not isinstance(meta, dict):
        meta = data.get("meta_info")
    if not isinstance(meta, dict):
        raise BadGateway("backend answer has no meta_info")
    pairs = meta.get("output_token_logprobs")
    if not isinstance(pairs, list):
        raise BadGateway("backend answer has no meta_info.output_token_logprobs")
    if meta.get("completion_tokens") != len(pairs):
        raise BadGateway(
            f"meta_info.output_token_logprobs has {len(pairs)} entries but completion_tokens is "
            f"{meta.get('completion_tokens')!r}"
        )
    completion_ids: list[int] = []
    for p in pairs:  # [logprob, token_id, ...]: an object entry, a string or a fractional id is not a token id
        if not isinstance(p, list) or len(p) < 2 or not isinstance(p[1], int) or isinstance(p[1], bool):
            raise BadGateway("meta_info.output_token_logprobs entries must be [logprob, token_id]")
        completion_ids.append(p[1])
    finish = choice.get("finish_reason")
    if finish is None and isinstance(meta.get("finish_reason"), dict):
        finish = meta["finish_reason"].get("type")
    prompt_ids = meta.get("prompt_token_ids")
    if prompt_ids is not None and not (isinstance(prompt_ids, list) and all(isinstance(t, int) for t in prompt_ids)):
        raise BadGateway("meta_info.prompt_token_ids must be a list of ints")
    return BackendAnswer(data, message, finish if isinstance(finish, str) else None, prompt_ids, completion_ids)


def sse_body(data: dict[str, Any]) -> bytes:
    """A finished answer as one ``chat.completion.chunk`` SSE event plus ``[DONE]`` (fake streaming)."""
    choices = []
    for ch in data.get("choices") or []:
        msg = dict(ch.get("message") or {})
        if msg.get("tool_calls"):
            msg["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]
        out = {"index": ch.get("index", 0), "delta": msg, "finish_reason": ch.get("finish_reason")}
        if "meta_info" in ch:
            out["meta_info"] = ch["meta_info"]
        choices.append(out)
    chunk = {
        "id": data.get("id"),
        "object": "chat.completion.chunk",
        "created": data.get("created"),
        "model": data.get("model"),
        "choices": choices,
        "usage": data.get("usage"),
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class _Chat:
    """Per-request bookkeeping for the ``chat_done`` line."""

    __slots__ = (
        "caller",
        "completion_tokens",
        "lock_wait_ms",
        "outcome",
        "prompt_tokens",
        "proxy_elapsed_ms",
        "read_body_ms",
        "req_id",
        "session_id",
        "status",
        "t0",
        "tokenize_in_ms",
        "tokenize_out_ms",
    )

    def __init__(self, req_id: str, session_id: str, caller: str | None, t0: float) -> None:
        self.req_id = req_id
        self.session_id = session_id
        self.caller = caller
        self.t0 = t0
        self.status = 500
        self.outcome = "internal_error"
        self.lock_wait_ms = 0.0
        self.tokenize_in_ms = 0.0
        self.proxy_elapsed_ms = 0.0
        self.tokenize_out_ms = 0.0
        self.read_body_ms = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class SessionServer:
    """The server's state and handlers; ``create_app`` wires it into Starlette."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Clock,
        ids: IdSource,
        executor: Executor,
        backend_transport: httpx.AsyncBaseTransport | None,
        log_sink: LogSink | None,
        pid: int | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.ids = ids
        self.executor = executor
        self.tito = Tito(load_tokenizer(config.tokenizer), config.max_trim_tokens)
        self.store = SessionStore()
        self.counters = Counters()
        self.pid = pid if pid is not None else os.getpid()  # simulation names its processes itself
        self.log = EventLog(log_sink, clock, pid=self.pid, worker_port=config.worker_port)
        self.backend = Backend(config.backend_url, backend_transport, config.backend_timeout)
        self._has = config.has
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        if self._heartbeat is None:
            loop = heartbeat_loop(self.log, self.counters, lambda: len(self.store), self.config.heartbeat_interval)
            self._heartbeat = asyncio.create_task(loop)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.backend.aclose()

    # -- small routes ---------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return SafeJSONResponse(
            {"status": "ok", "pid": self.pid, "worker_port": self.config.worker_port, "sessions": len(self.store)}
        )

    async def stats(self, request: Request) -> Response:
        c = self.counters
        return SafeJSONResponse(
            {
                "pid": self.pid,
                "worker_port": self.config.worker_port,
                "reqs_total": c.reqs_total,
                "turns_completed": c.turns_completed,
                "inflight": c.inflight,
                "sessions": len(self.store),
                "variants": sorted(self.config.variants),
            }
        )

    def _live(self, session_id: str) -> Session | None:
        session = self.store.get(session_id)
        return None if session is None or session.closing else session

    async def create_session(self, request: Request) -> Response:
        session = self.store.add(Session(self.ids.session_id(), created_ts=self.clock.wall()))
        self.log.info("session_created", session_id=session.session_id)
        return SafeJSONResponse({"session_id": session.session_id})

    async def get_session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        session = self._live(session_id)
        if session is None:
            return error_response(404, "SessionNotFound", f"session {session_id} not found")
        messages, token_ids = list(session.messages), list(session.token_ids)
        meta = session.metadata()
        try:
            meta["token_mismatch"] = await self.executor.run(self.tito.mismatch, messages, token_ids)
        except Exception as exc:  # a diagnostic must not make the session's data unreadable
            meta["token_mismatch"] = {"error": f"token_mismatch could not be computed: {exc!r}"}
        return SafeJSONResponse({"session_id": session_id, "records": list(session.records), "metadata": meta})

    async def delete_session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        session = self._live(session_id)
        if session is None:
            return error_response(404, "SessionNotFound", f"session {session_id} not found or already closing")
        session.closing = True  # before waiting: everything queued behind the lock now sees it
        if self._has("delete_cancel"):
            await self._cancel_inflight(session)
        async with session.lock:
            if not self._has("leak_deleted"):
                self.store.remove(session)
        self.log.info("session_deleted", session_id=session_id)
        return Response(status_code=204)

    async def _cancel_inflight(self, session: Session) -> None:
        for task, rid in list(session.inflight.items()):
            task.cancel()
            try:
                await self.backend.request(
                    "POST",
                    "/abort_request",
                    content=json.dumps({"rid": rid}).encode(),
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"x-smg-routing-key", routing_key(session.session_id)),
                    ],
                    timeout_s=min(5.0, self.config.backend_timeout),
                )
            except httpx.HTTPError as exc:
                self.log.warning(
                    "proxy_transport_error",
                    session_id=session.session_id,
                    url=self.backend.url("/abort_request"),
                    elapsed_ms=0.0,
                    error=repr(exc),
                )

    # -- pass-through ---------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        """The request body, at most ``max_body_bytes``: BodyTooLarge as soon as it is known to be larger."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            raise BodyTooLarge(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            parts.append(chunk)
        return b"".join(parts)

    def _allowed_paths(self) -> str:
        return ", ".join(self.config.passthrough_paths) or "none"

    async def passthrough(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if self._live(session_id) is None:
            return error_response(404, "SessionNotFound", f"session {session_id} not found")
        try:
            path = normalize_path(request.path_params["path"])
        except PathError as exc:
            return error_response(400, "InvalidPath", str(exc))
        if path == "/" + CHAT_PATH:  # the chat path however it was spelled: tracked, never passed through
            if request.method != "POST":
                return error_response(405, "MethodNotAllowed", f"{request.method} {path}: only POST")
            return await self.chat(request)
        if not path_allowed(path, self.config.passthrough_paths):
            return error_response(
                403,
                "PathNotAllowed",
                f"backend path {path} is not reachable through a session; allowed: {self._allowed_paths()}",
            )
        try:
            body = await self.read_body(request)
        except BodyTooLarge as exc:
            return error_response(413, "RequestTooLarge", str(exc))
        except ClientDisconnect:
            return error_response(499, "ClientDisconnect", "the client disconnected before the body ended")
        headers = forward_headers(request.headers.raw, session_id)
        t = self.clock.monotonic()
        try:
            resp = await self.backend.request(
                request.method, path, content=body, headers=headers, params=request.query_params.multi_items()
            )
        except (httpx.HTTPError, OSError) as exc:
            elapsed = _ms(self.clock.monotonic() - t)
            self.log.warning(
                "proxy_transport_error",
                req_id=None,
                session_id=session_id,
                url=self.backend.url(path),
                elapsed_ms=elapsed,
                error=repr(exc),
            )
            return error_response(502, "BackendUnavailable", f"backend transport error: {exc!r}")
        return self._relay(resp, resp.content)

    def _relay(self, resp: httpx.Response, content: bytes) -> Response:
        """The backend's answer as is (status, body, end-to-end headers such as retry-after)."""
        out = Response(content, status_code=resp.status_code)
        for k, v in resp.headers.raw:
            if k.lower() not in RELAY_DROP:
                out.raw_headers.append((k.lower(), v))
        self._echo_framing(resp, out)
        return out

    def _echo_framing(self, resp: httpx.Response, out: Response) -> None:
        if self._has("echo_upstream_framing"):
            for k, v in resp.headers.raw:
                if k.lower() in FRAMING_HEADERS:
                    out.raw_headers.append((k.lower(), v))

    # -- chat -----------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        t0 = self.clock.monotonic()
        st = _Chat(self.ids.request_id(), request.path_params["session_id"], request.headers.get("x-request-id"), t0)
        c = self.counters
        c.reqs_total += 1
        c.inflight += 1
        self.log.info(
            "chat_start",
            req_id=st.req_id,
            session_id=st.session_id,
            caller_request_id=st.caller,
            inflight_now=c.inflight,
        )
        try:
            response = await self._chat(request, st)
            st.status = response.status_code
        except asyncio.CancelledError:
            st.outcome, st.status = "cancelled", 499
            raise
        except Exception as exc:  # a bug must still answer JSON and log its chat_done
            st.outcome, st.status = "internal_error", 500
            response = error_response(500, "InternalError", repr(exc))
        finally:
            if st.outcome == "committed" or not self._has("inflight_leak"):
                c.inflight -= 1
            self.log.info(
                "chat_done",
                req_id=st.req_id,
                session_id=st.session_id,
                caller_request_id=st.caller,
                status=st.status,
                outcome=st.outcome,
                lock_wait_ms=st.lock_wait_ms,
                tokenize_in_ms=st.tokenize_in_ms,
                proxy_elapsed_ms=st.proxy_elapsed_ms,
                tokenize_out_ms=st.tokenize_out_ms,
                read_body_ms=st.read_body_ms,
                total_ms=_ms(self.clock.monotonic() - st.t0),
                inflight_now=c.inflight,
                prompt_tokens=st.prompt_tokens,
                completion_tokens=st.completion_tokens,
            )
        response.headers["x-req-id"] = st.req_id
        return response

    def _fail(self, st: _Chat, outcome: str, status: int, type_: str, message: str) -> Response:
        st.outcome = outcome
        return error_response(status, type_, message)

    async def _timed_lock(self, session: Session, st: _Chat) -> None:
        t = self.clock.monotonic()
        await session.lock.acquire()
        st.lock_wait_ms = round(st.lock_wait_ms + _ms(self.clock.monotonic() - t), 3)

    async def _chat(self, request: Request, st: _Chat) -> Response:
        sid = st.session_id
        no_recheck = self._has("no_closing_recheck")
        session = self.store.get(sid)
        if session is None and self._has("auto_create"):
            session = self.store.add(Session(sid, created_ts=self.clock.wall()))
            self.log.info("session_created", session_id=sid, auto_created=True)
        if session is None or (session.closing and not no_recheck):
            return self._fail(st, "not_found", 404, "SessionNotFound", f"session {sid} not found")
        t_body = self.clock.monotonic()
        try:
            raw = await self.read_body(request)  # paced by the client: read_body_ms, not the server's own time
        except BodyTooLarge as exc:
            return self._fail(st, "bad_request", 413, "RequestTooLarge", str(exc))
        except ClientDisconnect:  # the client left mid-body: not a server error
            return self._fail(st, "cancelled", 499, "ClientDisconnect", "the client disconnected before the body ended")
        finally:
            st.read_body_ms = _ms(self.clock.monotonic() - t_body)
        try:
            body = loads_strict(raw, max_depth_limit=self.config.max_json_depth)
        except JsonInputError as exc:
            return self._fail(st, "bad_request", 400, "InvalidRequest", str(exc))
        if not isinstance(body, dict):
            return self._fail(st, "bad_request", 400, "InvalidRequest", "request body must be a JSON object")
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            return self._fail(st, "bad_request", 400, "InvalidRequest", "'stream' must be a boolean")
        if "messages" not in body:
            return self._fail(st, "bad_request", 400, "InvalidRequest", "'messages' is required")

        hold = self._has("lock_restore")
        await self._timed_lock(session, st)
        held = True
        try:
            # ---- Phase 1 (under the lock) ----
            if session.closing and not no_recheck:
                return self._fail(st, "not_found", 404, "SessionNotFound", f"session {sid} is closing")
            view = session.view()
            expected_n, expected_v = session.num_assistant, session.version
            t = self.clock.monotonic()
            # retokenize_history (BAD): the whole request re-rendered and re-encoded, no checkpoint kept
            planner = self.tito.plan_retokenized if self._has("retokenize_history") else self.tito.plan
            try:
                kwargs = template_kwargs(body.get("chat_template_kwargs"))
                plan = await self.executor.run(planner, view, body["messages"], kwargs)
            except MessageError as exc:
                return self._fail(st, "bad_request", 400, "InvalidRequest", str(exc))
            except RollbackError as exc:
                return self._fail(st, "bad_request", 400, "RollbackError", str(exc))
            except TitoError as exc:
                return self._fail(st, "tokenization_error", 500, "TokenizationError", str(exc))
            finally:
                st.tokenize_in_ms = _ms(self.clock.monotonic() - t)
            st.prompt_tokens = len(plan.input_ids)
            if not hold:
                session.lock.release()
                held = False

            # ---- Phase 2 (no lock, unless lock_restore) ----
            backend_body = dict(body)
            backend_body.update(
                input_ids=plan.input_ids, logprobs=True, return_meta_info=True, no_stop_trim=False, stream=False
            )
            rid = backend_body.get("rid")
            if self._has("delete_cancel") and not isinstance(rid, str):
                rid = backend_body["rid"] = f"{sid}-{st.req_id}"
            start_ts = self.clock.wall()
            outcome_resp = await self._proxy(request, session, st, backend_body, rid)
            if isinstance(outcome_resp, Response):
                return outcome_resp
            resp = outcome_resp
            if resp.status_code != 200:
                st.outcome = "upstream_error"
                return self._relay(resp, resp.content)
            try:
                answer = parse_answer(resp.content, self.config.max_json_depth)
            except BadGateway as exc:
                return self._fail(st, "bad_gateway", 502, "BadGateway", str(exc))
            st.completion_tokens = len(answer.completion_ids)
            aborted = answer.aborted and not self._has("commit_aborted")
            turn = _Turn(plan, expected_n, expected_v, bool(stream), backend_body, start_ts, resp, answer, aborted)
            if not aborted:  # the state-update tokenization needs no session state: outside the lock
                t = self.clock.monotonic()
                prompt_ids = answer.prompt_ids if answer.prompt_ids is not None else plan.input_ids
                try:
                    turn.commit = await self.executor.run(
                        self.tito.commit_retokenized if self._has("retokenize_history") else self.tito.commit,
                        plan,
                        prompt_ids,
                        answer.completion_ids,
                        answer.message,
                    )
                except TitoError as exc:
                    turn.tito_error = exc
                finally:
                    st.tokenize_out_ms = _ms(self.clock.monotonic() - t)

            # ---- Phase 3 (under the lock) ----
            if not held:
                await self._timed_lock(session, st)
                held = True
            return self._phase3(request, session, st, turn)
        finally:
            if held:
                session.lock.release()

    async def _proxy(
        self, request: Request, session: Session, st: _Chat, backend_body: dict[str, Any], rid: Any
    ) -> httpx.Response | Response:
        """Phase 2: the backend call; a transport failure is a 502 and a ``proxy_transport_error`` line."""
        headers = forward_headers(request.headers.raw, st.session_id)
        content = json.dumps(backend_body, separators=(",", ":")).encode()
        t = self.clock.monotonic()
        call: Awaitable[httpx.Response] = self.backend.request(
            "POST", "/" + CHAT_PATH, content=content, headers=headers
        )
        try:
            if self._has("delete_cancel"):
                task: asyncio.Task[httpx.Response] = asyncio.ensure_future(call)
                session.inflight[task] = str(rid)
                try:
                    return await task
                finally:
                    session.inflight.pop(task, None)
            return await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the request itself was cancelled, not just its backend call
            return self._fail(st, "cancelled", 404, "SessionNotFound", f"session {st.session_id} was deleted")
        except (httpx.HTTPError, OSError) as exc:
            st.proxy_elapsed_ms = _ms(self.clock.monotonic() - t)
            self.log.warning(
                "proxy_transport_error",
                req_id=st.req_id,
                session_id=st.session_id,
                url=self.backend.url(CHAT_PATH),
                elapsed_ms=st.proxy_elapsed_ms,
                error=repr(exc),
            )
            return self._fail(st, "transport_error", 502, "BackendUnavailable", f"backend transport error: {exc!r}")
        finally:
            if not st.proxy_elapsed_ms:
                st.proxy_elapsed_ms = _ms(self.clock.monotonic() - t)

    def _phase3(self, request: Request, session: Session, st: _Chat, turn: _Turn) -> Response:
        """Under the lock: skip if closing or changed, provisional if aborted, else check and commit."""
        reply = self._answer(turn.resp, turn.answer, turn.stream, turn.aborted)
        if session.closing and not self._has("no_closing_recheck"):
            st.outcome = "closing_skip"
            return reply
        if not self._has("no_num_assistant_guard") and (
            session.num_assistant != turn.expected_n or session.version != turn.expected_v
        ):
            self.log.warning(
                "state_changed_during_proxy",
                req_id=st.req_id,
                session_id=st.session_id,
                inflight_chat_count=self.counters.inflight,
                caller_request_id=st.caller,
                proxy_elapsed_ms=st.proxy_elapsed_ms,
                expected_num_assistant=turn.expected_n,
                actual_num_assistant=session.num_assistant,
            )
            if self._has("conflict_409"):
                return self._fail(
                    st,
                    "conflict",
                    409,
                    "SessionStateConflictError",
                    f"session {st.session_id} changed during the backend call "
                    f"(num_assistant {turn.expected_n} -> {session.num_assistant}); the answer was not recorded",
                )
            st.outcome = "state_changed_skip"
            return reply
        record = {
            "kind": "provisional" if turn.aborted else "committed",
            "start_ts": turn.start_ts,
            "end_ts": self.clock.wall(),
            "method": request.method,
            "path": f"/sessions/{st.session_id}/{CHAT_PATH}",  # canonical, however the client spelled it
            "caller_request_id": st.caller,
            "req_id": st.req_id,
            "turn": _int_header(request.headers.get("x-turn")),
            "attempt": _int_header(request.headers.get("x-attempt")),
            "request": turn.backend_body,
            "response": turn.answer.data,
            "status_code": turn.resp.status_code,
        }
        if turn.aborted:
            session.add_provisional(record)
            st.outcome = "aborted"
            return reply
        if turn.tito_error is not None or turn.commit is None:
            return self._fail(st, "tokenization_error", 500, "TokenizationError", str(turn.tito_error))
        session.apply(turn.commit, turn.plan.base_assistant)
        session.add_committed(
            record, discarded=turn.plan.discarded, supersede=not self._has("provisional_never_superseded")
        )
        self.counters.turns_completed += 1
        st.outcome = "committed"
        return reply

    def _answer(self, resp: httpx.Response, answer: BackendAnswer, stream: bool, aborted: bool) -> Response:
        headers = {ABORT_HEADER: "1"} if aborted else None
        if stream:
            out: Response = Response(sse_body(answer.data), media_type="text/event-stream", headers=headers)
            out.headers["cache-control"] = "no-cache"
        else:
            out = Response(resp.content, media_type="application/json", headers=headers)
        self._echo_framing(resp, out)
        return out


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 (no route, wrong method) as the server's JSON error shape."""
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}", headers)


def create_app(
    config: ServerConfig,
    *,
    clock: Clock | None = None,
    ids: IdSource | None = None,
    executor: Executor | None = None,
    backend_transport: httpx.AsyncBaseTransport | None = None,
    log_sink: LogSink | None = None,
    pid: int | None = None,
) -> Starlette:
    """The ASGI app. ``None`` seams get their live defaults (loop clock, OS-seeded ids, thread executor).

    ``log_sink=None`` writes JSON lines to stderr. ``pid`` replaces ``os.getpid()`` in log
    lines and ``/stats`` (simulation runs N "processes" in one, deterministically). The
    heartbeat starts with the ASGI lifespan (uvicorn runs it; in-process tests may call
    ``app.state.server.start_heartbeat()``).
    """
    if executor is None:
        executor = ThreadExecutor() if config.tokenize_in_thread else InlineExecutor()
    if log_sink is None:
        import sys

        log_sink = JsonLineSink(sys.stderr)
    server = SessionServer(
        config,
        clock=clock if clock is not None else LoopClock(),
        ids=ids if ids is not None else IdSource(),
        executor=executor,
        backend_transport=backend_transport,
        log_sink=log_sink,
        pid=pid,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.start_heartbeat()
        try:
            yield
        finally:
            await server.aclose()

    def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]) -> Route:
        return Route(path, endpoint, methods=methods)

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = [
        route("/health", server.health, ["GET"]),
        route("/stats", server.stats, ["GET"]),
        route("/sessions", server.create_session, ["POST"]),
        route("/sessions/{session_id}", server.get_session, ["GET"]),
        route("/sessions/{session_id}", server.delete_session, ["DELETE"]),
        route("/sessions/{session_id}/" + CHAT_PATH, server.chat, ["POST"]),
        route("/sessions/{session_id}/{path:path}", server.passthrough, all_methods),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_exception})
    app.state.server = server
    return app
