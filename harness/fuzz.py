"""Client bad input as a workload: wrong bodies derived from the OpenAI chat request schema.

Why: a session server sits between thousands of careless rollout workers
and the GPU. A body with ``messages`` as a string, a content part that is not
text, a ``NaN`` temperature, an id full of odd bytes: each is normal traffic
at that scale, and each must get a 4xx, never a 500 (a 500 is indistinguishable
from a server bug, and a handler that crashes halfway may have changed state).
CONTEXT.md: none of it may produce a 500 or lose stored data.

``[workload] fuzz = N`` sends N such requests, derived deterministically from
the scenario seed (a seeded ``random.Random`` over a table of the request's
keys and their JSON types, and a fixed list of shapes per category), so a
failing case replays from (file, seed). Before them the fuzzer creates two
sessions on the first server and gives each one valid turn: a *victim* that
the chat cases address and a *canary* that nothing addresses. It reads both
back (``GET``) before and after; the ``bad_input`` checker compares the two
bodies on what the protocol promises (the records, the token ids), since no
request to another session may change the canary, and a rejected request may
not change the victim either.

Every request is a history operation of process ``fuzzer``: chats to the
victim as ``f: "chat"`` (they are chat requests; a case the server accepts is
a real turn the other checkers judge too), everything else as ``f: "fuzz"``;
both carry ``fuzz`` (the case name) and ``expect``: ``"4xx"`` where no
correct server can accept the request (not JSON, not an object, no usable
``messages``, a wrong method, an unknown session), ``"no_5xx"`` where a
server may forward it and the backend decide (a wrong type at an optional
key, an odd role or content part).

After the cases, a *rollback probe* on a third session: two committed turns
(the first asks for ``n = 2`` choices and the session goes on from
``choices[0]``, the one a server records), then a request that diverges before the first assistant turn, which would
discard two assistant steps (CONTEXT.md: at most one, else 400): ``expect``
``"4xx"``; then the next legal turn of that session as a plain OpenAI client
sends it, without the harness's ``x-turn`` / ``x-attempt`` headers
(``expect = "no_5xx"``: a server may not depend on headers of our own), and
the turn after it with those headers malformed (``x-turn: two``,
``x-attempt: -1``; careless input: never a 500, and the backend ignores them)
and its user message as OpenAI content parts (one ``text`` part, legal: its
text must reach the model, token_state rule 5, unless the chat template drops
list content). Before its turns, one legal
pass-through ``POST generate`` of that session that the fake answers with a
connection reset (``x-fake-fault: reset``), a chat whose answer's
``choices`` start with ``null`` (``null_first_choice``) and one whose
``choices`` are empty (``empty_choices``) and one whose message holds a
tool call without a name (``bad_tool_call``): a 502 each, never a 500.

Last, an *HTTP probe* on the victim (``_Fuzzer.http_probe``): a chat with ``stream`` a string, one with
``chat_template_kwargs`` a string, and through the pass-through ``GET v1/models/m1`` and ``GET v1/models/m``
(models the backend does not serve: its 404; the one-character id is the shortest that extends
``/v1/models/``), ``GET v1/models-list`` (a path that only starts like them: off the reference server's
allowlist), ``GET stats`` (the fake's control plane: never its 2xx), a ``POST generate`` one byte past 4 MiB
and a small one whose ``Content-Length`` has leading zeros (never a 413); each reply's header counts
are recorded (``framing``), so http_framing judges what RFC 9110 requires of the status (a 401 carries
``WWW-Authenticate``; a 412 answers only a request with a precondition). Then a *template probe*
(``_Fuzzer.template_probe``): a chat ending in a tool result that no tool call precedes, which a strict chat
template refuses (a 4xx) and a lenient one renders (a turn), never a 5xx.

Each category's shapes are drawn in turn from a seeded start (``_cycle``), so a run sends every shape of a
category once the category has had as many cases as it has shapes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from harness.agents._clients import Upload
from harness.history import History
from harness.scenario import Scenario
from harness.seams import IdSource

__all__ = ["CATEGORIES", "Case", "derive_cases", "run_fuzz"]

_SYSTEM = {"role": "system", "content": "You answer briefly."}
_USER = {"role": "user", "content": "Name one prime number."}
_BASE = [_SYSTEM, _USER]
_PARTS_TEXT = "And once more, as content parts."
_MODEL = "fake-model"
BIG_BODY = 4 * 1024 * 1024 + 1  # bytes: one past the reference server's default max_body_bytes (config.py)

# The OpenAI chat request: key -> the JSON types it accepts.
SCHEMA: dict[str, tuple[str, ...]] = {
    "model": ("string",),
    "messages": ("array",),
    "temperature": ("number", "integer", "null"),
    "top_p": ("number", "integer", "null"),
    "n": ("integer", "null"),
    "max_tokens": ("integer", "null"),
    "stream": ("boolean", "null"),
    "stop": ("string", "array", "null"),
    "presence_penalty": ("number", "integer", "null"),
    "frequency_penalty": ("number", "integer", "null"),
    "logit_bias": ("object", "null"),
    "user": ("string",),
    "seed": ("integer", "null"),
    "tools": ("array",),
    "tool_choice": ("string", "object"),
    "response_format": ("object",),
}
SAMPLES: dict[str, list[Any]] = {
    "string": ["x", "", "\u00fc\u00f1\u00ee\u0107\u00f8d\u00e9", "9" * 40],
    "integer": [3, -1, 0, 10**30],
    "number": [0.5, -1e308, 1e-320],
    "boolean": [True, False],
    "null": [None],
    "array": [[], [1, "a"], [[[]]]],
    "object": [{}, {"k": 1}, {"": None}],
}
ODD_IDS = (
    "00000000000000000000000000000000",
    "%2e%2e",
    "%00",
    "x" * 3000,
    "%C3%BCn%C3%AF",
    "%20",
    "a%2Fb",
    "-1",
    "null",
    "%FF%FE",
)


@dataclass(frozen=True)
class Case:
    """One bad request. ``path`` may hold ``{victim}``; ``body`` is the raw bytes sent (None: no body)."""

    name: str
    category: str
    method: str
    path: str
    body: bytes | None
    expect: str  # "4xx" | "no_5xx"
    chat: bool = False  # a chat request to the victim (recorded as f="chat")
    headers: tuple[tuple[str, str], ...] = ()  # sent as well (non-chat cases)
    # a slow link (harness.agents.Upload): the body in ``pieces`` over ``upload_s``, its Content-Length
    # declared, or (``chunked``) framed chunked with no length; 1 piece: the body at once
    pieces: int = 1
    upload_s: float = 0.0
    chunked: bool = False


def _dumps(x: Any) -> bytes:
    import json

    return json.dumps(x, ensure_ascii=False).encode("utf-8")


def _cycle(rng: random.Random, table: list[Any] | tuple[Any, ...], key: str) -> Any:
    """The next entry of ``table`` for this run: a seeded start, then the table in turn.

    A plain ``rng.choice`` leaves some shapes undrawn at one seed however long the run (at seed 0 the library
    never sent the pass-through's ``x/../`` spelling or the PUT to the chat path, so the server code they reach
    ran in no scenario); in turn, every shape of a category is sent once the category has had ``len(table)``
    cases. It takes the same one draw from ``rng`` that ``choice`` does, so the other categories' cases (and
    every case of a run shorter than one turn round the table) are unchanged.
    """
    draw = rng.randrange(len(table))
    state: dict[str, list[int]] = rng.__dict__.setdefault("_fuzz_cycle", {})
    at = state.setdefault(key, [draw, 0])
    i = (at[0] + at[1]) % len(table)
    at[1] += 1
    return table[i]


def _chat_case(name: str, category: str, body: Any, expect: str) -> Case:
    raw = body if isinstance(body, bytes) else _dumps(body)
    return Case(name, category, "POST", "/sessions/{victim}/v1/chat/completions", raw, expect, chat=True)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _wrong_type(rng: random.Random) -> Case:
    key = rng.choice(sorted(SCHEMA))
    wrong = [t for t in sorted(SAMPLES) if t not in SCHEMA[key]]
    t = rng.choice(wrong)
    value = rng.choice(SAMPLES[t])
    body = {"model": _MODEL, "messages": list(_BASE), key: value}
    expect = "4xx" if key == "messages" else "no_5xx"
    return _chat_case(f"wrong_type:{key}={_json_type(value)}", "wrong_type", body, expect)


def _messages_shape(rng: random.Random) -> Case:
    shapes: list[tuple[str, Any]] = [
        ("missing", None),
        ("empty", []),
        ("string", "hello"),
        ("object", {"role": "user", "content": "hi"}),
        ("number", 7),
        ("null", "NULL"),
    ]
    label, value = _cycle(rng, shapes, "messages_shape")
    body: dict[str, Any] = {"model": _MODEL}
    if label == "null":
        body["messages"] = None
    elif label != "missing":
        body["messages"] = value
    return _chat_case(f"messages:{label}", "messages_shape", body, "4xx")


def _item_not_object(rng: random.Random) -> Case:
    item: Any = rng.choice([1, "hi", None, [], True, 2.5])
    at = rng.randrange(2)
    msgs: list[Any] = list(_BASE)
    msgs.insert(at, item)
    return _chat_case(
        f"messages[{at}]={_json_type(item)}", "item_not_object", {"model": _MODEL, "messages": msgs}, "4xx"
    )


def _bad_role(rng: random.Random) -> Case:
    roles: list[tuple[str, Any]] = [
        ("missing", None),
        ("integer", 1),
        ("empty", ""),
        ("unknown", "wizard"),
        ("null", "NULL"),
        ("array", ["user"]),
        ("spaces", " user "),
    ]
    label, value = _cycle(rng, roles, "bad_role")
    msg: dict[str, Any] = {"content": "hi"}
    if label == "null":
        msg["role"] = None
    elif label != "missing":
        msg["role"] = value
    return _chat_case(f"role:{label}", "bad_role", {"model": _MODEL, "messages": [_SYSTEM, msg]}, "no_5xx")


def _bad_content(rng: random.Random) -> Case:
    contents: list[tuple[str, Any]] = [
        ("integer", 1),
        ("object", {"text": "hi"}),
        ("list_of_int", [1]),
        ("part_without_text", [{"type": "text"}]),
        ("part_text_int", [{"type": "text", "text": 1}]),
        ("image_part", [{"type": "image_url", "image_url": {"url": "data:,"}}]),
        ("boolean", True),
        ("nested", [[{"type": "text", "text": "hi"}]]),
    ]
    label, value = _cycle(rng, contents, "bad_content")
    msgs = [_SYSTEM, {"role": "user", "content": value}]
    return _chat_case(f"content:{label}", "bad_content", {"model": _MODEL, "messages": msgs}, "no_5xx")


def _bad_tool_calls(rng: random.Random) -> Case:
    calls: list[tuple[str, Any]] = [
        ("string", "call it"),
        ("list_of_int", [1]),
        ("function_int", [{"id": "c1", "type": "function", "function": 1}]),
        ("name_int", [{"id": "c1", "type": "function", "function": {"name": 1, "arguments": "{}"}}]),
        ("arguments_int", [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": 5}}]),
    ]
    label, value = _cycle(rng, calls, "bad_tool_calls")
    msgs = [*_BASE, {"role": "assistant", "content": "", "tool_calls": value}, {"role": "user", "content": "go"}]
    return _chat_case(f"tool_calls:{label}", "bad_tool_calls", {"model": _MODEL, "messages": msgs}, "no_5xx")


def _not_json(rng: random.Random) -> Case:
    base = _dumps({"model": _MODEL, "messages": _BASE})
    bodies: list[tuple[str, bytes, str]] = [
        ("empty", b"", "4xx"),
        ("truncated", base[: len(base) // 2], "4xx"),
        ("text", b"not json at all", "4xx"),
        ("bad_utf8", b'{"model": "\xff\xfe", "messages": []}', "4xx"),
        ("nan", b'{"model": "m", "temperature": NaN, "messages": ' + _dumps(_BASE) + b"}", "no_5xx"),
        ("infinity", b'{"model": "m", "top_p": -Infinity, "messages": ' + _dumps(_BASE) + b"}", "no_5xx"),
        (
            "lone_surrogate",
            b'{"model": "m", "messages": [{"role": "user", "content": "half \\ud800 a pair"}]}',
            "no_5xx",
        ),
        ("deep_nesting", b'{"model": "m", "messages": ' + b"[" * 20000 + b"]" * 20000 + b"}", "no_5xx"),
        ("trailing_garbage", base + b" }{", "4xx"),
    ]
    label, raw, expect = _cycle(rng, bodies, "not_json")
    return _chat_case(f"not_json:{label}", "not_json", raw, expect)


def _body_not_object(rng: random.Random) -> Case:
    value = _cycle(rng, [[], ["messages"], "messages", 1, None, True], "body_not_object")
    return _chat_case(f"body={_json_type(value)}", "body_not_object", value, "4xx")


def _wrong_method(rng: random.Random) -> Case:
    method, path = _cycle(
        rng,
        [
            ("PUT", "/sessions"),
            ("DELETE", "/sessions"),
            ("PATCH", "/sessions/{victim}"),
            ("POST", "/sessions/{victim}"),
            ("PUT", "/sessions/{victim}"),
            # a well-formed chat body, but PUT: only POST is the tracked chat; any other method falls to the plain
            # pass-through, where the backend's chat route refuses it (405) as the server itself may
            ("PUT", "/sessions/{victim}/v1/chat/completions"),
        ],
        "wrong_method",
    )
    body = {"model": _MODEL, "messages": _BASE} if path.endswith("/completions") else {}
    return Case(f"method:{method} {path}", "wrong_method", method, path, _dumps(body), "4xx")


def _odd_session_id(rng: random.Random) -> Case:
    sid = rng.choice(ODD_IDS)
    what = rng.choice(["chat", "get", "delete"])
    label = sid if len(sid) <= 16 else f"{sid[:8]}...({len(sid)})"
    if what == "chat":
        body = _dumps({"model": _MODEL, "messages": _BASE})
        return Case(
            f"unknown_id:chat {label}", "odd_session_id", "POST", f"/sessions/{sid}/v1/chat/completions", body, "4xx"
        )
    method = "GET" if what == "get" else "DELETE"
    return Case(f"unknown_id:{what} {label}", "odd_session_id", method, f"/sessions/{sid}", None, "4xx")


# Requests through the session pass-through (``/sessions/{id}/{path}``, any method): legal ones to a
# backend's generation and model-info paths, and hostile spellings of its control plane. CONTEXT.md: the
# pass-through is a plain proxy, and odd paths may neither produce a 500 nor reach the admin endpoints. A
# server may refuse any of them (an allowlist), so each expects only "no 5xx".
_PASSTHROUGH: tuple[tuple[str, str, Any], ...] = (
    ("GET", "v1/models", None),
    ("GET", "v1/models/fake-sglang", None),  # OpenAI's retrieve-model route, the fake's one model
    ("GET", "health", None),
    ("GET", "get_model_info", None),
    ("POST", "generate", {"text": "Name one prime number.", "sampling_params": {"max_new_tokens": 4}}),
    ("GET", "./v1//models", None),
    ("GET", "v1/models/../models", None),
    ("POST", "abort_request", {"abort_all": True}),
    ("POST", "admin/reset", {}),
    ("POST", "../../admin/reset", {}),
    ("POST", "%2e%2e/%2e%2e/admin/reset", {}),
    ("GET", "admin/plan%00", None),
    ("GET", "v1/models%2F..%2F..%2Fadmin%2Fplan", None),
    ("GET", "..", None),
    ("GET", "a\\..\\health", None),
)


def _passthrough(rng: random.Random) -> Case:
    method, tail, body = _cycle(rng, _PASSTHROUGH, "passthrough")
    raw = None if body is None else _dumps(body)
    return Case(f"passthrough:{method} {tail}", "passthrough", method, "/sessions/{victim}/" + tail, raw, "no_5xx")


CATEGORIES: dict[str, Callable[[random.Random], Case]] = {
    "wrong_type": _wrong_type,
    "messages_shape": _messages_shape,
    "item_not_object": _item_not_object,
    "bad_role": _bad_role,
    "bad_content": _bad_content,
    "bad_tool_calls": _bad_tool_calls,
    "not_json": _not_json,
    "body_not_object": _body_not_object,
    "wrong_method": _wrong_method,
    "odd_session_id": _odd_session_id,
    "passthrough": _passthrough,
}


def derive_cases(seed: int, n: int) -> list[Case]:
    """``n`` cases, a function of ``seed`` only: the categories in turn, each drawing its details."""
    from harness.workload import derive_rng

    rng = derive_rng(seed, "fuzz")
    names = list(CATEGORIES)
    return [CATEGORIES[names[i % len(names)]](rng) for i in range(n)]


# ---------------------------------------------------------------- running them


class _Fuzzer:
    def __init__(self, sc: Scenario, server: str, history: History, http: httpx.AsyncClient) -> None:
        from harness.workload import derive_seed

        self.sc = sc
        self.server = server
        self.history = history
        self.http = http
        self.ids = IdSource(derive_seed(sc.seed, "fuzz", "ids"))
        self.attempts = 0
        self.reader = "socket"  # who takes a slow body's pieces: the in-process app ("server") or a socket

    def _rid(self) -> str:
        return f"fz{self.ids.caller_request_id()}"  # 64 bits, as the agents' (32 would collide in long fuzz runs)

    async def _send(
        self,
        op: int,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        up: Upload | None = None,
        chunked: bool = False,
    ) -> Any:
        try:
            if up is None:
                r = await self.http.request(method, url, content=body, headers=headers)
            else:
                r = await self.http.request(
                    method, url, content=up.stream(), headers=up.headers(headers, declared=not chunked)
                )
        except httpx.TimeoutException as exc:
            self.history.info(op, error=f"{type(exc).__name__}: {exc}", **_upload_facts(up))
            return None
        except Exception as exc:  # a dropped connection, or (in process) the app raising: no answer
            self.history.info(op, error=f"{type(exc).__name__}: {exc}"[:500], dropped=True, **_upload_facts(up))
            return None
        return r

    async def create(self, role: str) -> str | None:
        rid = self._rid()
        op = self.history.invoke(process="fuzzer", f="create", server=self.server, request_id=rid, fuzz_role=role)
        r = await self._send(op, "POST", f"{self.server}/sessions", None, {"x-request-id": rid})
        if r is None:
            return None
        sid = _json(r).get("session_id") if isinstance(_json(r), dict) else None
        if 200 <= r.status_code < 300 and isinstance(sid, str):
            self.history.ok(op, status=r.status_code, session=sid)
            return sid
        self.history.fail(op, status=r.status_code, error=r.text[:300])
        return None

    async def valid_turn(self, sid: str) -> None:
        rid = self._rid()
        body = _dumps({"model": _MODEL, "messages": _BASE})
        op = self.history.invoke(
            process="fuzzer",
            f="chat",
            session=sid,
            server=self.server,
            turn=0,
            attempt=0,
            request_id=rid,
            intended=self.history.now(),
            messages=len(_BASE),
            stream=False,
        )
        await self._chat_completion(op, sid, body, rid, 0)

    async def _chat_completion(
        self,
        op: int,
        sid: str,
        body: bytes | None,
        rid: str,
        attempt: int,
        turn: int = 0,
        plain: bool = False,
        odd: bool = False,
        fault: str | None = None,
        up: Upload | None = None,
        chunked: bool = False,
    ) -> Any:
        """Send one chat; the assistant message of a 200 answer that was not aborted (else None).

        ``plain``: only the headers a plain OpenAI client sends (no x-turn / x-attempt, the harness's own);
        ``odd``: those two headers sent malformed (not non-negative integers).
        """
        headers = {"x-request-id": rid, "content-type": "application/json"}
        if odd:
            headers.update({"x-turn": "two", "x-attempt": "-1"})
        elif not plain:
            headers.update({"x-turn": str(turn), "x-attempt": str(attempt)})
        if fault is not None:
            headers["x-fake-fault"] = fault
        url = f"{self.server}/sessions/{sid}/v1/chat/completions"
        r = await self._send(op, "POST", url, body, headers, up, chunked)
        if r is None:
            return None
        fields = _reply_fields(r, up)
        if r.status_code != 200:
            self.history.fail(op, **fields, error=r.text[:300])
            return None
        data = _json(r)
        choice = data["choices"][0] if isinstance(data, dict) and data.get("choices") else {}
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        aborted = r.headers.get("x-sglang-aborted") == "1" or finish == "abort"
        self.history.ok(op, **fields, finish_reason=finish, aborted=aborted)
        msg = choice.get("message") if isinstance(choice, dict) else None
        return msg if isinstance(msg, dict) and not aborted else None

    async def rollback_probe(self) -> None:
        """Two committed turns, then a request that would roll both back: CONTEXT.md refuses it (400).

        The retry rollback discards at most one assistant step. The probe's own
        session (neither canary nor victim) holds [system, user, a0, user, a1];
        the request [system, user, "start over"] diverges before a0, so honouring
        it would discard both steps. Tagged ``fuzz`` with ``expect = "4xx"``.
        """
        sid = await self.create("rollback_probe")
        if sid is None:
            return
        await self.transport_probe(sid)
        msgs: list[dict[str, Any]] = list(_BASE)
        for turn in (0, 1):
            rid = self._rid()
            op = self.history.invoke(
                process="fuzzer",
                f="chat",
                session=sid,
                server=self.server,
                turn=turn,
                attempt=0,
                request_id=rid,
                intended=self.history.now(),
                messages=len(msgs),
                stream=False,
            )
            # turn 0 asks for two choices (OpenAI ``n``; the fake answers n): the session continues from
            # choices[0], the one CONTEXT.md records, as every OpenAI client reads it
            body = _dumps({"model": _MODEL, "messages": msgs, **({"n": 2} if turn == 0 else {})})
            reply = await self._chat_completion(op, sid, body, rid, 0, turn)
            if reply is None:
                return  # a fault or an abort: no two committed steps to roll back
            msgs = [*msgs, {k: reply[k] for k in ("role", "content", "tool_calls") if reply.get(k) is not None}]
            msgs.append({"role": "user", "content": f"Another one, please ({turn + 1})."})
        over = _dumps({"model": _MODEL, "messages": [*_BASE, {"role": "user", "content": "Start over."}]})
        await self.case(_chat_case("rollback:two_steps", "rollback", over, "4xx"), sid, turn=2)
        # the next legal turn as a plain client sends it: without the harness's x-turn / x-attempt headers
        rid = self._rid()
        op = self.history.invoke(
            process="fuzzer",
            f="chat",
            session=sid,
            server=self.server,
            turn=2,
            attempt=0,
            request_id=rid,
            intended=self.history.now(),
            messages=len(msgs),
            stream=False,
            fuzz="headers:plain_client",
            fuzz_category="headers",
            expect="no_5xx",
        )
        reply = await self._chat_completion(op, sid, _dumps({"model": _MODEL, "messages": msgs}), rid, 0, 2, plain=True)
        if reply is None:
            return
        # and the turn after it with the harness's headers malformed: careless input, never a 500
        msgs = [*msgs, {k: reply[k] for k in ("role", "content", "tool_calls") if reply.get(k) is not None}]
        # its user message as OpenAI content parts (one text part): legal, and its text must reach the model
        msgs.append({"role": "user", "content": [{"type": "text", "text": _PARTS_TEXT}]})
        rid = self._rid()
        op = self.history.invoke(
            process="fuzzer",
            f="chat",
            session=sid,
            server=self.server,
            turn=3,
            attempt=0,
            request_id=rid,
            intended=self.history.now(),
            messages=len(msgs),
            stream=False,
            fuzz="headers:odd_turn_attempt",
            fuzz_category="headers",
            expect="no_5xx",
            # token_state rule 5: the appended text is in the added tokens (when the template renders list content)
            probe={"last": _PARTS_TEXT, "content_parts": True},
        )
        await self._chat_completion(op, sid, _dumps({"model": _MODEL, "messages": msgs}), rid, 0, 3, odd=True)

    async def transport_probe(self, sid: str) -> None:
        """A legal pass-through ``POST generate`` that the backend answers with a connection reset.

        The client's headers reach the backend (CONTEXT.md), so ``x-fake-fault: reset`` makes the fake drop
        the connection: a transport error to the backend, which the server answers 502 (CONTEXT.md), never
        500. Tagged ``expect = "backend_fault"``: bad_input leaves its status to no_unexpected_5xx, which
        attributes it to the fault in the fake's execution log. A server that does not forward the header
        gets the backend's 200.
        """
        rid = self._rid()
        path = f"/sessions/{sid}/generate"
        body = _dumps({"text": "Name one prime number.", "sampling_params": {"max_new_tokens": 4}})
        op = self.history.invoke(
            process="fuzzer",
            f="fuzz",
            session=sid,
            server=self.server,
            request_id=rid,
            method="POST",
            path=path,
            fuzz="passthrough:POST generate (backend reset)",
            fuzz_category="passthrough",
            expect="backend_fault",
            body_bytes=len(body),
        )
        headers = {"x-request-id": rid, "content-type": "application/json", "x-fake-fault": "reset"}
        r = await self._send(op, "POST", f"{self.server}{path}", body, headers)
        if r is not None:
            if 200 <= r.status_code < 300:
                self.history.ok(op, **_reply_fields(r))
            else:
                self.history.fail(op, **_reply_fields(r))
        # a chat whose answer is malformed past its first choice: choices = [null, the answer] (the fake's
        # null_first_choice), a backend answer without a usable choices[0]: 502, never 500 (CONTEXT.md)
        await self._backend_fault_chat(sid, "null_first_choice")
        # and one whose choices list is empty (the fake's empty_choices): no choice, no meta_info: 502, never 500
        await self._backend_fault_chat(sid, "empty_choices")
        # and one whose assistant message holds a tool call without a name (the fake's bad_tool_call): a message
        # that cannot be stored as a turn (the template must render it back next turn): 502, never 500
        await self._backend_fault_chat(sid, "bad_tool_call")
        # and one whose output_token_logprobs entries are objects, not [logprob, token_id] pairs (the fake's
        # logprob_objects): no completion token ids to store: 502, never 500
        await self._backend_fault_chat(sid, "logprob_objects")

    async def _backend_fault_chat(self, sid: str, fault: str) -> None:
        """A first-turn chat the fake answers with ``fault`` (``x-fake-fault``): the server's 502, never a 500."""
        rid = self._rid()
        op = self.history.invoke(
            process="fuzzer",
            f="chat",
            session=sid,
            server=self.server,
            turn=0,
            attempt=0,
            request_id=rid,
            intended=self.history.now(),
            messages=len(_BASE),
            stream=False,
            fuzz=f"backend:{fault}",
            fuzz_category="backend",
            expect="backend_fault",
        )
        await self._chat_completion(op, sid, _dumps({"model": _MODEL, "messages": list(_BASE)}), rid, 0, 0, fault=fault)

    async def http_probe(self, victim: str) -> None:
        """Fixed requests after the cases (the seeded stream is unchanged), each judged by a generic rule.

        - a chat whose ``stream`` is a string: any 4xx, but a 401 must carry ``WWW-Authenticate`` (RFC 9110
          15.5.2; http_framing);
        - ``GET`` of the chat path with a well-formed chat body: not the tracked chat (only POST is), so the
          pass-through, where the backend's chat route refuses it: any 4xx, never a turn served (bad_input);
        - a chat whose ``chat_template_kwargs`` (the SGLang extension that is an object of template variables,
          not in OpenAI's schema, so not in ``SCHEMA``) is a string: a wrong type at an optional key, never a
          5xx (CONTEXT.md: careless input may not produce a 500); a server may ignore the key (200) or refuse it;
        - ``GET v1/models/m1`` and ``GET v1/models/m`` through the pass-through: OpenAI's retrieve-model for a
          model the backend does not serve, a plain read-only path: the backend's 404, never the session
          server's refusal (passthrough); ``m`` is the shortest id (one character past ``/v1/models/``), where
          an off-by-one in a server's prefix-length test refuses it;
        - ``GET v1/models-list`` through the pass-through: a plain path that only starts like the models routes
          (not below ``/v1/models/``): any server may relay it (the fake's 404) or refuse it; our reference
          server's documented allowlist refuses it 403 (passthrough, judged on the reference server only);
        - ``GET stats`` through the pass-through: the fake's control plane (its whole execution log): a
          server may refuse it, never relay the backend's 2xx (CONTEXT.md: odd input never reaches the
          backend's admin endpoints; passthrough);
        - a ``POST generate`` of ``BIG_BODY`` bytes (past the reference server's 4 MiB limit, under the fake's
          64 MiB): any 4xx (or the backend's answer), but not a 412, which answers only a request with a
          precondition header (RFC 9110 15.5.13; http_framing). Its padding is a key the backend ignores;
        - a small ``POST generate`` whose ``Content-Length`` is written with leading zeros to 18 digits (odd
          headers are normal, CONTEXT.md; RFC 9112 ``Content-Length = 1*DIGIT``, h11 and the sim's framing
          check read it as the number): the length of a few dozen bytes, so a 413 is ``too_large_claimed``
          (bad_input), as for any body under 1 KiB;
        - a chat of ``BIG_BODY`` bytes (a legal request padded by a key the backend ignores): a server may
          refuse it as too large or serve it, but a refusal is not a 412 (http_framing, as above);
        - a ``POST generate`` of exactly ``BIG_BODY - 1`` bytes, the reference server's default
          ``max_body_bytes``: a server may refuse it, but the reference server started by the harness reads a
          body up to its limit (docs/reference_server.md), so its 413 is ``too_large_claimed`` (bad_input).
        """
        body = {"model": _MODEL, "messages": list(_BASE), "stream": "yes"}
        await self.case(_chat_case("http:stream=string", "wrong_type", body, "no_5xx"), victim)
        # a well-formed chat body sent with GET to the chat path: only POST is the tracked chat (CONTEXT.md), any
        # other method is the plain pass-through, where the backend's POST-only chat route refuses it (405) as the
        # server itself may: a 4xx, never a turn served (GET is a safe method, RFC 9110 9.2.1)
        chat_body = _dumps({"model": _MODEL, "messages": list(_BASE)})
        chat_path = "/sessions/{victim}/v1/chat/completions"
        label = "method:GET chat path (a chat body)"
        await self.case(Case(label, "wrong_method", "GET", chat_path, chat_body, "4xx"), victim)
        # SGLang's (and vLLM's) chat_template_kwargs is an object; a careless client passes the variable's name
        body = {"model": _MODEL, "messages": list(_BASE), "chat_template_kwargs": "enable_thinking"}
        await self.case(_chat_case("http:chat_template_kwargs=string", "wrong_type", body, "no_5xx"), victim)
        head = _dumps({"text": "Name one prime number.", "sampling_params": {"max_new_tokens": 4}, "pad": ""})
        big = head[:-2] + b"x" * (BIG_BODY - len(head)) + head[-2:]
        probes: tuple[tuple[str, str, str, bytes | None], ...] = (
            ("GET v1/models/m1", "GET", "v1/models/m1", None),
            ("GET v1/models/m", "GET", "v1/models/m", None),
            ("GET v1/models-list (beside the models routes)", "GET", "v1/models-list", None),
            ("GET stats (the backend's control plane)", "GET", "stats", None),
            ("POST generate (huge body)", "POST", "generate", big),
        )
        for label, method, tail, raw in probes:
            path = "/sessions/{victim}/" + tail
            await self.case(Case(f"passthrough:{label}", "passthrough", method, path, raw, "no_5xx"), victim)
        small = _dumps({"text": "Name one prime number.", "sampling_params": {"max_new_tokens": 4}})
        padded = (("content-length", f"{len(small):018d}"),)
        label = "passthrough:POST generate (Content-Length with leading zeros)"
        path = "/sessions/{victim}/generate"
        await self.case(Case(label, "passthrough", "POST", path, small, "no_5xx", headers=padded), victim)
        head = _dumps({"model": _MODEL, "messages": list(_BASE), "pad": ""})
        big = head[:-2] + b"x" * (BIG_BODY - len(head)) + head[-2:]
        await self.case(_chat_case("http:huge chat body", "huge_body", big, "no_5xx"), victim)
        head = _dumps({"text": "Name one prime number.", "sampling_params": {"max_new_tokens": 4}, "pad": ""})
        at_limit = head[:-2] + b"x" * (BIG_BODY - 1 - len(head)) + head[-2:]
        label = "passthrough:POST generate (a body of exactly 4 MiB)"
        await self.case(Case(label, "passthrough", "POST", path, at_limit, "no_5xx"), victim)
        # A slow link (CONTEXT.md: huge bodies are normal): a chat body of twice BIG_BODY sent in 8 pieces over
        # 0.4 s, with its Content-Length, then framed chunked with none. Any server may refuse or serve it; our
        # reference server refuses a declared length past max_body_bytes before reading a byte of the body, and
        # a chunked one as soon as the limit is passed, reading nothing past it (docs/reference_server.md;
        # bad_input ``read_before_refusal`` / ``read_past_limit``, judged on the reference server only).
        head = _dumps({"model": _MODEL, "messages": list(_BASE), "pad": ""})
        huge = head[:-2] + b"x" * (2 * BIG_BODY - len(head)) + head[-2:]
        for label, chunked in (("sent slowly", False), ("chunked, sent slowly", True)):
            slow = _chat_case(f"http:huge chat body, {label}", "huge_body", huge, "no_5xx")
            await self.case(dataclasses.replace(slow, pieces=8, upload_s=0.4, chunked=chunked), victim)

    async def template_probe(self, victim: str) -> None:
        """A chat whose messages the chat template itself may refuse: a tool result with no tool call before it.

        Real templates validate the conversation with ``raise_exception`` (roles must alternate; a tool result
        must follow an assistant turn with tool calls; scenarios/tokenizers/strict_tools), and a careless agent
        that dropped the assistant turn sends exactly this. A template that renders it makes it a legal turn
        (the other checkers judge it); one that refuses it makes it the client's error: a 4xx, never a 5xx
        (CONTEXT.md: careless input may not produce a 500). ``expect = "no_5xx"``.
        """
        orphan = {"role": "tool", "tool_call_id": "call_0000000000000000", "content": "a result nobody asked for"}
        body = {"model": _MODEL, "messages": [*_BASE, orphan]}
        await self.case(_chat_case("template:tool result without a tool call", "template", body, "no_5xx"), victim)

    async def snapshot(self, sid: str, reason: str) -> None:
        op = self.history.invoke(process="fuzzer", f="get", session=sid, server=self.server, reason=reason)
        r = await self._send(op, "GET", f"{self.server}/sessions/{sid}", None, {})
        if r is None:
            return
        if r.status_code == 200:
            self.history.ok(op, status=200, body=_json(r))
        else:
            self.history.fail(op, status=r.status_code, error=r.text[:300])

    async def case(self, case: Case, victim: str, turn: int = 0) -> None:
        path = case.path.replace("{victim}", victim)
        rid = self._rid()
        tags: dict[str, Any] = {"fuzz": case.name, "fuzz_category": case.category, "expect": case.expect}
        tags["body_bytes"] = len(case.body) if case.body is not None else 0
        up: Upload | None = None
        if case.pieces > 1 and case.body:
            up = Upload.split(case.body, case.pieces, case.upload_s, self.history.now)
            up.reader = self.reader
            tags.update(upload_chunks=len(up.chunks), upload_piece=len(up.chunks[0]), upload_declared=not case.chunked)
        if case.chat:
            self.attempts += 1
            op = self.history.invoke(
                process="fuzzer",
                f="chat",
                session=victim,
                server=self.server,
                turn=turn,
                attempt=self.attempts,
                request_id=rid,
                intended=self.history.now(),
                stream=False,
                **tags,
            )
            await self._chat_completion(op, victim, case.body, rid, self.attempts, turn, up=up, chunked=case.chunked)
            return
        addressed = victim if "{victim}" in case.path else None
        op = self.history.invoke(
            process="fuzzer",
            f="fuzz",
            session=addressed,
            server=self.server,
            request_id=rid,
            method=case.method,
            path=path if len(path) <= 200 else path[:200] + "...",
            **tags,
        )
        headers = {"x-request-id": rid}
        if case.body is not None:
            headers["content-type"] = "application/json"
        headers.update(case.headers)
        r = await self._send(op, case.method, f"{self.server}{path}", case.body, headers, up, case.chunked)
        if r is not None:
            if 200 <= r.status_code < 300:
                self.history.ok(op, **_reply_fields(r, up))
            else:
                self.history.fail(op, **_reply_fields(r, up))


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _upload_facts(up: Upload | None) -> dict[str, Any]:
    return {} if up is None else up.facts()


def _reply_fields(r: httpx.Response, up: Upload | None = None) -> dict[str, Any]:
    """Status, a few headers, and how often each header came (http_framing's ``framing.header_counts``);
    for a body sent slowly, how much of it was taken (``Upload.facts``)."""
    keep = ("x-sglang-aborted", "x-req-id", "content-type")
    counts: dict[str, int] = {}
    for k, _ in r.headers.raw:
        name = k.decode("latin-1").lower()
        counts[name] = counts.get(name, 0) + 1
    return {
        "status": r.status_code,
        "headers": {k: r.headers[k] for k in keep if k in r.headers},
        "framing": {"header_counts": counts},
        **_upload_facts(up),
    }


async def run_fuzz(
    sc: Scenario, servers: list[str], history: History, transport: httpx.AsyncBaseTransport | None = None
) -> None:
    """Canary and victim on the first server, ``sc.workload.fuzz`` bad requests, both read back."""
    if sc.workload.fuzz <= 0 or not servers:
        return
    async with httpx.AsyncClient(transport=transport, timeout=sc.agent.timeout_s) as http:
        fz = _Fuzzer(sc, servers[0], history, http)
        fz.reader = "server" if transport is not None else "socket"
        canary = await fz.create("canary")
        victim = await fz.create("victim")
        if canary is None or victim is None:
            return
        for sid, role in ((canary, "canary"), (victim, "victim")):
            await fz.valid_turn(sid)
            await fz.snapshot(sid, f"fuzz_{role}_before")
        for case in derive_cases(sc.seed, sc.workload.fuzz):
            await fz.case(case, victim)
        await fz.rollback_probe()
        await fz.http_probe(victim)
        await fz.template_probe(victim)
        for sid, role in ((canary, "canary"), (victim, "victim")):
            await fz.snapshot(sid, f"fuzz_{role}_after")
