"""lost_turns: every turn the server acknowledged is in the session's records, once, in order.

An RL trainer reads a session's records as the episode. A 200 that the agent
took as a committed turn but that never made it into the records (a stale
writer overwrote it, a commit was skipped, a rollback went one step too far, a
session vanished) is a silently truncated episode; a record stored twice is a
duplicated one.

Records are matched to requests through the backend's execution log (the
answer a record holds carries the backend's rid; the execution with that rid
carries the caller's forwarded ``x-request-id``: ``ops.Links``), falling back
to a request id the server echoes into its records. A session whose records
cannot be linked either way is unknown, not invalid.

What counts as acknowledged: a chat answered 200 without ``x-sglang-aborted``
(aborted turns are the provisional checker's business). What may legitimately
be missing:

- a turn *superseded* by a later acknowledged (or indeterminate) chat of the
  same or an earlier turn on that session (a tool-call retry rolls it back);
- all but one of a group of concurrent duplicates of one turn (overlapping in
  time): exactly one of them commits, the others get ``state_changed`` (200, no
  commit) by design; the group needs one record, and stale_writers judges the rest;
- a turn the server skipped by design (CONTEXT.md Phase 3: another request
  committed meanwhile, skip the update, return the answer): its chat_done says
  ``state_changed...`` and another chat of the session committed between its
  chat_start and chat_done on the same process (e.g. a starved client's late
  copy of the previous turn, which rolled that turn back and re-committed it
  while this turn was in its proxy phase);
- turns acknowledged after the state snapshot was taken;
- on a server other than ours, a turn missing after a later request that resent earlier tool calls with
  their arguments re-serialized (``agent.reserialize_tool_arguments``; the invoke's
  ``reserialized_tool_arguments``): CONTEXT.md does not say how a resent assistant turn is compared with
  the stored one, so rolling it back may be that server's rule (unknown, with the reason). Our reference
  server compares tool-call arguments as canonical JSON (docs/reference_server.md): on it
  (``ops.reference_target``) the request extends the history and the missing turn is lost.

Order is the server's commit order (:class:`ops.ServerOrder`): a record is out
of order only when it precedes one whose writer had finished its update before
its own writer read the state. On a starved client an answer can arrive long
after the server moved on, so the order in which answers reached the client
proves nothing.

State comes from ``final_states`` or, for sessions the agent deleted at the end
of its episode, the collect ``GET`` body in the history (completion field
``body``). A session deleted without a collected body is skipped (chaos deleted
it by design); a session that simply vanished (final state 404, no 204 DELETE,
no process kill) lost all its turns.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import (
    Op,
    ServerOrder,
    by_session,
    chaos_events,
    deletes_204,
    is_kill,
    pair_ops,
    record_kind,
    record_rid,
    reference_target,
    snapshots,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, joins_whole, merge_violations
from harness.rundata import RunData


def duplicate_groups(chats: list[Op]) -> list[list[Op]]:
    """Connected components of chats of the same turn that overlap in time."""
    groups: list[list[Op]] = []
    by_turn: dict[int | None, list[Op]] = {}
    for o in chats:
        by_turn.setdefault(o.turn, []).append(o)
    for turn, lst in by_turn.items():
        if turn is None:
            groups.extend([o] for o in lst)
            continue
        lst = sorted(lst, key=lambda o: o.start)
        cur: list[Op] = []
        cur_end = -1.0
        for o in lst:
            if cur and o.start < cur_end:
                cur.append(o)
                cur_end = max(cur_end, o.end)
            else:
                if cur:
                    groups.append(cur)
                cur = [o]
                cur_end = o.end
        if cur:
            groups.append(cur)
    return groups


def _may_have_written(b: Op) -> bool:
    return b.acknowledged or b.type == "info" or b.completion is None


def superseded(op: Op, chats: list[Op], order: ServerOrder | None = None) -> bool | None:
    """A later chat of the same or an earlier turn, acknowledged or indeterminate, rolled it back.

    "Later" is the server's order: the chat read the state after ``op``'s update
    (:class:`ServerOrder`: its log lines and the backend's execution log, else
    the client's view). True: some such chat certainly came after; None: one
    may have (the evidence cannot order them); False: none did.
    """
    if op.turn is None:
        return False
    maybe = False
    for b in chats:
        if b is op or b.turn is None or b.turn > op.turn or not _may_have_written(b):
            continue
        after = (True if b.start >= op.end else None) if order is None else order.read_after(b, op)
        if after is True:
            return True
        if after is None:
            maybe = True
    return None if maybe else False


def replaced_unseen(group: list[Op], chats: list[Op], order: ServerOrder) -> bool | None:
    """The copy of this turn that the server committed is one whose answer never reached the client
    (it timed out), and a later request replaced it: the client went on from another copy's answer,
    so its next request diverged from the stored turn and rolled it back, as the protocol says.

    True with the server's evidence (chat_done outcomes and order); None when the group has an
    indeterminate copy that may have committed but the logs cannot say; False otherwise.
    """
    unseen = [o for o in group if o.type == "info" or o.completion is None]
    if not unseen:
        return False
    if not all(order.logged(o) for o in group):
        first = min(o.start for o in group)
        later = any(
            c not in group
            and (c.start > first or (_may_have_written(c) and any(order.read_after(c, o) is not False for o in unseen)))
            for c in chats
        )
        return None if later else False
    winners = [o for o in group if order.outcome(o) == "committed"]
    if not winners or any(w not in unseen for w in winners):
        return False
    for c in chats:
        if c in group or not _may_have_written(c):
            continue
        if all(order.read_after(c, w) is True for w in winners):
            return True
    return False


def _assistant_sha(body: dict[str, Any], turn: int) -> str | None:
    """sha1 of the stored ``turn``-th assistant message's content (``metadata.messages``), if the server shows it."""
    meta = body.get("metadata")
    msgs = meta.get("messages") if isinstance(meta, dict) else None
    if not isinstance(msgs, list):
        return None
    assistants = [m for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]
    if turn >= len(assistants):
        return None
    content = assistants[turn].get("content")
    return hashlib.sha1(content.encode()).hexdigest() if isinstance(content, str) else None


def continued_from_overwritten(
    group: list[Op], acked: list[Op], body: dict[str, Any], order: ServerOrder
) -> bool | None:
    """Several copies of one turn answered 200 with different content and the client went on from one the
    server had already overwritten (another copy committed after it, a one-step rollback): its next request
    diverged from the stored turn, and rolling that turn back is what the protocol says (CONTEXT.md: retry
    rollback). True when the stored history shows the client went on from such a copy; None when it went on
    from some copy but the order cannot say whether another one overwrote it; False otherwise.
    """
    shas = {str((o.completion or {}).get("content_sha")) for o in acked if (o.completion or {}).get("content_sha")}
    if len(shas) < 2 or acked[0].turn is None:
        return False
    kept = _assistant_sha(body, acked[0].turn)
    chosen = [o for o in acked if (o.completion or {}).get("content_sha") == kept]
    if kept is None or not chosen:
        return False
    verdicts: list[bool | None] = []
    for x in chosen:
        later = [order.read_after(y, x) for y in group if y is not x and y.acknowledged]
        verdicts.append(True if any(v is True for v in later) else (None if any(v is None for v in later) else False))
    if any(v is True for v in verdicts):
        return True
    return None if any(v is None for v in verdicts) else False


class LostTurns:
    name = "lost_turns"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    whole_when = staticmethod(joins_whole)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # A session's violations and unknowns are keyed (phase, session, n): the whole run's order.

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        snaps, missing = snapshots(run, ops, part.context.token_key)
        chats_by_session = by_session(ops, "chat")
        deleted = deletes_204(ops)
        kills = [c for c in chaos_events(ops) if is_kill(c)]
        order = ServerOrder(run, ops)
        # docs/reference_server.md: ours compares tool-call arguments as canonical JSON (a respelled resend extends)
        ours = reference_target(run)
        # a DELETE whose outcome the client never learnt (timeout) may have deleted the session
        maybe_deleted = {o.session for o in ops if o.f == "delete" and o.session and o.end == float("inf")}
        maybe_deleted |= {str(ln.get("session_id")) for ln in run.server_logs if ln.get("event") == "session_deleted"}
        out: list[Keyed] = []
        unknowns: list[tuple[tuple[Any, ...], str]] = []
        seq = 0
        phase = 0

        def violation(v: Violation) -> None:
            nonlocal seq
            out.append(((phase, sid, seq), v))
            seq += 1

        def unknown(why: str) -> None:
            nonlocal seq
            unknowns.append(((phase, sid, seq), why))
            seq += 1

        skipped_deleted = 0
        skipped_by_design = 0
        checked = 0
        for sid in missing:
            if not part.mine(sid):
                continue
            acked = [o for o in chats_by_session[sid] if o.acknowledged]
            if not acked:
                continue
            if sid in deleted or sid in maybe_deleted:
                skipped_deleted += 1
                continue
            if sid in run.final_states and run.final_states[sid] is None:
                owner = (run.owners.get(sid) or "").rstrip("/")
                if any(c.server is None or c.server.rstrip("/") == owner for c in kills):
                    skipped_deleted += 1
                    continue
                violation(
                    Violation(
                        f"session vanished (final GET 404, never deleted) with {len(acked)} acknowledged turns",
                        [i for o in acked for i in o.indices],
                        sid,
                        "session_vanished",
                    )
                )
            else:
                unknown(f"no state for session {sid} (neither final state nor collect GET body)")
        phase = 1
        for sid, snap in sorted(snaps.items()):
            if not part.mine(sid):
                continue
            chats = sorted(chats_by_session.get(sid, []), key=lambda o: o.start)
            if not chats:
                continue
            checked += 1
            records = snap.records
            rids = [record_rid(r) for r in records]
            if records and all(r is None for r in rids):
                unknown(
                    f"records of {sid} cannot be linked to requests (no backend execution matches their answers' "
                    "meta_info.id and they echo no caller request id)"
                )
                continue
            unlinked = sum(1 for r in rids if r is None)
            counts = Counter(r for r in rids if r is not None)
            for rid, n in counts.items():
                if n > 1:
                    ops_ = [i for o in chats if o.request_id == rid for i in o.indices]
                    violation(
                        Violation(f"request {rid} stored {n} times in the records", ops_, sid, "duplicate_record")
                    )
            position = {rid: i for i, rid in enumerate(rids) if rid is not None}
            required: list[tuple[Op, list[Op], int]] = []
            for group in duplicate_groups(chats):
                acked = [o for o in group if o.acknowledged and o.end < snap.time]
                if not acked:
                    continue
                excused = [superseded(o, chats, order) for o in acked]
                if all(e is True for e in excused):
                    continue
                present = [position[o.request_id] for o in group if o.request_id in position]
                committed = [p for p in present if record_kind(records[p]) == "committed"]
                idx = [i for o in acked for i in o.indices] + snap.indices
                if not present and unlinked:
                    unknown(
                        f"turn {acked[0].turn} of {sid} not found among the linked records, and {unlinked} "
                        "record(s) could not be linked to a request"
                    )
                    continue
                if not present:
                    if all(order.skipped_for(o, chats) is not None for o in acked):
                        skipped_by_design += 1  # another request committed during its proxy: a 200 skip
                        continue
                    unseen = replaced_unseen(group, chats, order)
                    if unseen is True:
                        continue
                    overwritten = continued_from_overwritten(group, acked, snap.body, order)
                    if overwritten is True:
                        continue
                    if overwritten is None:
                        unknown(
                            f"turn {acked[0].turn} of {sid}: copies {[o.request_id for o in acked]} answered 200 "
                            "with different content and the client went on from one of them; whether another copy "
                            "overwrote it first (so the next turn rolled it back legitimately) the server's order "
                            "cannot say"
                        )
                        continue
                    if unseen is None or any(e is None for e in excused):
                        unknown(
                            f"turn {acked[0].turn} of {sid} acknowledged by {[o.request_id for o in acked]} is not "
                            "in the records, and without the server's order (chat_start/chat_done lines, backend "
                            "execution log) a later or unseen copy may have rolled it back legitimately"
                        )
                        continue
                    # any request of the session, before or after: a respelled request that committed stores the
                    # new spelling, and the next one, in the original spelling, then diverges from it
                    respelled = [b for b in chats if b.invoke.get("reserialized_tool_arguments")]
                    if respelled and not ours:
                        unknown(
                            f"turn {acked[0].turn} of {sid} is not in the records, and a request of the session "
                            f"({respelled[0].request_id}) resent earlier tool calls with their arguments "
                            "re-serialized: CONTEXT.md does not say how a server compares them with the stored "
                            "ones, so a rollback there may be its rule"
                        )
                        continue
                    violation(
                        Violation(
                            f"turn {acked[0].turn} acknowledged (200) by request(s) "
                            f"{[o.request_id for o in acked]} is missing from the {snap.source} records",
                            idx,
                            sid,
                            "lost_turn",
                        )
                    )
                    continue
                if not committed:
                    violation(
                        Violation(
                            f"turn {acked[0].turn} acknowledged (200, not aborted) is stored only as provisional",
                            idx,
                            sid,
                            "acked_provisional",
                        )
                    )
                    continue
                pos = min(committed)
                writer = next(o for o in group if position.get(o.request_id or "") == pos)
                required.append((writer, acked, pos))
            # Records are appended in the server's commit order. Out of order is a record stored before
            # one whose writer had finished its update before this record's writer read the state (the
            # client had that answer before it sent this request, or the server's logs say so). Writers
            # the evidence cannot order may have been served either way: the records' own order is legal.
            for b_w, b_ops, b_pos in required:
                before = [(a_w, a_ops) for a_w, a_ops, a_pos in required if b_pos < a_pos]
                for a_w, a_ops in before:
                    if order.read_after(b_w, a_w) is not True:
                        continue
                    violation(
                        Violation(
                            f"records out of order: turn {b_ops[0].turn} stored before turn {a_ops[0].turn}, "
                            f"though request {b_w.request_id} read the state after {a_w.request_id} committed",
                            [i for o in a_ops + b_ops for i in o.indices],
                            sid,
                            "out_of_order",
                        )
                    )
                    break
        unknowns.sort(key=lambda kv: kv[0])
        return {
            "out": out,
            "unknown": unknowns[:5],
            "checked": checked,
            "deleted": skipped_deleted,
            "by_design": skipped_by_design,
        }

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        checked = sum(p["checked"] for p in parts)
        skipped_deleted = sum(p["deleted"] for p in parts)
        skipped_by_design = sum(p["by_design"] for p in parts)
        unknown = [why for _, why in sorted((kv for p in parts for kv in p["unknown"]), key=lambda kv: kv[0])]
        violations = merge_violations(p["out"] for p in parts)
        notes = f"{checked} sessions checked"
        if skipped_deleted:
            notes += f", {skipped_deleted} deleted/killed without a collected body skipped"
        if skipped_by_design:
            notes += (
                f", {skipped_by_design} turn(s) answered 200 but skipped by the server because another request of "
                "the session committed during their proxy phase (state_changed, by the server's log order)"
            )
        return verdict(self.name, violations, unknown=unknown[:5], notes=notes)
