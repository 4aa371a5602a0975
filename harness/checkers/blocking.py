"""blocking: no request waits for the session lock behind another request's proxy phase.

CONTEXT.md's split lock: Phase 2 (the backend call, seconds long) runs without
the session lock, so "DELETE and other requests must not wait behind it". A
server that holds the lock across the backend call serializes a session's
requests: nothing is lost, no state is wrong, so no other checker sees it; but
a DELETE of a session whose chat is generating then waits for the whole
generation. That design exists (the ``lock_restore`` variant declares it), so
the rule is judged against the scenario's declared design: under
``lock_restore`` waiting is allowed (valid, noted); otherwise:

- **server logs** (``chat_done``): chat B's ``lock_wait_ms`` (its wait window
  taken from its start, ``ts - total_ms``) against every other chat A of the
  same session whose proxy phase (ending at ``ts - tokenize_out_ms``, lasting
  ``proxy_elapsed_ms``) was running when B arrived. B blocked behind A when
  A's proxy still had at least ``MIN_PROXY_MS`` (50 ms) to go, B's wait
  window covers at least ``SHARE`` (80 %) of that remainder and B was still
  waiting when A's proxy phase ended (it got the lock from A, not from a third
  request's slow Phase 1). A split-lock
  server makes B wait only for A's short Phase 1 / Phase 3;
- **client timing** (the history): a DELETE or GET of a session invoked while
  a chat of it was in flight with at least 50 ms still to go, that completed
  only when or after that chat did. The client cannot tell "it waited behind
  Phase 2" from "it reached the server late" (a starved client, a slow link:
  issue #16; the sim's ``client_delay_ms`` makes it happen on purpose), so
  such a case is **unknown** with the reason, never invalid on client timing
  alone. (A chat whose outcome is unknown, ``info``, gives no end time.)
  The server's evidence settles some such cases as no wait (#16): with the
  chat's ``chat_done`` placed on the client's clock (harness/checkers/clock.py)
  its proxy phase had less than 50 ms left when the DELETE / GET was sent
  (the client read the chat's answer late), or the DELETE (answered 204) logged
  ``session_deleted`` before that proxy phase ended (same process, same clock).

Invalid only when the wait clearly exceeds what the design allows; valid when
the evidence shows no such wait; unknown without evidence (no ``chat_done``
timing buckets and no DELETE / GET that overlapped a chat of its session).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.clock import CLOCK_SLACK_S, ClientClock
from harness.checkers.ops import (
    Op,
    by_session,
    chat_done_by_caller,
    chat_done_by_req,
    done_for,
    log_events,
    pair_ops,
    process_key,
    variants,
)
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.checkers.stream_index import indexed_clock_bounds
from harness.rundata import RunData

__all__ = ["MIN_PROXY_MS", "SHARE", "Blocking"]

MIN_PROXY_MS = 50.0
SHARE = 0.8


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class _Timed:
    """One chat_done line as intervals (seconds on the server's clock)."""

    line: dict[str, Any]
    start: float
    end: float
    wait_end: float
    proxy_start: float
    proxy_end: float

    @property
    def proxy_ms(self) -> float:
        return (self.proxy_end - self.proxy_start) * 1000.0


def _timed(line: dict[str, Any]) -> _Timed | None:
    ts, total = _num(line.get("ts")), _num(line.get("total_ms"))
    wait, proxy = _num(line.get("lock_wait_ms")), _num(line.get("proxy_elapsed_ms"))
    if ts is None or total is None or wait is None or proxy is None:
        return None
    out = _num(line.get("tokenize_out_ms")) or 0.0
    start = ts - total / 1000.0
    proxy_end = ts - out / 1000.0
    return _Timed(line, start, ts, start + wait / 1000.0, proxy_end - proxy / 1000.0, proxy_end)


def _settled_by_deletion(x: Op, t: _Timed, gone: list[dict[str, Any]]) -> str | None:
    """The one DELETE that removed the session (204) logged ``session_deleted`` before ``t``'s proxy phase ended."""
    if x.f == "delete" and x.status == 204:  # the one DELETE that removed the session: its line is this one's
        ts = _num(gone[0].get("ts")) if len(gone) == 1 and process_key(gone[0]) == process_key(t.line) else None
        if ts is not None and ts < t.proxy_end:
            ahead = 1000.0 * (t.proxy_end - ts)
            return f"DELETE at t={x.start:.3f}: session_deleted {ahead:.0f} ms before the proxy phase ended"
    return None


def _settled_by_clock(clock: ClientClock, pending: tuple[Any, ...]) -> str | None:
    """The proxy phase, placed on the client's clock, had under ``MIN_PROXY_MS`` left when the DELETE / GET left."""
    key, proxy_start_s, proxy_end_s, x_f, x_start, c_end = pending
    off = clock.offset(key)
    if off is None:
        return None
    proxy_start = proxy_start_s - off.hi - CLOCK_SLACK_S  # earliest, on the client's clock
    proxy_end = proxy_end_s - off.lo + CLOCK_SLACK_S  # latest
    left_ms = (min(c_end, proxy_end) - max(x_start, proxy_start)) * 1000.0
    if left_ms < MIN_PROXY_MS:
        what = "DELETE" if x_f == "delete" else "GET"
        return f"{what} at t={x_start:.3f}: the proxy phase had at most {max(left_ms, 0.0):.0f} ms left"
    return None


class Blocking:
    name = "blocking"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # The rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all.
    # A session's lock waits and its DELETE / GET overlaps are its own; only the server's evidence that such an
    # overlap did not wait needs the client clock, which every process's chats bound (harness/checkers/clock.py):
    # a part gives its chats' bounds and the overlaps it could not settle alone, the reduce settles them.

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        declared = "lock_restore" in variants(run)
        out: list[Keyed] = []
        n_log, judged_log = self._from_logs(part, out, declared)
        cli = self._from_client(part, ops, declared)
        # joined over the whole log (the part's own lines would give a chat whose server request id another
        # session's chat_start carries too a bound that the whole run skips)
        mine = lambda o: part.mine(o.session)  # noqa: E731
        cli["bounds"] = indexed_clock_bounds(part.log_index(), ops, mine, part.split) if run.server_logs else {}
        return {"n_log": n_log, "judged_log": judged_log, "out": out, **cli}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        declared = "lock_restore" in variants(RunData(scenario=context.scenario, history=[]))
        evidence: list[str] = []
        n_log, judged_log = sum(p["n_log"] for p in parts), sum(p["judged_log"] for p in parts)
        if n_log:
            evidence.append(f"{n_log} chat_done lock waits ({judged_log} beside a running proxy phase)")
        # every overlap that completed after its chat, in check()'s order: settled, or suspect
        cases: list[tuple[tuple[int, ...], str | None, str]] = [c for p in parts for c in p["cases"]]
        n_cli = sum(p["n_cli"] for p in parts)
        deferred = [d for p in parts for d in p["deferred"]]
        clock = ClientClock.from_bounds(p["bounds"] for p in parts) if deferred else None
        for steps in deferred:  # the rest of check()'s walk of one DELETE / GET, now that the clock is known
            for key, is_case, why, message, pending in steps:
                n_cli += 1
                if not is_case:
                    continue
                if why is None and pending is not None and clock is not None:
                    why = _settled_by_clock(clock, pending)
                cases.append((key, why, message))
                if why is None:
                    break
        cases.sort(key=lambda c: c[0])
        settled = [why for _, why, _ in cases if why is not None]
        suspects = [message for _, why, message in cases if why is None]
        if n_cli:
            evidence.append(f"{n_cli} DELETE/GET overlapping a chat of their session")
        if declared:
            notes = "lock_restore declares that a session's requests serialize behind Phase 2: waits allowed"
            return verdict(self.name, [], notes="; ".join([notes, *evidence]))
        if not evidence:
            return verdict(
                self.name,
                [],
                unknown=["no evidence: no chat_done timing buckets and no DELETE/GET overlapping a chat"],
            )
        if settled:
            evidence.append(
                f"{len(settled)} DELETE/GET that completed after an overlapping chat did not wait behind its proxy "
                f"phase by the server's evidence (e.g. {settled[0]})"
            )
        unknown = []
        if suspects:
            unknown.append(
                f"{len(suspects)} DELETE/GET completed only after an overlapping chat of their session (e.g. "
                f"{suspects[0].split(': it waited')[0]}): they waited behind its proxy phase or reached the "
                "server late; the client's timing cannot tell which"
            )
        violations = merge_violations(p["out"] for p in parts)
        return verdict(self.name, violations, unknown=unknown, notes="; ".join(evidence))

    @staticmethod
    def _from_logs(part: Part, out: list[Keyed], declared: bool) -> tuple[int, int]:
        per: dict[tuple[str, str], list[tuple[int, _Timed]]] = defaultdict(list)
        n = 0
        for i, line in enumerate(part.run.server_logs):
            if line.get("event") != "chat_done":
                continue
            t = _timed(line)
            if t is None or line.get("session_id") is None or not part.mine(line["session_id"]):
                continue
            n += 1
            per[(process_key(line), str(line["session_id"]))].append((part.log_pos[i], t))
        judged = 0

        local: dict[str, list[int]] | None = None

        def indices(req_id: Any) -> list[int]:
            nonlocal local
            if str(req_id):
                return part.chat_ops(str(req_id)) or []  # the run's last chat operation of that x-req-id
            if local is None:  # an empty x-req-id, which the run-wide table does not hold: this part's
                local = {o.req_id: o.indices for o in pair_ops(part.run.history) if o.f == "chat" and o.req_id == ""}
            return local.get("", [])

        for (_, sid), lines in per.items():
            first = lines[0][0]  # check()'s order: the (process, session) groups by their first line
            for at, b in lines:
                for _, a in lines:
                    if a is b:
                        continue
                    remaining = (a.proxy_end - max(a.proxy_start, b.start)) * 1000.0
                    if remaining < MIN_PROXY_MS:
                        continue
                    judged += 1
                    covered = (min(b.wait_end, a.proxy_end) - max(b.start, a.proxy_start)) * 1000.0
                    # serialization's signature: B was still waiting when A's proxy phase ended (it got the
                    # lock from A), not merely queued behind some third request's Phase 1 meanwhile
                    still_waiting = b.wait_end >= a.proxy_end - (1.0 - SHARE) * remaining / 1000.0
                    if covered < SHARE * remaining or not still_waiting or declared:
                        continue
                    v = Violation(
                        f"chat {b.line.get('req_id')} waited {covered:.0f} ms for the session lock while chat "
                        f"{a.line.get('req_id')} was in its proxy phase ({remaining:.0f} ms of it left): "
                        "requests must not wait behind Phase 2 unless lock_restore is declared",
                        [*indices(b.line.get("req_id")), *indices(a.line.get("req_id"))],
                        sid,
                        "lock_wait_behind_proxy",
                    )
                    out.append(((first, at), v))
                    break
        return n, judged

    @staticmethod
    def _from_client(part: Part, ops: list[Op], declared: bool) -> dict[str, Any]:
        """The part's DELETE / GET that overlapped a chat of their session, as check() walks them.

        ``n_cli`` counts the overlaps, ``cases`` the overlaps that completed only after their chat: (its place,
        the server's evidence that it did not wait or None, the suspect's message). A DELETE / GET whose
        evidence needs the client clock is walked in the reduce, from that overlap on (``deferred``): check()
        goes on to its next chat when the evidence settles it, and stops at the first it does not."""
        run = part.run
        chats = by_session(ops, "chat")
        by: tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]] | None = None
        n = 0
        cases: list[tuple[tuple[int, ...], str | None, str]] = []
        deferred: list[list[tuple[tuple[int, ...], bool, str | None, str, tuple[Any, ...] | None]]] = []
        for sid, others in by_session(ops, ("delete", "get")).items():
            if not part.mine(sid):
                continue
            for x in others:
                if x.seen_end is None or x.type == "info":
                    continue
                steps: list[tuple[tuple[int, ...], bool, str | None, str, tuple[Any, ...] | None]] = []
                for c in chats.get(sid, []):
                    if c.type not in ("ok", "fail") or not c.start <= x.start < c.end:
                        continue
                    key: tuple[int, ...] = (others[0].invoke_index, x.invoke_index, c.invoke_index)  # check()'s order
                    remaining = (c.end - x.start) * 1000.0
                    if declared or remaining < MIN_PROXY_MS or x.seen_end < c.end:
                        steps.append((key, False, None, "", None))
                        continue
                    what = "DELETE" if x.f == "delete" else "GET"
                    message = (
                        f"{what} of the session, sent while chat turn {c.turn} attempt {c.attempt} had "
                        f"{remaining:.0f} ms to go, completed only after that chat did "
                        f"({(x.seen_end - x.start) * 1000.0:.0f} ms): it waited behind the proxy phase"
                    )
                    why: str | None = None
                    pending: tuple[Any, ...] | None = None
                    if run.server_logs:  # the server's evidence that it did not wait
                        by = by or (chat_done_by_req(run), chat_done_by_caller(run))
                        lines = done_for(c, *by)
                        t = _timed(lines[0]) if len(lines) == 1 else None
                        if t is not None:
                            gone = [
                                ln
                                for ln in log_events(run, "session_deleted")
                                if str(ln.get("session_id")) == x.session
                            ]
                            why = _settled_by_deletion(x, t, gone)
                            if why is None:  # placed on the client's clock in the reduce
                                pending = (process_key(t.line), t.proxy_start, t.proxy_end, x.f, x.start, c.end)
                    steps.append((key, True, why, message, pending))
                    if why is None and pending is None:
                        break  # a suspect: check() goes on to the next DELETE / GET
                for k, step in enumerate(steps):
                    if step[4] is not None:  # pending
                        deferred.append(steps[k:])
                        break
                    n += 1
                    if step[1]:
                        cases.append((step[0], step[2], step[3]))
        return {"n_cli": n, "cases": cases, "deferred": deferred}
