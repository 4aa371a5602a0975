"""exactly_once: the backend ran each client request at most once, and only those.

Generation is the expensive, side-effecting step (it burns GPU time, and under
RL it is sampled: running a turn twice gives two different answers, one of
which the agent never saw). The fake SGLang's execution log
(``backend_executions``: routing key -> executions with the client's
``request_id``) lets the run compare what the backend executed with what the
agents sent:

- every execution belongs to a chat request the history knows, on the same
  session (the server invents no requests and retries none on its own);
- no client request is executed twice;
- a chat acknowledged with 200 was executed exactly once (a 200 with no
  execution is an answer the backend never produced).

A turn legitimately runs more than once only through distinct client attempts
(abort retries, timeout retries, duplicates), each with its own request id.
Without an execution log (external backend) the verdict is unknown.

When the run declares the ``delete_cancel`` design (CONTEXT.md: "DELETE cancels
the in-flight proxy of that session (and tells the backend via ``POST
/abort_request``)"), a chat that reached the backend and was answered 404 while
its session was being deleted was cancelled mid-proxy: the backend must have
been told to abort that generation by its ``rid`` (the fake marks the execution
``abort_requested``). A generation left running for a client that is gone
burns the GPU the design exists to free (``cancel_not_sent``). A chat whose
generation was in flight for the whole of such a DELETE (bounded from the
client's times and the fake's ``latency_ms``) and that was answered 200 was
never cancelled at all (``cancel_not_done``).

A log that is not continuous over the run (the backend restarted, or its log
was cleared by ``POST /admin/reset``: harness/checkers/continuity.py) proves
what it holds, not what it lacks: executions it shows still count (twice,
unknown, wrong routing key), but an acknowledged chat missing from it may have
run before the loss, so those are not violations and the verdict is unknown
with the reason (at most invalid on what the log does show).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.continuity import execution_log_gap
from harness.checkers.ops import Op, fault_status, pair_ops, variants
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData


class ExactlyOnce:
    name = "exactly_once"

    @staticmethod
    def _cancel_told(run: RunData, ops: list[Op], chats: dict[str, Op]) -> list[Violation]:
        """delete_cancel: every execution of a chat cancelled by its session's DELETE was aborted by rid."""
        deletes: dict[str, list[float]] = {}  # session -> send times of its DELETEs answered 2xx
        for d in ops:
            if d.f == "delete" and d.session and d.status is not None and 200 <= d.status < 300:
                deletes.setdefault(d.session, []).append(d.start)
        out: list[Violation] = []
        for _key, execs in sorted(run.backend_executions.items()):
            for ex in execs:
                o = chats.get(str(ex.get("request_id")))
                if o is None or o.status != 404 or o.session is None or ex.get("abort_requested"):
                    continue
                if fault_status(ex.get("fault")) is not None:
                    continue  # the backend's own 404, passed through (CONTEXT.md): no DELETE cancelled it
                if not any(t <= o.end for t in deletes.get(o.session, [])):
                    continue  # no DELETE of its session was sent while it was in flight
                out.append(
                    Violation(
                        f"chat {o.request_id} was cancelled by its session's DELETE (404) but the backend was never "
                        f"told to abort generation {ex.get('rid')} (delete_cancel: POST /abort_request by rid)",
                        o.indices,
                        o.session,
                        "cancel_not_sent",
                    )
                )
        out.extend(ExactlyOnce._left_running(run, ops, chats))
        return out

    @staticmethod
    def _left_running(run: RunData, ops: list[Op], chats: dict[str, Op]) -> list[Violation]:
        """delete_cancel: a generation in flight across the whole of its session's DELETE was told to abort.

        From the client's times and the fake's own schedule: an execution that ended as planned (no
        fault, ``stop``, ``completed``) and whose answer the client got (200) held its request for at
        least ``latency_ms`` (the fake waits that long before it answers). So it reached the backend no
        later than ``chat end - latency`` and was still generating until at least ``chat start +
        latency``. If the first is before the DELETE was sent and the second after the DELETE was
        answered, the chat was in its proxy phase when the server handled the DELETE: the DELETE
        cancels that proxy and POSTs ``/abort_request`` before answering (CONTEXT.md), so the execution
        carries ``abort_requested``. Client-side bounds only get looser under load (sends before
        arrival, answers after the backend's), so a correct server cannot fall inside them.
        """
        done: dict[str, list[tuple[float, float]]] = {}  # session -> (sent, answered) of its 2xx DELETEs
        for d in ops:
            if d.f == "delete" and d.session and d.status is not None and 200 <= d.status < 300:
                done.setdefault(d.session, []).append((d.start, d.end))
        out: list[Violation] = []
        for _key, execs in sorted(run.backend_executions.items()):
            for ex in execs:
                o = chats.get(str(ex.get("request_id")))
                if o is None or o.session is None or o.completion is None or ex.get("abort_requested"):
                    continue
                if o.status != 200:
                    continue  # only a 200 carries this generation's answer, so it ended before o.end (404: the
                    # proxy was cancelled, whether the backend was told is cancel_not_sent's)
                if ex.get("fault") is not None or ex.get("outcome") != "completed":
                    continue
                if ex.get("finish_reason") != "stop" or not isinstance(ex.get("latency_ms"), (int, float)):
                    continue
                held = max(0.0, float(ex["latency_ms"]) - 0.001) / 1000.0  # latency_ms is rounded to 1 us
                reached_by, running_until = o.end - held, o.start + held
                for sent, answered in done.get(o.session, []):
                    if reached_by < sent and answered < running_until:
                        out.append(
                            Violation(
                                f"chat {o.request_id} was in its proxy phase for the whole of its session's DELETE "
                                f"(backend reached by {reached_by:.3f}, generating until {running_until:.3f}; "
                                f"DELETE {sent:.3f}-{answered:.3f}) but was answered 200 and its generation "
                                f"{ex.get('rid')} ran to completion, never told to abort (delete_cancel: DELETE "
                                "cancels the in-flight proxy)",
                                o.indices,
                                o.session,
                                "cancel_not_done",
                            )
                        )
                        break
        return out

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all
    # Each execution is in the part of the chat whose request id it carries (else its routing key's), so a
    # chat's executions are all in its part; a request id no chat carries may be executed in several parts.

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        chats: dict[str, Op] = {}
        first: dict[str, int] = {}  # where the run-wide table has the entry: its first chat
        for o in ops:
            rid = o.request_id
            if o.f != "chat" or not rid:
                continue
            split = part.split.get(rid)
            if split is not None and split[1] != part.group:
                continue  # the run-wide entry is another part's (its last chat is there)
            chats[rid] = o
            first.setdefault(rid, split[0] if split is not None else o.invoke_index)
        out: list[Keyed] = []
        executed: Counter[str] = Counter()
        orphans: Counter[str] = Counter()  # executed request ids no chat of this part carries
        n = 0
        for key, execs in sorted(run.backend_executions.items()):
            places = part.exec_at.get(key, [])
            for j, ex in enumerate(execs):
                n += 1
                at = (key, places[j] if j < len(places) else j)
                rid = ex.get("request_id")
                if rid is None:
                    msg = f"backend execution {ex.get('rid')} carries no x-request-id (not forwarded?)"
                    out.append(((0, *at), Violation(msg, [], key, "unattributed_execution")))
                    continue
                if str(rid) not in chats and part.fuzzed(str(rid)):
                    continue
                chat = chats.get(str(rid))
                if chat is None:
                    orphans[str(rid)] += 1
                    msg = f"backend executed request {rid} that no agent sent"
                    out.append(((0, *at), Violation(msg, [], key, "unknown_execution")))
                    continue
                executed[str(rid)] += 1
                if chat.session is not None and chat.session != key:
                    msg = f"request {rid} of session {chat.session} executed under routing key {key}"
                    out.append(((0, *at), Violation(msg, chat.indices, chat.session, "wrong_routing_key")))
        for rid, k in sorted(executed.items()):
            if k > 1:
                o = chats[rid]
                msg = f"request {rid} executed {k} times by the backend"
                out.append(((1, rid), Violation(msg, o.indices, o.session, "executed_twice")))
        if "delete_cancel" in variants(run):
            for key, execs in sorted(run.backend_executions.items()):
                places = part.exec_at.get(key, [])
                for j, ex in enumerate(execs):
                    one = replace(run, backend_executions={key: [ex]})
                    for v in self._cancel_told(one, ops, chats):
                        out.append(((2, key, places[j] if j < len(places) else j), v))
        gap = execution_log_gap(run)
        missing = 0
        for rid, o in chats.items():
            if o.acknowledged and executed[rid] == 0:
                missing += 1
                if gap is None:
                    msg = "chat acknowledged (200) but never executed by the backend"
                    out.append(((3, first[rid]), Violation(msg, o.indices, o.session, "ack_without_execution")))
        return {"out": out, "orphans": orphans, "n": n, "chats": len(chats), "missing": missing}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        if not context.has_backend_executions:
            return verdict(
                self.name, [], unknown=[context.execution_log_gap or "no backend execution log (external backend?)"]
            )
        keyed = [kv for p in parts for kv in p["out"]]
        orphans: Counter[str] = sum((p["orphans"] for p in parts), Counter())
        for rid, k in orphans.items():
            if k > 1:  # executed in several parts: no chat carries it, so no ops and no session
                keyed.append(
                    (
                        (1, rid),
                        Violation(f"request {rid} executed {k} times by the backend", [], None, "executed_twice"),
                    )
                )
        violations = merge_violations([keyed])
        notes = f"{sum(p['n'] for p in parts)} backend executions, {sum(p['chats'] for p in parts)} chat requests"
        gap = context.execution_log_gap
        if gap is None:
            return verdict(self.name, violations, notes=notes)
        missing = sum(p["missing"] for p in parts)
        why = f"{gap}; {missing} acknowledged chat(s) absent from it not judged, a double execution across it unseen"
        return verdict(self.name, violations, unknown=[why], notes=notes)
