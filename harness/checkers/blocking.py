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


class _NoWait:
    """The server's evidence that a DELETE / GET did not wait behind a chat's proxy phase (lazily built)."""

    def __init__(self, run: RunData, ops: list[Op]) -> None:
        self.run, self.ops = run, ops
        self._clock: ClientClock | None = None
        self._by: tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]] | None = None

    def why(self, x: Op, c: Op) -> str | None:
        if not self.run.server_logs:
            return None
        if self._by is None:
            self._by = (chat_done_by_req(self.run), chat_done_by_caller(self.run))
            self._clock = ClientClock(self.run, self.ops)
        assert self._clock is not None
        lines = done_for(c, *self._by)
        t = _timed(lines[0]) if len(lines) == 1 else None
        if t is None:
            return None
        key = process_key(t.line)
        if x.f == "delete" and x.status == 204:  # the one DELETE that removed the session: its line is this one's
            gone = [ln for ln in log_events(self.run, "session_deleted") if str(ln.get("session_id")) == x.session]
            ts = _num(gone[0].get("ts")) if len(gone) == 1 and process_key(gone[0]) == key else None
            if ts is not None and ts < t.proxy_end:
                ahead = 1000.0 * (t.proxy_end - ts)
                return f"DELETE at t={x.start:.3f}: session_deleted {ahead:.0f} ms before the proxy phase ended"
        off = self._clock.offset(key)
        if off is None:
            return None
        proxy_start = t.proxy_start - off.hi - CLOCK_SLACK_S  # earliest, on the client's clock
        proxy_end = t.proxy_end - off.lo + CLOCK_SLACK_S  # latest
        left_ms = (min(c.end, proxy_end) - max(x.start, proxy_start)) * 1000.0
        if left_ms < MIN_PROXY_MS:
            what = "DELETE" if x.f == "delete" else "GET"
            return f"{what} at t={x.start:.3f}: the proxy phase had at most {max(left_ms, 0.0):.0f} ms left"
        return None


class Blocking:
    name = "blocking"

    def check(self, run: RunData) -> Verdict:
        ops = pair_ops(run.history)
        declared = "lock_restore" in variants(run)
        violations: list[Violation] = []
        evidence: list[str] = []
        by_req = {o.req_id: o.indices for o in ops if o.f == "chat" and o.req_id is not None}
        n_log, judged_log = self._from_logs(run, violations, declared, by_req)
        if n_log:
            evidence.append(f"{n_log} chat_done lock waits ({judged_log} beside a running proxy phase)")
        suspects: list[Violation] = []
        settled: list[str] = []
        n_cli = self._from_client(ops, suspects, declared, _NoWait(run, ops), settled)
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
                f"{suspects[0].message.split(': it waited')[0]}): they waited behind its proxy phase or reached the "
                "server late; the client's timing cannot tell which"
            )
        return verdict(self.name, violations, unknown=unknown, notes="; ".join(evidence))

    @staticmethod
    def _from_logs(run: RunData, out: list[Violation], declared: bool, by_req: dict[str, list[int]]) -> tuple[int, int]:
        per: dict[tuple[str, str], list[_Timed]] = defaultdict(list)
        n = 0
        for line in log_events(run, "chat_done"):
            t = _timed(line)
            if t is None or line.get("session_id") is None:
                continue
            n += 1
            per[(process_key(line), str(line["session_id"]))].append(t)
        judged = 0
        for (_, sid), lines in per.items():
            for b in lines:
                for a in lines:
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
                    out.append(
                        Violation(
                            f"chat {b.line.get('req_id')} waited {covered:.0f} ms for the session lock while chat "
                            f"{a.line.get('req_id')} was in its proxy phase ({remaining:.0f} ms of it left): "
                            "requests must not wait behind Phase 2 unless lock_restore is declared",
                            [*by_req.get(str(b.line.get("req_id")), []), *by_req.get(str(a.line.get("req_id")), [])],
                            sid,
                            "lock_wait_behind_proxy",
                        )
                    )
                    break
        return n, judged

    @staticmethod
    def _from_client(ops: list[Op], out: list[Violation], declared: bool, no_wait: _NoWait, settled: list[str]) -> int:
        chats = by_session(ops, "chat")
        n = 0
        for sid, others in by_session(ops, ("delete", "get")).items():
            for x in others:
                if x.seen_end is None or x.type == "info":
                    continue
                for c in chats.get(sid, []):
                    if c.type not in ("ok", "fail") or not c.start <= x.start < c.end:
                        continue
                    n += 1
                    remaining = (c.end - x.start) * 1000.0
                    if declared or remaining < MIN_PROXY_MS or x.seen_end < c.end:
                        continue
                    why = no_wait.why(x, c)
                    if why is not None:
                        settled.append(why)
                        continue
                    what = "DELETE" if x.f == "delete" else "GET"
                    out.append(
                        Violation(
                            f"{what} of the session, sent while chat turn {c.turn} attempt {c.attempt} had "
                            f"{remaining:.0f} ms to go, completed only after that chat did "
                            f"({(x.seen_end - x.start) * 1000.0:.0f} ms): it waited behind the proxy phase",
                            [*x.indices, *c.indices],
                            sid,
                            "delete_behind_proxy" if x.f == "delete" else "get_behind_proxy",
                        )
                    )
                    break
        return n
