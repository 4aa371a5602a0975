"""provisional: aborted turns are recorded honestly and never become training data.

SGLang aborts generations (weight updates, preemption); the partial tokens must
not be committed, because the agent retries the turn from the prior checkpoint
and a committed partial answer would leave a half-sentence in the episode. The
server keeps an aborted answer as a *provisional* record instead. Rules, per
session state snapshot (final state, or the collect GET body before DELETE):

1. at most one provisional record, and only at the tail of ``records``;
2. a provisional never commits tokens: ``metadata.token_ids`` is not the
   provisional's prompt + completion, and no *committed* record carries a
   backend answer whose ``finish_reason`` is ``abort`` (``commit_aborted``);
3. a successful retry supersedes it: a provisional whose turn was later
   acknowledged (200, not aborted) must be gone (``provisional_never_superseded``);
4. when retries run out (the session's last state update was an aborted
   attempt, the snapshot taken after it), the provisional of that request
   stays as the final ABORTED turn. "Last" is the server's order
   (:class:`ops.ServerOrder`); final chats that the evidence cannot order are
   not judged (some orders legally leave another chat's record at the tail).

From the history alone: an answer whose ``finish_reason`` the client saw as
``abort`` must carry ``x-sglang-aborted: 1`` (the only signal that survives
litellm's remap); and, when the backend's execution log is there, an
execution the backend finished with ``abort`` must not reach the client as a
plain 200 without the header.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import (
    Op,
    ServerOrder,
    by_session,
    chat_done_by_caller,
    chat_done_by_req,
    done_for,
    fault_kinds,
    faults_applied,
    pair_ops,
    record_checkpoint,
    record_finish_reason,
    record_kind,
    record_rid,
    record_turn,
    snapshots,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, joins_whole, merge_violations
from harness.rundata import RunData


def _rid(rec: dict[str, Any]) -> str:
    return record_rid(rec) or ""


def _header_aborted(o: Op) -> bool:
    return str(o.headers.get("x-sglang-aborted", "")).strip() == "1"


class Provisional:
    name = "provisional"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    whole_when = staticmethod(joins_whole)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # Violations are keyed as the whole run finds them: the history's (0, invoke index), the execution log's
    # (1, key order, place in the key's list), the snapshots' (2, session, n).

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        snaps, _ = snapshots(run, ops, part.context.token_key)
        chats_by_session = by_session(ops, "chat")
        deletes = by_session(ops, "delete")
        unordered = 0
        by_req, by_caller = chat_done_by_req(run), chat_done_by_caller(run)
        order = ServerOrder(run, ops)
        out: list[Keyed] = []
        unknowns: list[tuple[tuple[Any, ...], str]] = []

        # history: an abort the client can see must carry the header
        for o in ops:
            if o.f != "chat" or o.type != "ok" or o.status != 200 or o.completion is None or not part.mine(o.session):
                continue
            if str(o.completion.get("finish_reason")) == "abort" and not _header_aborted(o):
                out.append(
                    (
                        (0, o.invoke_index),
                        Violation(
                            "answer with finish_reason 'abort' lacks x-sglang-aborted: 1 (abort committed as a turn?)",
                            o.indices,
                            o.session,
                            "abort_without_header",
                        ),
                    )
                )
        # backend execution log: an abort executed by the backend reached the client unmarked
        by_rid = {o.request_id: o for o in ops if o.f == "chat" and o.request_id}
        for sid, execs in run.backend_executions.items():
            places = part.exec_at.get(sid, [])
            for j, ex in enumerate(execs):
                if str(ex.get("finish_reason")) != "abort":
                    continue
                eo = by_rid.get(str(ex.get("request_id")))
                if eo is None or eo.type != "ok" or eo.status != 200 or _header_aborted(eo):
                    continue
                if str(eo.completion.get("finish_reason") if eo.completion else "") == "abort":
                    continue  # already reported above
                at = (1, part.key_order.get(sid, 0), places[j] if j < len(places) else j)
                msg = "backend aborted this generation but the client got a plain 200 without x-sglang-aborted"
                out.append((at, Violation(msg, eo.indices, sid, "abort_unmarked")))

        checked = 0
        kinds_inferred = False
        for sid, snap in sorted(snaps.items()):
            if not part.mine(sid):
                continue
            kinds_inferred = kinds_inferred or any(r.get("_kind_inferred") for r in snap.records)
            records = snap.records
            chats = sorted(chats_by_session.get(sid, []), key=lambda o: o.start)
            ops_by_rid: dict[str, Op] = {o.request_id: o for o in chats if o.request_id}
            seq = 0

            def violation(v: Violation) -> None:
                nonlocal seq
                out.append(((2, v.session, seq), v))
                seq += 1

            def unknown(why: str, sid: str = sid) -> None:
                nonlocal seq
                unknowns.append(((2, sid, seq), why))
                seq += 1

            checked += 1
            prov = [i for i, r in enumerate(records) if record_kind(r) == "provisional"]
            sidx = snap.indices
            if len(prov) > 1:
                violation(Violation(f"{len(prov)} provisional records (at most one)", sidx, sid, "many_provisional"))
            for i in prov:
                if i != len(records) - 1:
                    po = ops_by_rid.get(_rid(records[i]))
                    violation(
                        Violation(
                            f"provisional record at position {i} of {len(records)}, not at the tail",
                            sidx + (po.indices if po else []),
                            sid,
                            "provisional_not_tail",
                        )
                    )
            # 2. never commits tokens
            token_ids = snap.token_ids
            for i in prov:
                cp = record_checkpoint(records[i])
                committed_before = [r for r in records[:i] if record_kind(r) == "committed"]
                last_cp = record_checkpoint(committed_before[-1]) if committed_before else []
                if cp and isinstance(token_ids, list) and token_ids == cp and cp != last_cp:
                    violation(
                        Violation(
                            "metadata.token_ids equal the provisional record's prompt + completion: "
                            "an aborted turn committed tokens",
                            sidx,
                            sid,
                            "provisional_committed_tokens",
                        )
                    )
            for i, r in enumerate(records):
                if record_kind(r) == "committed" and record_finish_reason(r) == "abort":
                    po = ops_by_rid.get(_rid(r))
                    violation(
                        Violation(
                            f"committed record {i} holds a backend answer with finish_reason 'abort'",
                            sidx + (po.indices if po else []),
                            sid,
                            "aborted_committed",
                        )
                    )
            # 3. superseded by a successful retry
            for i in prov:
                po = ops_by_rid.get(_rid(records[i]))
                turn = record_turn(records[i])
                if turn is None and po is not None:
                    turn = po.turn
                if turn is None or po is None:
                    continue
                # "later" in the server's order: the retry read the state after the aborted copy stored its
                # provisional. An aborted copy that reached the server after its committed twin is a legal tail.
                cands = [b for b in chats if b is not po and b.acknowledged and b.turn == turn and b.end < snap.time]
                cands = [b for b in cands if order.outcome(b) not in ("state_changed_skip", "closing_skip")]
                after = [(b, order.read_after(b, po)) for b in cands]
                later = [b for b, a in after if a is True]
                if not later and any(a is None for _, a in after):
                    unknown(
                        f"provisional of turn {turn} in {sid} kept after an acknowledged retry that the server's "
                        "evidence cannot order before or after the aborted copy"
                    )
                if later:
                    violation(
                        Violation(
                            f"provisional record of turn {turn} survived a successful retry",
                            sidx + (po.indices if po else []) + [j for b in later for j in b.indices],
                            sid,
                            "provisional_not_superseded",
                        )
                    )
            # 4. kept when retries run out: the session's last state update, in the server's order, was an
            # aborted attempt. "Last" needs evidence: every other chat finished its update before it read the
            # state (the client had their answers before it sent it, or the logs say so). Concurrent final
            # chats may have been served in any order, and some orders leave no provisional: not judged.
            pre = [c for c in chats if c.start < snap.time]
            if not pre or len(pre) != len(chats):
                continue  # a chat sent after the collect GET may have been served before it
            last = next((c for c in pre if all(x is c or order.read_after(c, x) is True for x in pre)), None)
            if last is None:
                maybe_last = [c for c in pre if not any(order.read_after(x, c) is True for x in pre if x is not c)]
                unordered += any(c.aborted for c in maybe_last)
                continue
            if not (last.type == "ok" and last.status == 200 and last.aborted and last.end < snap.time):
                continue
            done = done_for(last, by_req, by_caller)
            if done and all(str(d.get("outcome")) not in ("aborted", "provisional") for d in done):
                continue  # the server says it skipped (closing / state changed): no provisional expected
            if not done and any(d.start < last.end for d in deletes.get(sid, [])):
                unordered += 1  # no log line: a DELETE may have set closing before its Phase 3 (closing skip)
                continue
            tail = records[-1] if records else None
            if (
                tail is None
                or record_kind(tail) != "provisional"
                or (
                    record_rid(tail) is not None and last.request_id is not None and record_rid(tail) != last.request_id
                )
            ):
                violation(
                    Violation(
                        f"retries ran out on turn {last.turn} (last attempt aborted) but the {snap.source} state "
                        "has no provisional record for it at the tail",
                        last.indices + sidx,
                        sid,
                        "provisional_missing",
                    )
                )
        unknowns.sort(key=lambda kv: kv[0])
        return {
            "out": out,
            "unknown": unknowns[:5],
            "checked": checked,
            "unordered": unordered,
            "inferred": kinds_inferred,
        }

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        run = RunData(scenario=context.scenario, history=[])
        checked = sum(p["checked"] for p in parts)
        unordered = sum(p["unordered"] for p in parts)
        violations = merge_violations(p["out"] for p in parts)
        unknown = [why for _, why in sorted((kv for p in parts for kv in p["unknown"]), key=lambda kv: kv[0])][:5]
        if not faults_applied(run) and any("abort" in k for k in fault_kinds(run)):
            unknown.append("target.faults_applied is false: the scenario's abort faults were not applied")
        notes = f"{checked} session states checked"
        if unordered:
            notes += (
                f"; {unordered} whose final chats the server's evidence cannot order not judged for retries run out"
            )
        if any(p["inferred"] for p in parts):
            notes += "; records carry no kind: an aborted answer is taken as the provisional"
        return verdict(self.name, violations, unknown=unknown, notes=notes)
