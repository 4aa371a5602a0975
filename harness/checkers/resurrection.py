"""no_resurrection: a session that was deleted never comes back.

The race: a chat that reaches a server *after* the DELETE was acknowledged must
get 404. A server that auto-creates unknown sessions on chat (the
``auto_create`` bug class, present in real deployments) answers 200 instead,
silently starting a fresh episode under the old id; its records then mix into
training data as if they belonged to the deleted episode.

Rule: after a DELETE answered 204 (the client saw the 204 at time T), every
operation on that session that arrived after T (chat, get, probe, delete) gets
404, and the session's final state is 404 (``final_states[sid] is None``). A
request arrives when it has been sent whole: its invocation, or for a body sent
slowly (``agent.upload_chunks``) when its last piece went (``upload_done``).
A chat whose body was still on its way when the 204 came cannot have passed
Phase 1 (which parses the body, under the lock, after re-checking
``closing``) before the DELETE set ``closing``: served, it was proxied for a
removed session (a Phase 1 without the closing re-check). A server
log showing ``session_created`` twice for one id is also a resurrection, and
so is a ``chat_done`` that committed (or kept a provisional) after that
process logged ``session_deleted`` for the session: the write went into a
session that no longer exists (``no_closing_recheck``).

Operations concurrent with the DELETE are not judged here (they may
legitimately win the lock first). 5xx answers are left to no_unexpected_5xx.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import deletes_204, pair_ops, process_key
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData

JUDGED = ("chat", "get", "probe", "delete")


class NoResurrection:
    name = "no_resurrection"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        deleted = {sid: d for sid, d in deletes_204(ops).items() if part.mine(sid)}
        out: list[Keyed] = []
        for o in ops:
            sid = o.session
            if sid is None or sid not in deleted or o.f not in JUDGED or o is deleted[sid]:
                continue
            d = deleted[sid]
            t_del = d.seen_end
            if t_del is None or o.arrived <= t_del:
                continue
            st = o.status
            if st is None or st == 404 or st >= 500:
                continue
            if o.start <= t_del:  # invoked before the 204, but its body's last piece went after it
                if not 200 <= st < 300:  # only a served one is judged: a 4xx may refuse the body before the lock
                    continue
                msg = (
                    f"{o.f} on session deleted at t={t_del:.3f} (history {d.completion_index}) answered {st}, "
                    f"not 404, though its body was still being sent until t={o.arrived:.3f}: served for a "
                    "removed session (Phase 1 must re-check closing under the lock)"
                )
            else:
                msg = (
                    f"{o.f} on session deleted at t={t_del:.3f} (history {d.completion_index}) answered {st}, "
                    f"not 404: the session came back"
                )
            out.append(((0, o.invoke_index), Violation(msg, d.indices + o.indices, sid, "resurrected")))
        no_final: list[str] = []
        for sid, d in sorted(deleted.items()):
            if sid not in run.final_states:
                no_final.append(sid)
            elif run.final_states[sid] is not None:
                msg = "final GET of a deleted session returned a body, not 404"
                out.append(((1, sid), Violation(msg, d.indices, sid, "resurrected_final")))
        created = Counter(
            str(ln.get("session_id"))
            for ln in run.server_logs
            if ln.get("event") == "session_created" and part.mine(ln.get("session_id"))
        )
        for sid, n in sorted(created.items()):
            if n > 1 and sid in deleted:
                msg = f"server logged session_created {n} times for one session id"
                out.append(((2, sid), Violation(msg, deleted[sid].indices, sid, "recreated")))
        gone: dict[str, set[str]] = {}
        # per process, in log order: no commit (or provisional) after ``session_deleted``. DELETE sets
        # ``closing`` before it waits for the lock, so a Phase 3 that runs after the removal must skip its
        # write (``closing_skip``). A server without that re-check (``no_closing_recheck``) commits into the
        # dead session and answers 200: the turn is acknowledged and silently lost.
        for pos, ln in zip(part.log_pos, run.server_logs, strict=True):
            ev = ln.get("event")
            sid = str(ln.get("session_id"))
            if not part.mine(ln.get("session_id")):
                continue
            proc = process_key(ln)
            if ev == "session_deleted":
                gone.setdefault(proc, set()).add(sid)
            elif ev == "session_created":
                gone.get(proc, set()).discard(sid)
            elif ev == "chat_done" and ln.get("outcome") in ("committed", "aborted") and sid in gone.get(proc, set()):
                dead = deleted.get(sid)
                # the request behind the line may be any session's: looked up run-wide, as check() does
                at = part.chat_ops(str(ln.get("req_id"))) or part.chat_ops(f"caller:{ln.get('caller_request_id')}")
                msg = (
                    f"req_id {ln.get('req_id')} logged outcome {ln.get('outcome')!r} after the session was "
                    "deleted: a write into a dead session (closing not re-checked)"
                )
                ixs = (dead.indices if dead is not None else []) + (at or [])
                out.append(((3, pos), Violation(msg, ixs, sid, "write_after_delete")))
        return {"deleted": len(deleted), "no_final": no_final, "out": out}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        violations = merge_violations(p["out"] for p in parts)
        n_deleted = sum(p["deleted"] for p in parts)
        unknown: list[str] = []
        if context.final_states_recorded:
            missing = sorted(sid for p in parts for sid in p["no_final"])
            unknown = [f"no final state recorded for deleted session {sid}" for sid in missing]
        if n_deleted and not context.final_states_recorded:
            unknown.append("final_states missing: only the history after each DELETE was checked")
        notes = f"{n_deleted} sessions deleted with 204"
        if unknown and violations:
            return verdict(self.name, violations, notes=notes + "; " + "; ".join(unknown))
        return verdict(self.name, violations, unknown=unknown[:3], notes=notes)
