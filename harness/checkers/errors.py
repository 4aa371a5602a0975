"""no_unexpected_5xx: a server error is either explained by a fault applied to that request, or a bug.

What the protocol allows (CONTEXT.md): a backend transport error or a
malformed backend answer (no ``meta_info``, null content, a logprob count
that does not match ``completion_tokens``) becomes **502**; any other non-200
backend answer **passes through** unchanged; the server's own **500** on a
chat is a tokenization error (the prefix invariant broke) or a crash. So:

- a chat **500** is explained only when the backend itself answered that very
  request with a 500 (the execution log shows ``http_500`` applied to it: the
  pass-through), or when the backend reported other ``prompt_token_ids``
  than it was sent on that very attempt (``retokenized_prompt``: a broken
  prefix is the protocol's 500 tokenization error). The fault explains it
  only where it can have broken the prefix: the fake marked the execution
  (``retokenized_at``: it did rewrite a token of the ids it answered), the
  answer was a complete, non-aborted generation (an aborted one is kept
  provisional, with no prefix check), and the rewritten token lies inside a
  checkpoint the session can have stored (the client saw an earlier answer
  of that session at least that long; a first turn has none). Whether the
  prefix really broke when the server commits is token_state's business.
  Two limits on that excuse, both CONTEXT.md's words: the tolerated tail
  ("tolerating a few trailing tokens"): when the fake rewrote only the last
  token of the checkpoint the prompt extends (``retokenized_checkpoint``,
  ``from_end=1``) and no longer checkpoint can be stored, the 500 is a
  violation (one token is within "a few" on any reading); and the error
  ("500 with a tokenization error"): the 500's recorded error must name
  tokenization or the prefix (loosely: ``tokeniz`` or ``prefix`` anywhere in
  it), else it is a crash and a violation; a 500 without any error text is
  unknown (nothing said either way);
  Never by a fault class in the plan, never by a time window:
  a server that answers 500 on invalid JSON from the backend is wrong even
  while an outage is declared;
- a chat **502 / 503 / 504** is explained by the fault the backend applied to
  that very request (``http_<status>`` passes through; transport and malformed
  faults give 502; ``hang`` / ``slow_drip`` may end in the server's own backend
  timeout, 502 or 504), or, for a request the backend never saw, by a backend
  outage window the request overlapped;
- any 5xx is explained by a kill of the server that answered it, overlapping
  the request; non-chat operations (create, get, delete, probe) never reach
  the backend, so only that explains theirs; a request through a session's
  pass-through (``/sessions/{id}/{path}``) does, and is judged as a chat is
  for the statuses other than 500.

On our reference server (``ops.reference_target``) the same rules judge the
``chat_done`` status of a chat whose client got no answer (it timed out or
lost the connection): a logged 500 there is a crash too (the reference logs
``cancelled`` / 499 for a client that left, docs/reference_server.md); other
servers' lines of such requests are not judged (CONTEXT.md fixes what a
server answers, not what it logs for a request nobody got an answer to).
Kind ``logged_status_<n>``.

Requests are matched to the backend's executions through the fake's own log
(the forwarded ``x-request-id``, else routing key + turn + attempt:
``ops.Links``), never by time. Without an execution log a 5xx the chaos does
not explain is unknown (not attributable), and when the run says the fault
plan never reached the backend (``target.faults_applied = false``) the whole
verdict is unknown. The notes report counts per status.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.continuity import execution_log_gap
from harness.checkers.ops import (
    Chaos,
    Links,
    Op,
    chaos_events,
    fault_kinds,
    faults_applied,
    is_kill,
    is_outage,
    is_passthrough,
    pair_ops,
    reference_target,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations, passthrough_whole
from harness.fake_sglang.plan import MALFORMED_FAULTS
from harness.rundata import RunData

# fault classes of the fake SGLang (harness.fake_sglang.plan.FAULTS) that make the session
# server answer 502 (transport error, malformed answer) or, on its own backend timeout, 504
TRANSPORT_FAULTS = (
    "reset",
    "close_mid_body",
    "sse_cut",
    "hang",
    "slow_drip",
    *MALFORMED_FAULTS,
    "outage",
    "transport",
    "unparsed",
)


def fault_name(f: str) -> str:
    """``"hang;seconds=60"`` -> ``"hang"`` (the fake's execution log spelling)."""
    return f.split(";", 1)[0].strip().lower()


def plan_explains(status: int, kinds: set[str]) -> bool:
    """Does a fault class (plan rule, forced header, outage) explain this status?"""
    names = {fault_name(k) for k in kinds}
    if {f"http_{status}", f"status_{status}", str(status), "http_5xx", "5xx"} & names:
        return True
    return status in (502, 504) and any(n in TRANSPORT_FAULTS for n in names)


class NoUnexpected5xx:
    name = "no_unexpected_5xx"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    whole_when = staticmethod(passthrough_whole)

    @staticmethod
    def _explain(
        o: Op,
        st: int,
        chaos: list[Chaos],
        links: Links,
        stored: dict[str, list[tuple[float, int | None]]],
        passed: dict[str, list[dict[str, Any]]] | None = None,
    ) -> tuple[str, str]:
        """(explanation, "") or ("", why not; "unattributable" when nothing can decide)."""
        t1 = o.seen_end if o.seen_end is not None else o.start
        for c in chaos:
            same = c.server is None or o.server is None or c.server.rstrip("/") == o.server.rstrip("/")
            if is_kill(c) and same and c.covers(o.start, t1, margin=1.0):
                return f"chaos {c.kind}", ""
        if o.f != "chat" and not is_passthrough(o):
            return "", "a request that never reaches the backend, and no kill of its server overlapped it"
        execs = links.executions_of(o) if o.f == "chat" else (passed or {}).get(o.request_id or "", [])
        faults = [fault_name(str(ex["fault"])) for ex in execs if ex.get("fault")]
        if st == 500:
            if "http_500" in faults:
                return "backend http_500 passed through", ""
            if "retokenized_prompt" in faults:  # the protocol's answer to a broken prefix (CONTEXT.md: 500)
                answers = stored.get(o.session or "", [])
                hit, why_not = _retokenized_hit(o, execs, answers)
                if not hit:
                    return (
                        "",
                        f"server error (500) on a chat whose retokenized_prompt fault cannot break the prefix: "
                        f"{why_not}",
                    )
                tail = _last_token_only(o, execs, answers)
                if tail:
                    return "", f"server error (500) on a chat whose backend rewrote {tail}"
                said = _says_tokenization(o)
                if said is None:
                    return "", (
                        "unknown: a 500 on a broken prefix without an error text: whether it says it is a "
                        "tokenization error (CONTEXT.md) cannot be told"
                    )
                if not said:
                    text = _error_text(o)
                    return "", (
                        "server error (500) on a broken prefix that does not say it is a tokenization error "
                        f"(CONTEXT.md: 500 with a tokenization error), but: {text[:160]}"
                    )
                return "backend prompt_token_ids differ from the input_ids sent (tokenization error)", ""
            return "", "server error (500) on a chat: a tokenization error or a crash, never a backend fault"
        if any(plan_explains(st, {f}) for f in faults):
            return f"backend fault {faults[-1]}", ""
        if execs:
            applied = f"fault {faults[-1]}" if faults else "no fault"
            return "", f"the backend served this request with {applied}, which does not produce {st}"
        for c in chaos:
            if is_outage(c) and c.covers(o.start, t1):
                return f"chaos {c.kind}", ""
        if not links.has_executions:
            return "", "unattributable"
        return "", "no backend execution of this request, and no backend outage overlapped it"

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        chaos = chaos_events(ops)  # run-wide: every part holds every chaos and fault operation
        links = Links(run, ops)  # this group's chats and the executions that carry their request ids
        links.has_executions = part.context.has_backend_executions and execution_log_gap(run) is None
        stored = _stored_upper_bounds(ops)  # per session: a session's answers are all in its part
        passed = _passthrough_executions(run, ops)
        counts: Counter[int] = Counter()
        explained: Counter[int] = Counter()
        out: list[Keyed] = []
        unattributed: list[tuple[int, str]] = []
        undecided: list[tuple[int, str]] = []
        for o in ops:
            st = o.status
            if st is None or st < 500 or o.f in ("chaos", "fault") or not part.mine(o.session):
                continue
            counts[st] += 1
            why, reason = self._explain(o, st, chaos, links, stored, passed)
            if why:
                explained[st] += 1
            elif reason == "unattributable":
                unattributed.append((o.invoke_index, f"{o.f} {o.request_id or o.session} answered {st}"))
            elif reason.startswith(UNKNOWN):
                undecided.append((o.invoke_index, f"{o.f} {o.request_id or o.session}: {reason[len(UNKNOWN) :]}"))
            else:
                msg = f"{o.f} answered {st}: {reason}"
                out.append(((o.invoke_index,), Violation(msg, o.indices, o.session, f"status_{st}")))
        logged = 0
        for o, st in _logged_only(part, ops):
            logged += 1
            why, reason = self._explain(o, st, chaos, links, stored, passed)
            if why or reason == "unattributable" or reason.startswith(UNKNOWN):
                continue  # nothing to say either way about a line no client saw
            msg = f"chat_done says status {st} for a chat whose client got no answer: {reason}"
            out.append(((o.invoke_index,), Violation(msg, o.indices, o.session, f"logged_status_{st}")))
        return {
            "logged": logged,
            "counts": counts,
            "explained": explained,
            "out": out,
            "unattributed": unattributed[:1],
            "n_unattributed": len(unattributed),
            "undecided": undecided[:1],
            "n_undecided": len(undecided),
        }

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        counts: Counter[int] = sum((p["counts"] for p in parts), Counter())
        explained: Counter[int] = sum((p["explained"] for p in parts), Counter())
        per = ", ".join(f"{s}: {counts[s]} ({explained[s]} explained)" for s in sorted(counts)) or "no 5xx"
        logged = sum(p.get("logged", 0) for p in parts)
        if logged:
            per += f"; {logged} logged 5xx of chats whose client got no answer"
        run = RunData(scenario=context.scenario, history=[])
        if not faults_applied(run) and fault_kinds(run):
            unknown = ["target.faults_applied is false: the scenario's backend faults were not applied"]
            return verdict(self.name, [], unknown=unknown, notes=per)
        unknown = []
        n = sum(p["n_unattributed"] for p in parts)
        if n:
            first = min(x for p in parts for x in p["unattributed"])[1]
            unknown.append(f"{n} 5xx not attributable without the backend's execution log (e.g. {first})")
        n = sum(p.get("n_undecided", 0) for p in parts)
        if n:
            first = min(x for p in parts for x in p.get("undecided", []))[1]
            unknown.append(f"{n} 500 not judged (e.g. {first})")
        return verdict(self.name, merge_violations(p["out"] for p in parts), unknown=unknown, notes=per)


UNKNOWN = "unknown: "  # an _explain reason that makes the verdict unknown, not a violation


def _logged_only(part: Part, ops: list[Op]) -> list[tuple[Op, int]]:
    """The chats of this part whose client got no status (it timed out or lost the connection) but whose
    ``chat_done`` line says the server answered 5xx, with that status: on our reference server only.

    The server's own account of such a request is held to the rules of an answered one: a logged 500
    is a tokenization error or a crash, a logged 502 a backend fault, and so on. CONTEXT.md fixes what
    a server answers, not what it logs for a request nobody got an answer to (499, 500, nothing: servers
    differ), so another server's lines are not judged; docs/reference_server.md says a chat whose
    client left is logged ``cancelled`` / 499. Joined by the caller's ``x-request-id``, and only where
    exactly one ``chat_start`` carries it (a duplicate retry that reuses it would join the other line).
    """
    if not part.context.has_server_logs or not reference_target(part.run):
        return []
    index = part.log_index()
    out: list[tuple[Op, int]] = []
    for o in ops:
        if o.f != "chat" or o.status is not None or not o.request_id or not part.mine(o.session):
            continue
        done = index.done_by_caller(o.request_id)
        if done is None or done[1] is None or done[1] < 500 or index.start_by_caller(o.request_id)[0] != 1:
            continue
        out.append((o, int(done[1])))
    return out


def _error_text(o: Op) -> str:
    """The error the client recorded for a failed answer: the body's ``error`` (an object as JSON), else its text."""
    err = (o.completion or {}).get("error")
    if err is None:
        return ""
    return err if isinstance(err, str) else json.dumps(err, sort_keys=True, default=str)


def _says_tokenization(o: Op) -> bool | None:
    """Does a 500 say it is a tokenization error? None when the client recorded no error text at all.

    CONTEXT.md promises "500 with a tokenization error", not a body format, so the test is loose: the
    error text names tokenization (``tokeniz``: TokenizationError, tokenization_error, "failed to
    tokenize") or the prefix it protects ("prefix invariant broken"). A body that says something else
    (an internal error, a traceback) is a crash, not that error; an empty one says nothing either way.
    """
    text = _error_text(o).strip().lower()
    if not text:
        return None
    return "tokeniz" in text or "prefix" in text


def _last_token_only(o: Op, execs: list[dict[str, Any]], answers: list[tuple[float, int | None]]) -> str:
    """What was rewritten, when the backend rewrote only the last token of the checkpoint the prompt extends
    (``retokenized_prompt;from_end=1``), else "".

    The fake found that checkpoint among its own answers (``retokenized_checkpoint``: the longest one the
    sent ids start with) and the client saw no longer answer of the session before this request ended:
    so the checkpoint the server holds, a prefix of the ids it sent, is that one or a prefix of it, and the
    new checkpoint differs from it in at most its last token. CONTEXT.md tolerates "a few trailing tokens
    (e.g. the end-of-turn newline)": one is within a few on any reading, so a 500 there is not the protocol's.
    """
    end = o.seen_end if o.seen_end is not None else o.start
    before = [n for t, n in answers if t < end]
    if not before or any(n is None for n in before):
        return ""
    longest = max(n for n in before if n is not None)
    for ex in execs:
        base, at = ex.get("retokenized_checkpoint"), ex.get("retokenized_at")
        if fault_name(str(ex.get("fault") or "")) != "retokenized_prompt" or ex.get("outcome") != "completed":
            continue
        if isinstance(base, int) and isinstance(at, int) and base >= longest and at == base - 1:
            return (
                f"only the last token (token {at}) of the {base}-token checkpoint the prompt extends: CONTEXT.md "
                "tolerates a few trailing tokens"
            )
    return ""


def _passthrough_executions(run: RunData, ops: list[Op]) -> dict[str, list[dict[str, Any]]]:
    """The backend executions of pass-through requests that answered 5xx, by the forwarded x-request-id."""
    want = {o.request_id for o in ops if o.request_id and (o.status or 0) >= 500 and is_passthrough(o)}
    out: dict[str, list[dict[str, Any]]] = {}
    if not want:
        return out
    for execs in run.backend_executions.values():
        for ex in execs if isinstance(execs, list) else ():
            rid = ex.get("request_id") if isinstance(ex, dict) else None
            if isinstance(rid, str) and rid in want:
                out.setdefault(rid, []).append(ex)
    return out


def _stored_upper_bounds(ops: list[Op]) -> dict[str, list[tuple[float, int | None]]]:
    """Per session, (when it was sent, prompt + completion tokens or None) of each 200 chat answer.

    The server commits only what it answers, so while a request is served its session's stored
    checkpoint is never longer than the longest answer to a chat that had started before the
    request ended: these bound which token positions a request's prefix can hold.
    """
    out: dict[str, list[tuple[float, int | None]]] = {}
    for o in ops:
        if o.f != "chat" or o.status != 200 or o.completion is None or o.session is None or o.aborted:
            continue
        p, c = o.completion.get("prompt_tokens"), o.completion.get("completion_tokens")
        n = int(p) + int(c) if isinstance(p, int) and isinstance(c, int) else None
        out.setdefault(o.session, []).append((o.start, n))
    return out


def _retokenized_hit(o: Op, execs: list[dict[str, Any]], answers: list[tuple[float, int | None]]) -> tuple[bool, str]:
    """Did this attempt's ``retokenized_prompt`` fault rewrite a token of a stored checkpoint? (yes, "") / (no, why)."""
    marked = [
        ex
        for ex in execs
        if fault_name(str(ex.get("fault") or "")) == "retokenized_prompt" and isinstance(ex.get("retokenized_at"), int)
    ]
    if not marked:
        return False, "the backend never rewrote the prompt ids of this attempt (no retokenized_at in its execution)"
    done = [ex for ex in marked if ex.get("outcome") == "completed" and ex.get("finish_reason") != "abort"]
    if not done:
        return False, "the rewritten answer was not a complete generation (aborted or cut: no prefix check applies)"
    end = o.seen_end if o.seen_end is not None else o.start
    before = [n for t, n in answers if t < end]
    if not before:
        return False, "no earlier answer of this session: nothing was stored, so no prefix can break"
    if any(n is None for n in before):
        return True, ""  # the answers carry no usage: a stored checkpoint exists, its length is not known
    longest = max(n for n in before if n is not None)
    at = min(int(ex["retokenized_at"]) for ex in done)
    if at < longest:
        return True, ""
    return False, f"the rewritten token {at} lies after every checkpoint the session can hold (<= {longest} tokens)"
