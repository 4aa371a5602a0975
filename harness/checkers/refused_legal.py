"""refused_legal: a 4xx answer to a chat request that the protocol allows is a bug.

A server that refuses a legal request with 400 looks, from the rollout's side,
like "the agent gave up": no turn is lost (nothing was acknowledged), no state
is wrong, so no other checker sees it. The agent knows what it sent, and the
protocol (CONTEXT.md) says what must be accepted on a live session:

- the **first turn** (no stored tokens): always;
- a **next turn** extending the stored history, a **retry** of the same
  messages (after an abort: the provisional never committed tokens; after a
  timeout, a 5xx, a 409 or a refused connection: at most the lost attempt's
  answer is discarded), a **duplicate** copy in flight, a **tool retry**
  (the last assistant step and its tool results redone) and a **first-turn
  retry** (turn 0 redone with another user message): each rolls back at most
  one assistant step, which the protocol's retry rollback accepts.

The agents record that as ``request_kind`` (``first``, ``next``, ``retry``,
``duplicate``, ``tool_retry``, ``first_turn_retry``) and ``retry_after`` on
the chat invoke (docs/contracts.md, "History"). With a correct server the
agent's view differs from the stored history by at most its last assistant
step (a commit always equals the committing request's messages plus its
answer, because the ``num_assistant`` guard drops stale writers), so each of
these kinds is legal whatever the interleaving.

What may legitimately refuse such a request:

- **404** once the session is closing or gone: a DELETE of it (by the agent or
  the chaos) invoked before the chat's answer, a kill of its server since the
  session was created, or a request sent to a process that does not own it.
  After a DELETE only 404 is (CONTEXT.md: "a request that arrives for a closing
  or removed session gets 404"; one past Phase 1 gets the backend's answer): a
  403, 400 or 410 there is ``refused_<status>_after_delete``;
- **409** only under the declared ``conflict_409`` design, and only when
  another chat of the session overlapped it (someone could have committed
  during its proxy phase);
- any 4xx the **backend** answered for that request (passed through): the
  execution log shows the ``http_<status>`` fault applied to it, or the
  request carried that fault as ``x-fake-fault``, or (no execution log) the
  scenario's plan has that fault class.

400 / 422 (and the other refusals: 403, 405, 410, 415) on a live session are
never legal for these kinds. 408, 413 and 429 are resource limits the
protocol does not fix and are not judged. A refused chat without
``request_kind`` is judged only when it is evidently the session's first
request (turn 0, attempt 0, no earlier chat); otherwise it is unknown, with
the reason. Fuzz requests (tagged ``fuzz`` / ``expect``: hostile input on
purpose) are bad_input's business and skipped.

Every rule reads one session's operations (and the run-wide chaos, owners and
plan), so the per-session pass (harness/checkers/stream.py) judges each part's
sessions and the reduce merges them in the run's order; ``check`` is that
reduce over the one part that is the whole run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.errors import fault_name
from harness.checkers.ops import (
    Chaos,
    Links,
    Op,
    by_session,
    chaos_events,
    fault_kinds,
    faults_applied,
    is_kill,
    pair_ops,
    reference_target,
    variants,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData

__all__ = ["LEGAL_KINDS", "RefusedLegal"]

LEGAL_KINDS = frozenset({"first", "next", "retry", "duplicate", "tool_retry", "first_turn_retry"})
NOT_JUDGED = frozenset({408, 413, 429})


def _same_server(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a.rstrip("/") == b.rstrip("/")


def _field(o: Op, key: str) -> Any:
    """A field the agent recorded on the chat's invoke (or, from other recorders, its completion)."""
    v = o.invoke.get(key)
    if v is None and o.completion is not None:
        v = o.completion.get(key)
    return v


class RefusedLegal:
    name = "refused_legal"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        chaos = [c for c in chaos_events(ops) if is_kill(c)]  # chaos operations are in every part
        links = Links(run, ops)  # this group's chats and the executions that carry their request ids
        links.has_executions = part.context.has_backend_executions and part.context.execution_log_gap is None
        plan = fault_kinds(run) if faults_applied(run) else set()
        conflict = "conflict_409" in variants(run)
        ours = reference_target(run)
        owners = {str(k): str(v).rstrip("/") for k, v in run.owners.items() if isinstance(v, str)}
        chats = {sid: cl for sid, cl in by_session(ops, "chat").items() if part.mine(sid)}
        deletes = by_session(ops, "delete")
        creates = {o.session: o for o in ops if o.f == "create" and o.type == "ok" and o.session is not None}
        counts: Counter[str] = Counter()
        out: list[Keyed] = []
        undecided: list[tuple[tuple[int, int], str]] = []
        for sid, cl in chats.items():
            for o in cl:
                st = o.status
                if st is None or not 400 <= st < 500 or st in NOT_JUDGED:
                    continue
                if _field(o, "fuzz") is not None or _field(o, "expect") is not None:
                    continue  # careless / hostile input on purpose: bad_input's business
                key = (cl[0].invoke_index, o.invoke_index)  # check()'s order: by session, then by operation
                counts[str(st)] += 1
                if self._passed_through(o, st, links, plan):
                    counts["passed_through"] += 1
                    continue
                end = o.seen_end if o.seen_end is not None else o.start
                deleted = any(d.start <= end for d in deletes.get(sid, []))
                if deleted and (st == 404 or (st == 409 and conflict)):
                    counts["after_delete"] += 1
                    continue
                created = creates.get(sid)
                born = created.start if created is not None else 0.0
                if self._killed(o, chaos, born, end):
                    counts["after_kill"] += 1
                    continue
                owner = owners.get(sid) or (created.server.rstrip("/") if created and created.server else None)
                if owner is not None and o.server is not None and o.server.rstrip("/") != owner:
                    counts["wrong_process"] += 1
                    continue
                if not ours and any(c.invoke.get("reserialized_tool_arguments") for c in cl if c.start <= o.start):
                    undecided.append(
                        (
                            key,
                            f"chat {o.request_id} (turn {o.turn}) answered {st} after the session's tool calls were "
                            "resent with re-serialized arguments: CONTEXT.md does not say how a server compares "
                            "them with the stored ones, so a divergence (400) may be its rule",
                        )
                    )
                    continue
                kind = _field(o, "request_kind")
                if kind is None:
                    first = o.turn == 0 and o.attempt == 0 and not any(c.start < o.start for c in cl if c is not o)
                    if not first:
                        undecided.append(
                            (
                                key,
                                f"chat {o.request_id} (turn {o.turn}, attempt {o.attempt}) answered {st} without a "
                                "request_kind: the history does not say what was sent",
                            )
                        )
                        continue
                    kind = "first"
                if str(kind) not in LEGAL_KINDS:
                    undecided.append(
                        (key, f"chat {o.request_id} of request_kind {kind!r} answered {st}: not a kind it can judge")
                    )
                    continue
                after = _field(o, "retry_after")
                what = f"{kind}" + (f" after {after}" if after else "")
                if st == 409:
                    if not conflict:
                        msg = (
                            f"chat turn {o.turn} attempt {o.attempt} ({what}) answered 409, but the design "
                            "does not declare conflict_409 (a state change during the proxy is a silent 200)"
                        )
                        out.append((key, Violation(msg, o.indices, sid, "conflict_undeclared")))
                        continue
                    if any(c is not o and c.overlaps(o) for c in cl):
                        counts["conflict"] += 1
                        continue
                    msg = (
                        f"chat turn {o.turn} attempt {o.attempt} ({what}) answered 409 though no other chat "
                        "of the session was in flight: nothing could have changed its state"
                    )
                    out.append((key, Violation(msg, o.indices, sid, "conflict_without_race")))
                    continue
                if deleted:
                    msg = (
                        f"chat turn {o.turn} attempt {o.attempt} ({what}) answered {st} after a DELETE of its "
                        "session was sent: a request for a closing or removed session gets 404, and one already "
                        "past Phase 1 gets the backend's answer (CONTEXT.md)"
                    )
                    out.append((key, Violation(msg, o.indices, sid, f"refused_{st}_after_delete")))
                    continue
                live = "no DELETE, no kill of its server, sent to its owner"
                msg = (
                    f"chat turn {o.turn} attempt {o.attempt} ({what}) answered {st} on a live session ({live}): "
                    "the protocol accepts this request"
                )
                out.append((key, Violation(msg, o.indices, sid, f"refused_{st}")))
        return {"counts": counts, "out": out, "undecided": undecided[:1], "n_undecided": len(undecided)}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        counts: Counter[str] = sum((p["counts"] for p in parts), Counter())
        notes = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "no 4xx on chats"
        unknown = []
        n = sum(p["n_undecided"] for p in parts)
        if n:
            first = min(x for p in parts for x in p["undecided"])[1]
            unknown.append(f"{n} refused chat(s) the checker cannot judge (e.g. {first})")
        return verdict(self.name, merge_violations(p["out"] for p in parts), unknown=unknown, notes=notes)

    @staticmethod
    def _passed_through(o: Op, st: int, links: Links, plan: set[str]) -> bool:
        """The backend itself answered this request with that status (the server passes non-200s through)."""
        want = f"http_{st}"
        forced = _field(o, "forced_fault")
        if isinstance(forced, str) and fault_name(forced) == want:
            return True
        execs = links.executions_of(o)
        if any(fault_name(str(ex.get("fault"))) == want for ex in execs if ex.get("fault")):
            return True
        if execs or links.has_executions:
            return False
        names = {fault_name(k) for k in plan}
        return bool({want, f"status_{st}", "http_4xx", "unparsed"} & names)

    @staticmethod
    def _killed(o: Op, kills: list[Chaos], born: float, end: float) -> bool:
        return any(_same_server(c.server, o.server) and born <= c.end and c.start <= end for c in kills)
