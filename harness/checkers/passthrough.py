"""passthrough: a legal request through the session pass-through reaches the backend; it is not refused.

CONTEXT.md's protocol table: ``/sessions/{id}/{path}`` (any method) is a
*plain pass-through proxy to the backend*. Its hardening rule limits that:
odd paths may neither produce a 500 nor reach the backend's *admin*
endpoints. So a server may refuse a hostile spelling or a control-plane path,
but a plain request, on a live session, to one of the backend's own
generation or read-only paths must be proxied: the client gets the
backend's answer, never the session server's refusal.

The backend is the harness's fake SGLang, whose routes are fixed
(harness/fake_sglang/app.py; tests/unit/test_checkers_passthrough.py keeps
the list below in step with them). Judged, per pass-through request (any
history op that records ``method`` and a ``path`` under ``/sessions/{id}/``:
the fuzz workload's ``passthrough`` cases, ``[workload] fuzz = N``):

- the path after ``/sessions/{id}/`` is plain: no percent escape, backslash,
  ``?``, ``#``, control or non-ASCII byte (a server may refuse those), no
  empty segment (``//`` names another path: a plain proxy forwards it and
  the backend may answer 404) and no ``..`` climbing above the session; RFC
  3986 dot segments are removed (HTTP clients remove them before sending);
- it then names one of the fake's non-admin routes with its method (``GET
  /health``, ``/health_generate``, ``/v1/models``, ``/v1/models/fake-sglang``,
  ``/get_model_info``, ``POST /generate``), and is not the chat endpoint (tracked, not passed
  through); or ``GET /v1/models/{model}`` for another model id (one plain
  segment): OpenAI's retrieve-model route, read-only, whose answer for a model
  the backend does not serve is the backend's own 404 (the fake's, as
  OpenAI's and SGLang's): there a 404 is the backend's answer and any other
  4xx the session server's refusal;
- the session was live: created, no DELETE of it invoked before the answer,
  no process kill since it was created.

A plain request to one of the fake's control endpoints (``POST /abort_request``,
``GET /stats``, ``GET`` / ``PUT /admin/plan``, ``POST /admin/reset``) answered
2xx reached the backend's admin plane: ``admin_reached`` (a refusal of it is
any server's right).

Our reference server's extra (X02), judged only on it (``ops.reference_target``:
``target.kind = "reference"`` and no sim ``--target`` other than a coverage
proof's ``harness.coverage._bugs`` wrapper of the reference app; not judged for
any other server, which CONTEXT.md lets proxy every path, and the verdict's
note says so): its documented allowlist (docs/reference_server.md,
"Pass-through", rule 4: the default ``DEFAULT_PASSTHROUGH_PATHS`` or the
``--passthrough-path`` values of ``target.server_args``, read by the
launcher's own parser, ``ops.server_options``; an entry ``/p/*``
allows everything below ``/p/``). A plain path of the documented characters
(letters, digits, ``-._~!$&'()*+,;=:@``; anything else may be its 400) that
is not the chat path and is not on the allowlist, on a live session, is
answered 403 ``PathNotAllowed`` before the body is read; any other answer
below 500 (the backend's 404 or 2xx: the request was relayed) is
``allowlist_bypassed`` (a 2xx of a control endpoint is ``admin_reached`` alone).

Such a request answered with a 4xx other than a resource limit (408, 413,
429: a body past the server's size limit may be refused) is
``legal_passthrough_refused``; a 5xx
or no answer is no_unexpected_5xx's / bad_input's business, a 2xx is the
backend's answer. A 4xx the backend itself may have given (the scenario's
fault plan has 4xx classes, for ``POST /generate``) is counted, not judged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import (
    Chaos,
    Op,
    by_session,
    chaos_events,
    fault_kinds,
    faults_applied,
    is_kill,
    pair_ops,
    reference_target,
    server_options,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData

__all__ = ["BACKEND_ROUTES", "Passthrough", "plain_path"]

# the fake SGLang's routes that are neither its control plane (/abort_request, /admin/*, /stats) nor the chat
# endpoint: generation and read-only model info, what an agent framework reaches through a session
BACKEND_ROUTES = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/health_generate"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/fake-sglang"),  # OpenAI's retrieve-model, for the fake's one model
        ("GET", "/get_model_info"),
        ("POST", "/generate"),
    }
)
# the fake's control plane: the DELETE cancellation channel (aborts any request, abort_all every one), its
# fault plan, its reset and /stats (every session's executions). CONTEXT.md: odd input never reaches "the
# backend's admin endpoints through the session pass-through"; a 2xx from one of them is the backend's answer
CONTROL_ROUTES = frozenset(
    {
        ("POST", "/abort_request"),
        ("GET", "/stats"),
        ("GET", "/admin/plan"),
        ("PUT", "/admin/plan"),
        ("POST", "/admin/reset"),
    }
)
CHAT = "/v1/chat/completions"
LIMITS = frozenset({408, 413, 429})  # resource limits a server may set on any request (as refused_legal)
MODELS = "/v1/models/"  # GET /v1/models/{model}: retrieve-model; an unknown model is the backend's 404
_ODD = frozenset("%\\?#")
# the characters docs/reference_server.md lets a pass-through path segment hold (the rest may be its 400)
_REF_SEGMENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")


def reference_allowlist(run: RunData) -> tuple[tuple[str, ...] | None, str]:
    """The pass-through allowlist of our reference server when the run's target is it (``ops.reference_target``:
    the reference server the harness starts, or a coverage proof's ``_bugs`` wrapper of it), and why not.

    ``--passthrough-path P`` (repeatable) in ``target.server_args`` replaces the default list
    (docs/reference_server.md), read as the launcher reads it (``ops.server_options``); ``(None, why)`` for
    any other server, or arguments the launcher would refuse.
    """
    if not reference_target(run):
        return None, "not our reference server"
    given, why = server_options(run)
    if given is None:
        return None, why
    paths = given.get("passthrough_path")
    if paths:
        return tuple(str(p) for p in paths), "--passthrough-path"
    from reference_impl.config import DEFAULT_PASSTHROUGH_PATHS  # lazily: only a reference-target run needs it

    return tuple(DEFAULT_PASSTHROUGH_PATHS), "the reference server's default"


def on_allowlist(target: str, allowlist: Sequence[str]) -> bool:
    """docs/reference_server.md: ``target`` equals an entry, or lies below ``/p/`` for an entry ``/p/*``."""
    for entry in allowlist:
        if entry.endswith("/*"):
            below = entry[:-1]  # "/p/"
            if target.startswith(below) and target[len(below) :] != "":
                return True
        elif target == entry:
            return True
    return False


def plain_path(tail: str) -> str | None:
    """The backend path a plain pass-through tail names (``./v1/models`` -> ``/v1/models``); None if odd."""
    if any(c in _ODD or not (" " < c < "\x7f") for c in tail):
        return None
    out: list[str] = []
    for seg in tail.split("/"):
        if seg == "":
            return None  # "//" or a trailing "/": another path to the backend (RFC 3986 keeps empty segments)
        if seg == ".":
            continue
        if seg == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def _other_model(target: str) -> bool:
    """``/v1/models/{model}`` for a model id other than the fake's own (one segment, not empty)."""
    rest = target[len(MODELS) :] if target.startswith(MODELS) else ""
    return bool(rest) and "/" not in rest and ("GET", target) not in BACKEND_ROUTES


def _tail(path: str, sid: str) -> str | None:
    prefix = f"/sessions/{sid}/"
    if not path.startswith(prefix) or path.endswith("..."):  # a recorded path over 200 chars is cut: not judged
        return None
    return path[len(prefix) :]


class Passthrough:
    name = "passthrough"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # The rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # Each request is judged against its own session's create and DELETEs and the run's kills (chaos operations
    # are in every part) and the scenario's fault plan: nothing of another session. A part judges its sessions'
    # requests; the reduce adds the counts and merges the violations in the run's operation order.

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        kills = [c for c in chaos_events(ops) if is_kill(c)]
        deletes = by_session(ops, "delete")
        creates = {o.session: o for o in ops if o.f == "create" and o.type == "ok" and o.session is not None}
        backend_4xx = faults_applied(run) and any(
            k.startswith(("http_4", "status_4")) or k == "unparsed" for k in fault_kinds(run)
        )
        allowlist, why = reference_allowlist(run)
        counts: Counter[str] = Counter()
        out: list[Keyed] = []
        for o in ops:
            sid, method, path = o.session, o.invoke.get("method"), o.invoke.get("path")
            if sid is None or not isinstance(method, str) or not isinstance(path, str) or not part.mine(sid):
                continue
            tail = _tail(path, sid)
            if tail is None:
                continue
            target = plain_path(tail)
            if target is None or target == CHAT:
                counts["not_judged"] += 1
                continue
            if allowlist is not None and set(tail) <= _REF_SEGMENT_CHARS | {"/"}:
                self._allowlist_rule(o, sid, method, path, target, allowlist, creates, deletes, kills, counts, out)
            if (method.upper(), target) in CONTROL_ROUTES:
                counts["control"] += 1
                if o.status is not None and 200 <= o.status < 300:
                    v = Violation(
                        f"{method} {path} (the backend's control endpoint {method.upper()} {target}) answered "
                        f"{o.status}: relayed to the backend; CONTEXT.md: nothing reaches the backend's admin "
                        "endpoints through the session pass-through",
                        o.indices,
                        sid,
                        "admin_reached",
                    )
                    out.append(((o.invoke_index,), v))
                continue
            other_model = method.upper() == "GET" and _other_model(target)
            if (method.upper(), target) not in BACKEND_ROUTES and not other_model:
                counts["not_judged"] += 1
                continue
            counts["judged"] += 1
            st = o.status
            if st is None or not 400 <= st < 500:
                counts["answered" if st is not None else "no_answer"] += 1
                continue
            if st in LIMITS:
                counts["limit"] += 1  # a resource limit (a body past the server's size limit), not a refusal
                continue
            if other_model and st == 404:
                counts["backend_404"] += 1  # the backend's "no such model"
                continue
            if self._not_live(o, sid, creates.get(sid), deletes.get(sid, []), kills):
                counts["not_live"] += 1
                continue
            if target == "/generate" and backend_4xx:
                counts["backend_may_refuse"] += 1
                continue
            v = Violation(
                f"{method} {path} (the backend's {method.upper()} {target}) answered {st} on a live session: "
                "CONTEXT.md: /sessions/{id}/{path} is a plain pass-through proxy to the backend, and this "
                "path is the backend's own, not its control plane",
                o.indices,
                sid,
                "legal_passthrough_refused",
            )
            out.append(((o.invoke_index,), v))
        x02 = "" if allowlist is not None else f"X02 (the reference server's allowlist) not judged: {why}"
        return {"counts": counts, "out": out, "x02": x02}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        counts: Counter[str] = Counter()
        for p in parts:
            counts.update(p["counts"])
        violations = merge_violations(p["out"] for p in parts)
        x02 = next((p["x02"] for p in parts if p.get("x02")), "")
        if not counts["judged"] and not counts["control"] and not counts["off_allowlist"]:
            notes = "no plain pass-through request to a backend route in this run"
            return verdict(self.name, [], notes="; ".join(n for n in (notes, x02) if n))
        notes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
        return verdict(self.name, violations, notes="; ".join(n for n in (notes, x02) if n))

    def _allowlist_rule(
        self,
        o: Op,
        sid: str,
        method: str,
        path: str,
        target: str,
        allowlist: Sequence[str],
        creates: dict[str, Op],
        deletes: dict[str, list[Op]],
        kills: list[Chaos],
        counts: Counter[str],
        out: list[Keyed],
    ) -> None:
        """The reference server's allowlist (its extra): a plain path off the list is its 403, never relayed."""
        if on_allowlist(target, allowlist):
            return
        counts["off_allowlist"] += 1
        st = o.status
        if st is None or st == 403 or st >= 500:
            return  # refused as documented; no answer or a 5xx is no_unexpected_5xx's / bad_input's
        if (method.upper(), target) in CONTROL_ROUTES and 200 <= st < 300:
            return  # admin_reached says it
        if self._not_live(o, sid, creates.get(sid), deletes.get(sid, []), kills):
            return  # a dead session's 404 comes first (rule 1)
        v = Violation(
            f"{method} {path} (backend path {target}, not on the reference server's pass-through allowlist "
            f"{', '.join(allowlist)}) answered {st}, not 403 PathNotAllowed: the request was relayed past the "
            "documented allowlist (docs/reference_server.md, Pass-through rule 4)",
            o.indices,
            sid,
            "allowlist_bypassed",
        )
        out.append(((o.invoke_index,), v))

    @staticmethod
    def _not_live(o: Op, sid: str, created: Op | None, deletes: list[Op], kills: list[Chaos]) -> bool:
        if created is None:
            return True
        end = o.seen_end if o.seen_end is not None else o.start
        if any(d.start <= end for d in deletes):
            return True
        return any(k.start <= end and k.end >= created.start for k in kills)
