"""The fake SGLang ASGI app: OpenAI chat completions, native /generate, aborts, stats, faults.

Why a fake: a session server's races only show under load and faults, and a
real SGLang needs a GPU, is slow to start and cannot be told to fail on turn 3
of session X. This app answers like SGLang does where the session server
looks (``choices[0].meta_info.output_token_logprobs``, ``completion_tokens``,
``finish_reason``, the end-of-turn token) and fails on purpose where told to.

Determinism: an answer, its latency and its fault are a pure function of
(seed, ``X-SMG-Routing-Key``, turn, attempt, prompt ids). Turn and attempt come
from the ``x-turn`` / ``x-attempt`` headers when present and well-formed (a malformed one is
ignored, as a real backend ignores headers it does not know); else the turn is the
number of assistant turns in the prompt and the attempt is how many times this
session already sent this exact prompt. Nothing reads wall-clock time except
``created`` (through the injected Clock); waits use ``asyncio.sleep``.

Exactly-once evidence: every generation is written to a per-session execution
log (``GET /stats``) when it starts and updated when it ends, so a checker can
see that a turn ran once, or twice, or was still running when the client gave up.

Hostile input (issue 13): bodies are read up to ``max_body_bytes`` (413 past
it) and parsed by the same strict rules as the session server
(harness/strict_json.py: no NaN / Infinity, no lone surrogates, nesting up to
``max_json_depth``), so a bad ``model`` or ``rid`` is a 400 and never reaches
the execution log; ``/stats`` and ``/admin/plan`` encode with ``dumps_safe`` so
they answer whatever is stored.

Why a hand-written ASGI router instead of Starlette: transport faults need the
server's ``send`` callable itself (see respond.py), and the fake must serve
thousands of requests per second on one core; a dict lookup on (method, path)
is all the routing it needs.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import os
from array import array
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

from harness.seams import Clock, LoopClock
from harness.strict_json import BodyTooLarge, JsonInputError, dumps_safe, loads_strict
from harness.tokenizer import load_tokenizer

from . import respond
from .generate import Answer, Identity, TokenModel
from .latency import ZERO, Delay, draw_delay, tokens_at
from .plan import MALFORMED_FAULTS, FaultPlan, FaultSpec, PlanError, parse_fault_header, plan_from_text

__all__ = ["FakeSGLang", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 64 * 1024 * 1024
STATS_PAGE_MAX = 100_000  # routing keys in one /stats page at most
STATS_PAGE_DEFAULT = 1_000  # ... when ``after`` is given without ``limit``
MAX_JSON_DEPTH = 64
ANSWERS_KEPT = 64  # checkpoints remembered per routing key (its retries and rollbacks stay well inside)
NO_KEY = "-"
CHAT = "/v1/chat/completions"
GENERATE = "/generate"
MODEL_ID = "fake-sglang"  # the one model this backend serves (/v1/models, /v1/models/{model})
MODELS_PREFIX = "/v1/models/"
_MALFORMED = frozenset(MALFORMED_FAULTS)
_DROPS = frozenset({"reset", "close_mid_body", "sse_cut", "hang"})
_SSE_CT = (b"content-type", b"text/event-stream")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.status, self.type = message, status, type_


@dataclass(slots=True, eq=False)
class _Flight:
    """An in-flight generation that /abort_request can end early."""

    rid: str
    aborted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Req:
    """One parsed generation request."""

    path: str
    ids: array[int]
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    model: str
    rid: str | None
    key: str
    turn: int | None
    attempt: int | None
    request_id: str | None
    fault: FaultSpec | None
    n: int = 1  # choices to answer (OpenAI ``n``): an integer 2..MAX_CHOICES, else 1


MAX_CHOICES = 8


def _error(status: int, type_: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": type_, "message": message}}


def _nonneg_header(value: str) -> int | None:
    """A harness header (``x-turn`` / ``x-attempt``) as a non-negative integer; anything else: None.

    A malformed one is ignored, as a real backend ignores headers it does not know (SGLang reads
    neither): the turn and attempt are then derived from the prompt, as for a client that sends none.
    """
    try:
        v = int(value)
    except ValueError:
        return None
    return v if v >= 0 else None


def _opt_int(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BadRequest(f"{name}: expected a positive integer, got {v!r}")
        return v
    return None


def _text_of(content: Any, i: int) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise BadRequest(f"messages[{i}].content: list parts must be {{'type': 'text', 'text': str}}")
            parts.append(p["text"])
        return "".join(parts)
    raise BadRequest(f"messages[{i}].content: expected a string, null or a list of text parts")


class FakeSGLang:
    """The ASGI app. Construct through :func:`create_app`."""

    def __init__(self, *, seed: int, plan: FaultPlan, model: TokenModel, clock: Clock, boot_id: str = "0") -> None:
        self.seed = seed
        # Continuity of the execution log (issue 13): ``boot_id`` names this process (the CLI gives each
        # process its own), ``resets`` counts ``POST /admin/reset``. A run that reads both at its start and
        # its end knows whether the log it collects covers the whole run; both are deterministic in-process.
        self.boot_id = boot_id
        self.resets = 0
        self.plan = plan
        self.model = model
        self.clock = clock
        self._flights: dict[str, list[_Flight]] = {}
        self.max_body_bytes = MAX_BODY
        self.max_json_depth = MAX_JSON_DEPTH
        self.reset_state()
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", CHAT): self._chat,
            ("POST", GENERATE): self._generate,
            ("POST", "/abort_request"): self._abort,
            ("GET", "/health"): self._health,
            ("GET", "/health_generate"): self._health,
            ("GET", "/stats"): self._stats,
            ("GET", "/get_model_info"): self._model_info,
            ("GET", "/v1/models"): self._models,
            ("GET", "/admin/plan"): self._get_plan,
            ("PUT", "/admin/plan"): self._put_plan,
            ("POST", "/admin/reset"): self._admin_reset,
        }
        self._paths = {p for _, p in self._routes}

    def reset_state(self) -> None:
        """Forget counters, the execution log and the prompt history (``POST /admin/reset``)."""
        self.counters: dict[str, Any] = {
            "requests": 0,
            "generations": 0,
            "inflight": 0,
            "completed": 0,
            "aborted": 0,
            "errors": 0,
            "dropped": 0,
            "malformed": 0,
            "bad_requests": 0,
            "abort_requests": 0,
            "faults": {},
        }
        self.executions: dict[str, list[dict[str, Any]]] = {}
        self._sorted_keys: list[str] = []  # the execution log's keys in order, for /stats pages (rebuilt on growth)
        self._by_rid: dict[str, list[dict[str, Any]]] = {}  # rid -> its executions, for /abort_request's mark
        self._seen: dict[str, dict[bytes, int]] = {}
        self._ordinals: dict[str, int] = {}
        self._global_ordinal = 0
        # per routing key, (length, sha256) of the last few checkpoints it answered (the prompt ids it reported
        # + the completion): where ``retokenized_prompt;from_end=k`` finds the checkpoint a prompt extends
        self._answered: dict[str, list[tuple[int, bytes]]] = {}

    def remember_answer(self, key: str, prompt: Sequence[int], completion: Sequence[int]) -> None:
        """Keep the checkpoint a complete answer lets a session server store (the last ``ANSWERS_KEPT``)."""
        ids = array("q", [*prompt, *completion])
        kept = self._answered.setdefault(key, [])
        kept.append((len(ids), hashlib.sha256(ids.tobytes()).digest()))
        del kept[:-ANSWERS_KEPT]

    def checkpoint_in(self, key: str, ids: Sequence[int]) -> int | None:
        """The length of the longest checkpoint answered for ``key`` that ``ids`` extends (None: none does)."""
        best: int | None = None
        for n, digest in self._answered.get(key, ()):
            longer = (best is None or n > best) and n <= len(ids)
            if longer and hashlib.sha256(array("q", ids[:n]).tobytes()).digest() == digest:
                best = n
        return best

    # ------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is None and scope["method"] == "GET" and scope["path"].startswith(MODELS_PREFIX):
                handler = self._model  # OpenAI's retrieve-model, /v1/models/{model} (SGLang serves it too)
            self.counters["requests"] += 1
            if handler is None:
                if scope["path"] in self._paths:
                    await respond.send_json(send, *_error(405, "method_not_allowed", f"{scope['method']} not allowed"))
                else:
                    await _send_safe(send, *_error(404, "not_found", f"no route {scope['path']}"))
                return
            try:
                await handler(scope, receive, send)
            except BadRequest as exc:
                self.counters["bad_requests"] += 1
                await _send_safe(send, *_error(exc.status, exc.type, exc.message))
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # ------------------------------------------------------------ small endpoints

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond.send_json(send, 200, {"status": "ok"})

    async def _stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /stats``: counters, the execution log, the continuity marks; the log a page at a time if asked.

        ``?limit=N`` (routing keys, 1..``STATS_PAGE_MAX``) and/or ``?after=CURSOR`` (the ``next`` of the page
        before): ``executions`` holds the next N routing keys in code-point order and ``next`` is the cursor
        to ask for after them (null on the last page), so a reader holds one page and the fake encodes one
        (issue 13: the whole log was ~1.4 MB of JSON per 1,000 sessions, encoded and parsed in one piece). The
        cursor is opaque (hex of the last key's UTF-8, lone surrogates passed): any stored key round-trips. A
        page reflects the log when it was served: keys added behind the cursor are not seen by later pages.
        Without either parameter the answer is the whole log, as it always was (other readers, old runners).
        """
        body: dict[str, Any] = {
            "counters": self.counters,
            "executions": self.executions,
            "seed": self.seed,
            "plan": self.plan.source,
            "boot_id": self.boot_id,
            "resets": self.resets,
        }
        page = _page_args(scope.get("query_string", b""))
        if page is not None:
            after, limit = page
            if len(self._sorted_keys) != len(self.executions):  # keys are only ever added (reset_state clears both)
                self._sorted_keys = sorted(self.executions)
            keys = self._sorted_keys
            start = 0 if after is None else bisect.bisect_right(keys, after)
            chosen = keys[start : start + limit]
            body["executions"] = {k: self.executions[k] for k in chosen}
            more = start + limit < len(keys)
            body["next"] = _cursor(chosen[-1]) if more and chosen else None
            body["keys"] = len(keys)
        await _send_safe(send, 200, body)

    async def _model_info(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond.send_json(send, 200, {"model_path": MODEL_ID, "is_generation": True})

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond.send_json(send, 200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})

    async def _model(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"][len(MODELS_PREFIX) :] == MODEL_ID:
            await respond.send_json(send, 200, {"id": MODEL_ID, "object": "model"})
        else:
            await respond.send_json(
                send, *_error(404, "model_not_found", f"no model {scope['path'][len(MODELS_PREFIX) :][:80]!r}")
            )

    async def _get_plan(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_safe(send, 200, self.plan.describe())

    async def _put_plan(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await self._read(scope, receive)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("plan body is not UTF-8") from None
        ctype = _header(scope, b"content-type") or ""
        fmt = "json" if "json" in ctype or text.lstrip().startswith("{") else "toml"
        try:
            plan = plan_from_text(text, "<admin PUT /admin/plan>", fmt=fmt)
        except PlanError as exc:
            raise BadRequest(str(exc), type_="plan_error") from None
        self.plan = plan
        await _send_safe(send, 200, {"ok": True, "plan": plan.describe()})

    async def _admin_reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._read(scope, receive)
        self.reset_state()
        self.resets += 1
        await respond.send_json(send, 200, {"ok": True})

    async def _abort(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._json(await self._read(scope, receive))
        if not isinstance(body, dict):
            raise BadRequest("abort_request: expected a JSON object with 'rid' or 'abort_all'")
        self.counters["abort_requests"] += 1
        if body.get("abort_all") is True:
            flights = [f for fs in self._flights.values() for f in fs]
            named = [e for es in self._by_rid.values() for e in es if e["outcome"] == "inflight"]
        elif isinstance(body.get("rid"), str):
            flights = list(self._flights.get(body["rid"], ()))
            named = self._by_rid.get(body["rid"], [])
        else:
            raise BadRequest("abort_request: expected {'rid': str} or {'abort_all': true}")
        for e in named:  # the execution log says the backend was told, whether or not it was still running
            e["abort_requested"] = True
        for f in flights:
            f.aborted.set()
        await respond.send_json(send, 200, {"aborted": len(flights)})

    # ------------------------------------------------------------ request bodies

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        try:
            return await _read_body(receive, self.max_body_bytes, _header(scope, b"content-length"))
        except BodyTooLarge as exc:
            raise BadRequest(str(exc), status=413, type_="request_too_large") from None

    def _json(self, raw: bytes) -> Any:
        try:
            return loads_strict(raw, max_depth_limit=self.max_json_depth)
        except JsonInputError as exc:
            raise BadRequest(str(exc)) from None

    # ------------------------------------------------------------ generation

    def _parse(self, scope: Scope, body: Any, path: str) -> _Req:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        ids: array[int] | None = None
        raw_ids = body.get("input_ids")
        if raw_ids is not None:
            if not isinstance(raw_ids, list) or not raw_ids:
                raise BadRequest("input_ids: expected a non-empty list of token ids")
            try:
                ids = array("I", raw_ids)  # unsigned: a negative id is an OverflowError too
            except (TypeError, OverflowError):
                raise BadRequest("input_ids: every element must be a non-negative integer token id") from None
        elif path == CHAT:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise BadRequest("expected 'input_ids' (list of ints) or 'messages' (non-empty list)")
            clean: list[dict[str, Any]] = []
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise BadRequest(f"messages[{i}]: expected an object with a string 'role'")
                mm = dict(m)
                mm["content"] = _text_of(m.get("content"), i)
                clean.append(mm)
            try:
                ids = array("I", self.model.render_prompt(clean))
            except Exception as exc:  # a template error is the caller's malformed message
                raise BadRequest(f"messages: the chat template cannot render them: {exc}") from None
        else:
            text = body.get("text")
            if not isinstance(text, str) or not text:
                raise BadRequest("expected 'input_ids' (list of ints) or 'text' (non-empty string)")
            ids = array("I", self.model.encode(text))
        if path == CHAT:
            max_tokens = _opt_int(body, "max_tokens", "max_completion_tokens")
        else:
            sp = body.get("sampling_params", {})
            if sp is None:
                sp = {}
            if not isinstance(sp, dict):
                raise BadRequest("sampling_params: expected an object")
            max_tokens = _opt_int(sp, "max_new_tokens")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest(f"stream: expected a boolean, got {stream!r}")
        model = body.get("model", "fake-sglang")
        if not isinstance(model, str):
            raise BadRequest("model: expected a string")
        rid = body.get("rid")
        if rid is not None and not isinstance(rid, str):
            raise BadRequest("rid: expected a string")
        key, turn, attempt, request_id, fault = NO_KEY, None, None, None, None
        for name, value in scope["headers"]:
            if name == b"x-smg-routing-key":
                key = value.decode("latin-1")
            elif name == b"x-turn":
                turn = _nonneg_header(value.decode("latin-1"))
            elif name == b"x-attempt":
                attempt = _nonneg_header(value.decode("latin-1"))
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"x-fake-fault":
                try:
                    fault = parse_fault_header(value.decode("latin-1"))
                except PlanError as exc:
                    raise BadRequest(str(exc), type_="fault_header_error") from None
        n = body.get("n") if path == CHAT else None
        choices = n if isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= MAX_CHOICES else 1
        return _Req(path, ids, len(ids), max_tokens, stream, model, rid, key, turn, attempt, request_id, fault, choices)

    def _identify(self, req: _Req) -> tuple[Identity, int, int]:
        prompt_digest = hashlib.sha256(req.ids.tobytes()).digest()
        seen = self._seen.setdefault(req.key, {})
        nth = seen.get(prompt_digest, 0)
        seen[prompt_digest] = nth + 1
        ordinal = self._ordinals.get(req.key, 0)
        self._ordinals[req.key] = ordinal + 1
        global_ordinal = self._global_ordinal
        self._global_ordinal += 1
        turn = req.turn if req.turn is not None else self.model.count_turns(req.ids)
        attempt = req.attempt if req.attempt is not None else nth
        return Identity(self.seed, req.key, turn, attempt, prompt_digest.hex()[:32]), ordinal, global_ordinal

    def _choose_fault(
        self, req: _Req, ident: Identity, ordinal: int, global_ordinal: int
    ) -> tuple[FaultSpec | None, str | None]:
        """The fault for this request and where it came from: ``header`` (``x-fake-fault``) or
        ``plan:<rule name, else its index>``, recorded in the execution log for fault attribution."""
        if req.fault is not None:
            return (None, None) if req.fault.name == "none" else (req.fault, "header")
        for i, rule in enumerate(self.plan.rules):
            if not rule.matches(
                session=req.key,
                turn=ident.turn,
                attempt=ident.attempt,
                ordinal=ordinal,
                global_ordinal=global_ordinal,
                path=req.path,
            ):
                continue
            if rule.probability < 1.0 and ident.rng(f"rule{i}").random() >= rule.probability:
                continue
            return (None, None) if rule.fault.name == "none" else (rule.fault, f"plan:{rule.name or i}")
        return None, None

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, CHAT)

    async def _generate(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, GENERATE)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        req = self._parse(scope, self._json(await self._read(scope, receive)), path)
        ident, ordinal, global_ordinal = self._identify(req)
        fault, fault_source = self._choose_fault(req, ident, ordinal, global_ordinal)
        gen = self.plan.generation
        if req.prompt_tokens >= gen.context_length:
            raise BadRequest(
                f"The input ({req.prompt_tokens} tokens) is longer than the model's context length "
                f"({gen.context_length} tokens).",
                type_="context_length_exceeded",
            )
        fname = fault.name if fault is not None else None
        forced_calls = int(fault.get("count")) if fault is not None and fname == "tool_calls" else None
        thinking = self.model.wants_thoughts(req.ids) if self.model.thinks else None
        answer = self.model.answer(ident, gen, tool_calls=forced_calls, thinking=thinking, parser=gen.reasoning_parser)
        spike: float | None = None
        if fault is not None and fname == "spike":
            ms = fault.get("ms")
            spike = float(ms) if ms is not None else (self.plan.latency.spike_ms or 2000.0)
        lat = self.plan.latency
        if lat.model == "none" and lat.spike_probability == 0 and spike is None:
            delay = ZERO  # the common benchmark/test case: skip seeding a generator
        else:
            delay = draw_delay(lat, ident.rng("latency"), spike_ms=spike)
        rid = req.rid or _rid(ident, req.request_id)
        self.counters["generations"] += 1
        self.counters["inflight"] += 1
        if fname is not None:
            faults = self.counters["faults"]
            faults[fname] = faults.get(fname, 0) + 1
        entry: dict[str, Any] = {
            "rid": rid,
            "request_id": req.request_id,
            "path": path,
            "turn": ident.turn,
            "attempt": ident.attempt,
            "ordinal": ordinal,
            "prompt_tokens": req.prompt_tokens,
            "completion_tokens": None,
            "finish_reason": None,
            "outcome": "inflight",
            "status": None,
            "fault": fault.to_json() if fault is not None else None,
            "fault_source": fault_source,
            "content_sha": None,
            "latency_ms": round(delay.total(len(answer.body_ids) + 1) * 1000, 3),
        }
        self.executions.setdefault(req.key, []).append(entry)
        self._by_rid.setdefault(rid, []).append(entry)
        flight = _Flight(rid)
        self._flights.setdefault(rid, []).append(flight)
        try:
            run = _Run(self, req, ident, answer, delay, fault, rid, flight, entry)
            run.extra = [  # choices 1.. of an n > 1 request: other samples of the same prompt
                self.model.answer(
                    replace(ident, prompt_sha=f"{ident.prompt_sha}/choice{i}"),
                    gen,
                    tool_calls=forced_calls,
                    thinking=thinking,
                    parser=gen.reasoning_parser,
                )
                for i in range(1, req.n)
            ]
            await run.execute(receive, send)
        except BaseException:
            if entry["outcome"] == "inflight":
                entry["outcome"] = "dropped"
            raise
        finally:
            self.counters["inflight"] -= 1
            outcome = entry["outcome"]
            if outcome in ("completed", "aborted", "dropped", "malformed"):
                self.counters[outcome] += 1
            elif outcome == "error":
                self.counters["errors"] += 1
            fs = self._flights.get(rid)
            if fs is not None:
                fs.remove(flight)
                if not fs:
                    del self._flights[rid]


class _Run:
    """Carry out one generation: wait, decide how it ends, send it (or break it)."""

    def __init__(
        self,
        app: FakeSGLang,
        req: _Req,
        ident: Identity,
        answer: Answer,
        delay: Delay,
        fault: FaultSpec | None,
        rid: str,
        flight: _Flight,
        entry: dict[str, Any],
    ) -> None:
        self.app, self.req, self.ident, self.answer, self.delay = app, req, ident, answer, delay
        self.fault, self.fname = fault, (fault.name if fault is not None else None)
        self.rid, self.flight, self.entry = rid, flight, entry
        self.model = app.model
        self.full_len = len(answer.body_ids) + 1
        self.start = app.clock.monotonic() if not delay.is_zero or self.fname == "hang" else 0.0
        hdrs = [(b"x-fake-fault-applied", self.fname.encode())] if self.fname else []
        self.headers: list[tuple[bytes, bytes]] = hdrs
        self.extra: list[Answer] = []  # the other choices of an n > 1 request (complete generations)

    # -- timing

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless aborted first; True if aborted."""
        ev = self.flight.aborted
        if ev.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds):
                await ev.wait()
        except TimeoutError:
            return False
        return True

    def _elapsed(self) -> float:
        return self.app.clock.monotonic() - self.start

    # -- outcome

    def _plan_end(self) -> tuple[str, int]:
        """Finish reason and completion length before any abort: stop, or length (max_tokens / fault)."""
        n = self.full_len
        if self.fname == "length":
            t = self.fault.get("tokens") if self.fault is not None else None
            k = t if t is not None else n // 2
            return "length", min(k, n - 1)
        mt = self.req.max_tokens
        if mt is not None and mt < n:
            return "length", mt
        return "stop", n

    def _abort_tokens(self, n: int) -> int:
        f = self.fault
        assert f is not None
        if f.get("tokens") is not None:
            return int(min(f.get("tokens"), max(0, n - 1)))
        frac = f.get("fraction")
        if frac is None:
            frac = self.ident.rng("fault").uniform(0.1, 0.9)
        return min(int(n * frac), max(0, n - 1))

    async def execute(self, receive: Receive, send: Send) -> None:
        f = self.fname
        if f == "reset":
            self.entry["outcome"] = "dropped"
            await respond.drop_connection(send)
            return
        if f is not None and f.startswith("http_"):
            await self._http_error(send)
            return
        if f == "hang":
            await self._hang(receive, send)
            return
        if self.req.stream:
            await self._stream(send)
            return
        finish, k = self._plan_end()
        if f == "abort":
            k = self._abort_tokens(k)
            aborted = await self._wait(self.delay.total(self.full_len) * (k / max(1, self.full_len)))
            if aborted:
                k = min(k, tokens_at(self.delay, self._elapsed(), self.full_len))
            finish = "abort"
        elif self.delay is not ZERO:
            if await self._wait(self.delay.total(k)):
                finish, k = "abort", min(k, tokens_at(self.delay, self._elapsed(), self.full_len))
        elif self.flight.aborted.is_set():
            finish, k = "abort", 0
        obj = self._body(finish, k)
        await self._send_body(send, obj)

    async def _http_error(self, send: Send) -> None:
        assert self.fault is not None
        status = self.fault.status or 500
        msg = self.fault.get("message")
        if msg is None:
            msg = {
                400: "The input is longer than the model's context length (fake_sglang: forced).",
                429: "Too many requests: the scheduler queue is full (fake_sglang: forced).",
                503: "Service unavailable: the engine is updating weights (fake_sglang: forced).",
            }.get(status, f"Internal server error (fake_sglang: forced http_{status}).")
        typ = {400: "context_length_exceeded", 429: "rate_limit_exceeded", 503: "service_unavailable"}.get(
            status, "server_error"
        )
        self.entry.update(outcome="error", status=status)
        await respond.send_json(send, status, {"error": {"type": typ, "message": msg}}, self.headers)

    async def _hang(self, receive: Receive, send: Send) -> None:
        """Answer nothing until the client leaves, an abort arrives or the bound passes (then drop)."""
        assert self.fault is not None
        bound = float(self.fault.get("seconds"))

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        gone = asyncio.ensure_future(client_gone())
        aborted = asyncio.ensure_future(self.flight.aborted.wait())
        try:
            done, _ = await asyncio.wait({gone, aborted}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (gone, aborted):
                t.cancel()
        if aborted in done:
            await self._send_body(send, self._body("abort", 0))
            return
        self.entry["outcome"] = "dropped"
        if gone in done:
            return
        await respond.drop_connection(send)

    # -- bodies

    def _completion(self, finish: str, k: int) -> tuple[list[int], str | None, list[dict[str, Any]]]:
        a = self.answer
        if finish == "stop":
            return a.completion_ids(True), a.content, a.tool_calls
        ids = a.completion_ids(True)[:k]
        text = self.model.decode(ids)
        if a.reasoning is not None:  # the parser splits what was generated so far
            text = self.model.split(a, text)[0]
        return ids, text, []

    def _reasoning(self, finish: str, k: int) -> str | None:
        """The message's ``reasoning_content`` (reasoning-parser mode), None when there is none."""
        a = self.answer
        if a.reasoning is None:
            return None
        if finish == "stop":
            return a.reasoning
        return self.model.split(a, self.model.decode(a.completion_ids(True)[:k]))[1]

    def _meta(self, finish: str, ids: list[int]) -> dict[str, Any]:
        if finish == "stop":
            fr: dict[str, Any] = {"type": "stop", "matched": self.answer.end_id}
        elif finish == "length":
            fr = {"type": "length", "length": len(ids)}
        else:
            fr = {"type": "abort", "message": "Abort request (fake_sglang)"}
        lps = self.answer.logprobs
        meta: dict[str, Any] = {
            "id": self.rid,
            "finish_reason": fr,
            "prompt_tokens": self.req.prompt_tokens,
            "completion_tokens": len(ids),
            "cached_tokens": 0,
            "output_token_logprobs": [[lps[i], t] for i, t in enumerate(ids)],
        }
        prompt: Sequence[int] = self.req.ids
        if self.fname == "retokenized_prompt":
            meta["prompt_token_ids"] = prompt = self._retokenized()
        if finish != "abort":  # an aborted answer is kept provisional: no checkpoint (CONTEXT.md)
            self.app.remember_answer(self.req.key, prompt, ids)
        return meta

    def _retokenized(self) -> list[int]:
        """The prompt a re-tokenizing backend reports: the sent ids with token ``at`` (else the last) replaced
        (by ``alt`` when the fault names a token id other than the one sent).

        The model "saw" other tokens than the session server sent, so the server's new checkpoint
        (prompt_token_ids + completion) breaks the prefix of the stored one whenever ``at`` falls inside it.
        ``from_end = k`` counts instead from the end of the checkpoint the prompt extends (the longest
        checkpoint this fake answered for the routing key that prefixes the sent ids; 1 is its last token,
        e.g. the end-of-turn token), or from the prompt's end when none does (a first turn); the execution
        log then also says ``retokenized_checkpoint`` (that checkpoint's length, null when none).
        """
        ids = list(self.req.ids)
        at = self.fault.get("at") if self.fault is not None else 0
        from_end = self.fault.get("from_end") if self.fault is not None else None
        if from_end is not None:
            base = self.app.checkpoint_in(self.req.key, ids)
            self.entry["retokenized_checkpoint"] = base
            at = max((base if base is not None else len(ids)) - int(from_end), 0)
        i = min(int(at if at is not None else 0), len(ids) - 1)
        forced = self.fault.get("alt") if self.fault is not None else None
        if forced is not None and int(forced) != ids[i]:
            alt = int(forced)  # e.g. a smaller id than the one sent: a prefix check must not compare by order
        else:
            alt = next((t for t in self.model.encode(" retokenized") if t != ids[i]), ids[i] + 1)
        ids[i] = alt
        self.entry["retokenized_at"] = i
        return ids

    def _body(self, finish: str, k: int) -> dict[str, Any]:
        ids, content, calls = self._completion(finish, k)
        meta = self._meta(finish, ids)
        self.entry.update(
            completion_tokens=len(ids),
            finish_reason=finish,
            outcome="aborted" if finish == "abort" else "completed",
            status=200,
            content_sha=hashlib.sha1(content.encode()).hexdigest() if content is not None else None,
        )
        if self.req.path == GENERATE:
            meta["output_token_logprobs"] = [[lp, t, None] for lp, t in meta["output_token_logprobs"]]
            text = self.answer.body_text if finish == "stop" else content
            return {"text": text, "output_ids": ids, "meta_info": meta}
        oai_finish = "tool_calls" if finish == "stop" and calls else finish
        message: dict[str, Any] = {"role": "assistant", "content": content}
        reasoning = self._reasoning(finish, k)
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        first = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": oai_finish,
            "matched_stop": self.answer.end_id if finish == "stop" else None,
            "meta_info": meta,
        }
        return {
            "id": self.rid,
            "object": "chat.completion",
            "created": int(self.app.clock.wall()),
            "model": self.req.model,
            "choices": [first, *(self._other_choice(i, a) for i, a in enumerate(self.extra, 1))],
            "usage": {
                "prompt_tokens": self.req.prompt_tokens,
                "completion_tokens": len(ids),
                "total_tokens": self.req.prompt_tokens + len(ids),
            },
        }

    def _other_choice(self, index: int, a: Answer) -> dict[str, Any]:
        """Choice ``index`` of an n > 1 answer: a complete generation of its own (faults, aborts, ``length``
        and the execution log are choice 0's; ``usage`` stays choice 0's too: docs/fake_sglang.md)."""
        ids = a.completion_ids(True)
        message: dict[str, Any] = {"role": "assistant", "content": a.content}
        if a.reasoning is not None:
            message["reasoning_content"] = a.reasoning
        if a.tool_calls:
            message["tool_calls"] = a.tool_calls
        meta = {
            "id": self.rid,
            "finish_reason": {"type": "stop", "matched": a.end_id},
            "prompt_tokens": self.req.prompt_tokens,
            "completion_tokens": len(ids),
            "cached_tokens": 0,
            "output_token_logprobs": [[a.logprobs[i], t] for i, t in enumerate(ids)],
        }
        return {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if a.tool_calls else "stop",
            "matched_stop": a.end_id,
            "meta_info": meta,
        }

    def _malform(self, obj: dict[str, Any]) -> None:
        f = self.fname
        if f not in _MALFORMED:
            return
        self.entry["outcome"] = "malformed"
        holder = obj["choices"][0] if "choices" in obj else obj
        if f == "no_meta_info":
            holder.pop("meta_info", None)
        elif f == "null_content":
            if "message" in holder:
                holder["message"]["content"] = None
            else:
                holder["text"] = None
        elif f == "null_first_choice":  # a second choice (n > 1 answers) after a first that is not an object
            if "choices" in obj:
                obj["choices"] = [None, *obj["choices"]]
        elif f == "empty_choices":  # a list, but no choice in it (no message, no meta_info)
            if "choices" in obj:
                obj["choices"] = []
        elif f == "bad_tool_call":  # a tool call without a name: a message no chat template can render back
            if "message" in holder:
                call = {"id": "call_bad", "type": "function", "function": {"name": None, "arguments": "{}"}}
                holder["message"]["tool_calls"] = [call]
        elif f == "logprob_objects":  # the count still matches; only each entry's shape is not [logprob, token_id]
            lps = holder["meta_info"]["output_token_logprobs"]
            holder["meta_info"]["output_token_logprobs"] = [{"logprob": p[0], "token_id": p[1]} for p in lps]
        elif f == "logprob_mismatch":
            lps = holder["meta_info"]["output_token_logprobs"]
            if lps:
                lps.pop()
            else:
                lps.append([-0.5, self.answer.end_id])

    async def _send_body(self, send: Send, obj: dict[str, Any]) -> None:
        self._malform(obj)
        body = respond.dumps(obj)
        f = self.fname
        if f == "invalid_json":
            await respond.send_bytes(send, 200, body[: max(1, len(body) // 2)], self.headers)
        elif f in ("close_mid_body", "sse_cut"):
            self.entry["outcome"] = "dropped"
            frac = float(self.fault.get("fraction")) if self.fault is not None else 0.5
            head = body[: int(len(body) * frac)]
            await respond.close_mid_body(send, 200, head, len(body), [respond.JSON_CT, *self.headers])
        elif f == "slow_drip":
            await self._drip(send, body)
        else:
            await respond.send_bytes(send, 200, body, self.headers)

    async def _drip(self, send: Send, body: bytes) -> None:
        assert self.fault is not None
        chunks = max(1, min(int(self.fault.get("chunks")), len(body)))
        pause = float(self.fault.get("seconds")) / chunks
        hdrs = [respond.JSON_CT, (b"content-length", str(len(body)).encode()), *self.headers]
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})
        step = -(-len(body) // chunks)
        for i in range(0, len(body), step):
            await asyncio.sleep(pause)
            last = i + step >= len(body)
            await send({"type": "http.response.body", "body": body[i : i + step], "more_body": not last})

    # -- SSE

    async def _stream(self, send: Send) -> None:
        """Server-sent events: a role chunk, one chunk per decoded token, a final chunk, usage, [DONE].

        Tokens arrive on the latency model's schedule (ttft, then itl each), so
        an abort mid-stream ends it with the tokens sent so far.
        """
        finish, k = self._plan_end()
        if self.fname == "abort":
            k, finish = self._abort_tokens(k), "abort"
        if self.req.path == GENERATE:
            if await self._wait(self.delay.total(k)):
                finish, k = "abort", min(k, tokens_at(self.delay, self._elapsed(), self.full_len))
            await self._sse_start(send)
            await self._flush(send, [respond.dumps(self._body(finish, k))], done=True)
            return
        ids_all = self.answer.completion_ids(True)
        content = self.answer.content
        parsed = self.answer.reasoning is not None
        created = int(self.app.clock.wall())

        def chunk(delta: dict[str, Any], fr: str | None = None, **extra: Any) -> bytes:
            c = {
                "id": self.rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.req.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": fr, **extra}],
            }
            return respond.dumps(c)

        cut_after: int | None = None
        if self.fname in ("sse_cut", "close_mid_body"):
            frac = float(self.fault.get("fraction")) if self.fault is not None else 0.5
            cut_after = int(k * frac)
        await self._sse_start(send)
        frames = [chunk({"role": "assistant", "content": ""})]
        sent_text, produced = "", 0
        if await self._wait(self.delay.ttft_s):
            finish, k = "abort", 0
        last_token = k if finish != "stop" else len(ids_all) - 1  # the end token has no text
        gap = self.delay.itl_s
        if self.fname == "slow_drip" and self.fault is not None:  # the drip spreads over the tokens
            gap += float(self.fault.get("seconds")) / max(1, last_token)
        for i in range(1, last_token + 1):
            if cut_after is not None and produced >= cut_after:
                break
            if i > 1 and await self._wait(gap):
                finish, k = "abort", i - 1
                break
            produced = i
            if parsed:  # the parser's deltas are not token-aligned: the parts go whole after the last token
                await self._flush(send, frames)
                continue
            text = self.model.decode(ids_all[:i])
            if finish == "stop":
                text = text[: len(content)]
            if len(text) > len(sent_text) and not text.endswith("\ufffd"):
                frames.append(chunk({"content": text[len(sent_text) :]}))
                sent_text = text
            await self._flush(send, frames)
        if cut_after is not None:
            await self._flush(send, frames)
            self.entry.update(outcome="dropped", completion_tokens=produced, status=200)
            await respond.close_now(send)
            return
        obj = self._body(finish, k)
        final_text = obj["choices"][0]["message"]["content"]
        if parsed:
            thought = obj["choices"][0]["message"].get("reasoning_content")
            if thought:
                frames.append(chunk({"reasoning_content": thought}))
            if finish == "stop" and final_text:
                frames.append(chunk({"content": final_text}))
                sent_text = final_text
        if finish != "stop" and final_text and len(final_text) > len(sent_text):
            frames.append(chunk({"content": final_text[len(sent_text) :]}))
        if finish == "stop" and self.answer.tool_calls:
            frames.append(chunk({"tool_calls": [{"index": j, **tc} for j, tc in enumerate(self.answer.tool_calls)]}))
        self._malform(obj)
        ch = obj["choices"][0]
        extra = {"meta_info": ch["meta_info"]} if "meta_info" in ch else {}
        delta: dict[str, Any] = {"content": None} if self.fname == "null_content" else {}
        frames.append(chunk(delta, ch["finish_reason"], **extra))
        usage = {"id": self.rid, "object": "chat.completion.chunk", "choices": [], "usage": obj["usage"]}
        frames.append(respond.dumps(usage))
        if self.fname == "invalid_json":
            frames[-2] = frames[-2][: len(frames[-2]) // 2]
        await self._flush(send, frames, done=True)

    async def _sse_start(self, send: Send) -> None:
        hdrs = [_SSE_CT, (b"cache-control", b"no-cache"), *self.headers]
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})

    async def _flush(self, send: Send, frames: list[bytes], done: bool = False) -> None:
        if not frames and not done:
            return
        data = b"".join(b"data: " + f + b"\n\n" for f in frames)
        frames.clear()
        if done:
            data += b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": not done})


# ---------------------------------------------------------------- helpers


def _rid(ident: Identity, request_id: str | None) -> str:
    raw = f"{ident.seed}\x1f{ident.key}\x1f{ident.turn}\x1f{ident.attempt}\x1f{ident.prompt_sha}\x1f{request_id}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def _read_body(receive: Receive, limit: int = MAX_BODY, declared: str | None = None) -> bytes:
    """The request body; BodyTooLarge as soon as it is known to exceed ``limit`` (nothing more is read)."""
    declared = (declared or "").strip()
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
        if not msg.get("more_body", False):
            break
    return b"".join(parts)


def _cursor(key: str) -> str:
    """A /stats page cursor: the key's UTF-8 in hex (lone surrogates passed through: any stored key has one)."""
    return key.encode("utf-8", "surrogatepass").hex()


def _page_args(query: bytes) -> tuple[str | None, int] | None:
    """``/stats``'s paging parameters (after-key or None, limit), None when neither is given; 400 when malformed."""
    qs = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    if "limit" not in qs and "after" not in qs:
        return None
    raw_limit = qs.get("limit", [str(STATS_PAGE_DEFAULT)])[-1]
    ok = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 7
    if not ok or not 1 <= int(raw_limit) <= STATS_PAGE_MAX:
        raise BadRequest(f"/stats limit must be an integer in 1..{STATS_PAGE_MAX}, not {raw_limit[:40]!r}")
    after: str | None = None
    if "after" in qs:
        raw = qs["after"][-1]
        try:
            after = bytes.fromhex(raw).decode("utf-8", "surrogatepass")
        except ValueError:
            raise BadRequest(f"/stats after must be a cursor a page gave (hex), not {raw[:40]!r}") from None
    return after, int(raw_limit)


async def _send_safe(send: Send, status: int, obj: Any) -> None:
    """JSON that always encodes (a stored id with a lone surrogate must not make /stats fail)."""
    await respond.send_bytes(send, status, dumps_safe(obj))


def create_app(
    *,
    seed: int = 0,
    plan: FaultPlan | None = None,
    tokenizer: Any = None,
    clock: Clock | None = None,
    boot_id: str = "0",
) -> FakeSGLang:
    """Build the fake SGLang ASGI app.

    ``tokenizer`` is a loaded HF tokenizer, a path to a tokenizer directory, or
    None for the shipped one. ``clock`` stamps ``created`` and measures elapsed
    time for aborts (default: the event loop's clock). ``boot_id`` is reported in
    ``/stats`` so that a run can tell a restarted backend (another id) from the
    one it started with; the CLI gives every process its own.
    """
    tok = load_tokenizer(tokenizer) if tokenizer is None or isinstance(tokenizer, str | os.PathLike) else tokenizer
    return FakeSGLang(
        seed=seed, plan=plan or FaultPlan(), model=_token_model(tok), clock=clock or LoopClock(), boot_id=boot_id
    )


_MODELS: dict[int, TokenModel] = {}


def _token_model(tok: Any) -> TokenModel:
    """One TokenModel per tokenizer object: building it encodes the word list (a few ms)."""
    m = _MODELS.get(id(tok))
    if m is None or m.tok is not tok:
        m = TokenModel(tok)
        _MODELS[id(tok)] = m
    return m
