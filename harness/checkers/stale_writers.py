"""stale_writers: of concurrent duplicates of one turn, exactly one commits.

The split lock releases the session during the proxy (Phase 2), so two copies
of the same turn (a client-side timeout retry while the first is still being
served, or a deliberate duplicate) both build their prompt from the same
checkpoint. Without the ``num_assistant`` guard in Phase 3 both commit: the
second writer stores its answer on top of a state it never read (a stale
write), doubling the turn in the episode. With the guard the loser gets its
answer back without a commit (``state_changed``: 200, logged as
``state_changed_skip``) or, under the ``conflict_409`` variant, a 409.

Duplicates are chats of one session and one turn whose intervals overlap
(an indeterminate one extends to the end of the run). Per group:

- at most one of its requests is a committed record in the session's state.
  Two ``committed`` log lines are *not* evidence: copies that overlap at the
  client may reach the server one after the other (or be serialized by
  ``lock_restore``), and then the later one legitimately rolls the earlier
  back and its record replaces it; only the surviving records tell a stale
  write from a rollback, so a deleted session without a collected body is not
  judged;
- a request answered 409 is never committed;
- under ``conflict_409`` a loser that skipped because state changed gets 409,
  never a silent 200 (its ``chat_done`` outcome ``state_changed_skip``; without
  the log line it is not judged, since a copy whose record a later copy rolled
  back looks the same from outside).
"""

from __future__ import annotations

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.lost_turns import duplicate_groups
from harness.checkers.ops import (
    by_session,
    chat_done_by_caller,
    chat_done_by_req,
    done_for,
    pair_ops,
    record_kind,
    record_rid,
    snapshots,
    variants,
)
from harness.rundata import RunData


class StaleWriters:
    name = "stale_writers"

    def check(self, run: RunData) -> Verdict:
        ops = pair_ops(run.history)
        snaps, _ = snapshots(run, ops)
        by_req, by_caller = chat_done_by_req(run), chat_done_by_caller(run)  # conflict_409 outcomes
        vs = variants(run)
        conflict = "conflict_409" in vs
        violations: list[Violation] = []
        n_groups = 0
        unjudged = 0
        unlogged = 0
        for sid, chats in sorted(by_session(ops, "chat").items()):
            snap = snaps.get(sid)
            records = snap.records if snap else []
            committed_rids = [record_rid(r) for r in records if record_kind(r) == "committed"]
            for group in duplicate_groups(chats):
                if len(group) < 2:
                    continue
                n_groups += 1
                if snap is None:
                    unjudged += 1
                rids = {o.request_id for o in group if o.request_id}
                idx = [i for o in group for i in o.indices]
                # the state: more than one committed record from this group
                in_state = [r for r in records if record_kind(r) == "committed" and record_rid(r) in rids]
                if len(in_state) > 1:
                    violations.append(
                        Violation(
                            f"{len(in_state)} concurrent duplicates of turn {group[0].turn} were all committed",
                            idx + (snap.indices if snap else []),
                            sid,
                            "double_commit",
                        )
                    )
                for o in group:
                    if not conflict or not o.acknowledged:
                        continue
                    done = done_for(o, by_req, by_caller)
                    if not done:
                        unlogged += 1  # without the outcome a silent skip and a rolled-back commit look alike
                    elif any(d.get("outcome") == "state_changed_skip" for d in done):
                        violations.append(
                            Violation(
                                "conflict_409: a duplicate skipped because state changed but got a silent 200",
                                o.indices,
                                sid,
                                "silent_state_changed",
                            )
                        )
            for o in chats:
                if o.status == 409 and o.request_id in committed_rids:
                    violations.append(
                        Violation("request answered 409 was committed anyway", o.indices, sid, "conflict_committed")
                    )
        notes = f"{n_groups} duplicate groups checked"
        if unjudged:
            notes += f", {unjudged} on sessions without state (deleted, nothing collected) not judged"
        if unlogged:
            notes += f", {unlogged} conflict_409 answers without a chat_done line not judged"
        return verdict(self.name, violations, notes=notes)
