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

from collections.abc import Sequence
from typing import Any

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
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, joins_whole, merge_violations
from harness.rundata import RunData


class StaleWriters:
    name = "stale_writers"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    whole_when = staticmethod(joins_whole)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        snaps, _ = snapshots(run, ops, part.context.token_key)
        by_req, by_caller = chat_done_by_req(run), chat_done_by_caller(run)  # conflict_409 outcomes
        conflict = "conflict_409" in variants(run)
        out: list[Keyed] = []
        n_groups = 0
        unjudged = 0
        unlogged = 0
        for sid, chats in sorted(by_session(ops, "chat").items()):
            if not part.mine(sid):
                continue
            snap = snaps.get(sid)
            records = snap.records if snap else []
            committed_rids = [record_rid(r) for r in records if record_kind(r) == "committed"]

            def add(v: Violation) -> None:
                out.append(((v.session, len(out)), v))  # the whole run's order: by session, then as found

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
                    add(
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
                        add(
                            Violation(
                                "conflict_409: a duplicate skipped because state changed but got a silent 200",
                                o.indices,
                                sid,
                                "silent_state_changed",
                            )
                        )
            for o in chats:
                if o.status == 409 and o.request_id in committed_rids:
                    add(Violation("request answered 409 was committed anyway", o.indices, sid, "conflict_committed"))
        return {"out": out, "groups": n_groups, "unjudged": unjudged, "unlogged": unlogged}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        n_groups = sum(p["groups"] for p in parts)
        unjudged = sum(p["unjudged"] for p in parts)
        unlogged = sum(p["unlogged"] for p in parts)
        notes = f"{n_groups} duplicate groups checked"
        if unjudged:
            notes += f", {unjudged} on sessions without state (deleted, nothing collected) not judged"
        if unlogged:
            notes += f", {unlogged} conflict_409 answers without a chat_done line not judged"
        return verdict(self.name, merge_violations(p["out"] for p in parts), notes=notes)
