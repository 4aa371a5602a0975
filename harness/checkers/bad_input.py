"""bad_input: careless and hostile client requests get a 4xx, never a 5xx, and change nothing else.

The fuzz workload (harness/fuzz.py, ``[workload] fuzz = N``) sends bodies
derived from the OpenAI chat request schema (wrong types, unusable
``messages``, odd roles and content parts, non-JSON, wrong methods, odd
session ids) and tags each operation with ``fuzz`` (the case) and ``expect``.
CONTEXT.md promises that none of it produces a 500 or loses stored data, and
that an unknown session is a 404. So, per fuzz operation:

- a 5xx is a violation (``status_5xx``): the server cannot tell bad input from
  its own failure, and a handler that crashed halfway may have changed state;
- no answer at all (the connection dropped) is a violation (``no_answer``): the
  request took the handler or the process down; a timeout is only counted;
- a 2xx to a request no correct server can accept (``expect = "4xx"``: not
  JSON, not an object, no usable ``messages``, a wrong method) is a violation
  (``accepted_malformed``), and to a request for a session that was never
  created, ``unknown_session_served`` (an auto-creating server); and any other
  answer outside 4xx to such a request (a 1xx/3xx status) is ``not_a_refusal``;
- a 413 (content too large) to a body under 1 KiB is ``too_large_claimed``;
- the canary session, which no fuzz request addresses, reads back the same
  before and after (``canary_changed``), compared on what the protocol
  promises: its records and the token id lists in its metadata (a server may
  keep other bookkeeping there);
- the victim session, which the chat cases address, reads back the same when
  every one of them was refused (``rejected_changed_state``).

Unknown: a canary snapshot is missing (its GET failed), or a kill overlapped
the fuzz. A run without fuzz operations has nothing to judge: valid, noted.
"""

from __future__ import annotations

import json
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import Op, pair_ops
from harness.rundata import RunData


def promised_view(body: Any) -> str | None:
    """A GET body reduced to what the protocol promises, as canonical JSON (None: not a session body)."""
    if not isinstance(body, dict):
        return None
    raw = body.get("metadata")
    meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
    ids = {
        k: v
        for k, v in sorted(meta.items())
        if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    }
    return json.dumps({"records": body.get("records"), "token_ids": ids}, sort_keys=True, separators=(",", ":"))


SMALL_BODY = 1024  # bytes: a body this small is never "too large" (413)


class BadInput:
    name = "bad_input"

    def check(self, run: RunData) -> Verdict:
        ops = pair_ops(run.history)
        fuzz = [o for o in ops if o.invoke.get("fuzz") is not None]
        if not fuzz:
            return verdict(self.name, [], notes="no fuzz requests in this run ([workload] fuzz = N sends them)")
        kills = [o for o in ops if o.f == "chaos" and isinstance(o.value, dict) and o.value.get("action") == "kill"]
        violations: list[Violation] = []
        unknown: list[str] = []
        timeouts = 0
        statuses: dict[str, int] = {}
        for o in fuzz:
            name = str(o.invoke.get("fuzz"))
            st = o.status
            if o.type == "info" or st is None:
                if o.completion is not None and o.completion.get("dropped"):
                    violations.append(
                        Violation(f"{name}: connection dropped, no answer", o.indices, o.session, "no_answer")
                    )
                else:
                    timeouts += 1
                continue
            bucket = f"{st // 100}xx"
            statuses[bucket] = statuses.get(bucket, 0) + 1
            if st >= 500:
                violations.append(Violation(f"{name}: answered {st}", o.indices, o.session, "status_5xx"))
            elif 200 <= st < 300:
                if o.invoke.get("fuzz_category") == "odd_session_id":
                    violations.append(
                        Violation(
                            f"{name}: a session never created was served ({st})",
                            o.indices,
                            None,
                            "unknown_session_served",
                        )
                    )
                elif o.invoke.get("expect") == "4xx":
                    violations.append(
                        Violation(
                            f"{name}: a request no server can accept answered {st}",
                            o.indices,
                            o.session,
                            "accepted_malformed",
                        )
                    )
            elif st == 413 and isinstance(o.invoke.get("body_bytes"), int) and o.invoke["body_bytes"] < SMALL_BODY:
                # 413 says the body is too large: for a few hundred bytes no server's limit makes that true
                violations.append(
                    Violation(
                        f"{name}: 413 (too large) for a {o.invoke['body_bytes']}-byte body",
                        o.indices,
                        o.session,
                        "too_large_claimed",
                    )
                )
            elif not 400 <= st < 500 and o.invoke.get("expect") == "4xx":
                # a refusal is a 4xx (the HTTP client error class): a 1xx/3xx tells the client nothing usable
                violations.append(
                    Violation(
                        f"{name}: a malformed request answered {st}, not a 4xx refusal",
                        o.indices,
                        o.session,
                        "not_a_refusal",
                    )
                )
        snaps = self._snapshots(ops)
        unreadable = self._snapshots(ops, broken=True)
        for role in ("canary", "victim"):
            before, after = snaps.get(f"fuzz_{role}_before"), snaps.get(f"fuzz_{role}_after")
            broken = unreadable.get(f"fuzz_{role}_after")
            if before is not None and broken is not None:
                violations.append(
                    Violation(
                        f"{role} session cannot be read back after the fuzz: {broken.status or 'no answer'}",
                        broken.indices,
                        broken.session,
                        "state_unreadable",
                    )
                )
                continue
            if before is None or after is None:
                unknown.append(f"no {role} snapshot before and after the fuzz (a GET failed)")
                continue
            if role == "victim" and any(o.session == before.session and o.acknowledged for o in fuzz):
                continue  # a case was accepted: a real turn, judged by the other checkers
            if promised_view(before.body) != promised_view(after.body):
                kind = "canary_changed" if role == "canary" else "rejected_changed_state"
                what = "no request addressed it" if role == "canary" else "every request to it was refused"
                violations.append(
                    Violation(
                        f"{role} session's records or token ids changed though {what}",
                        [*before.indices, *after.indices],
                        before.session,
                        kind,
                    )
                )
        if kills and violations:
            unknown.append("a process was killed during the run: fuzz answers not judged")
            violations = []
        parts = [f"{len(fuzz)} fuzz requests", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))]
        if timeouts:
            parts.append(f"{timeouts} timed out (not judged)")
        return verdict(self.name, violations, unknown=unknown, notes="; ".join(p for p in parts if p))

    @staticmethod
    def _snapshots(ops: list[Op], broken: bool = False) -> dict[str, Op]:
        """The fuzzer's GETs by reason: answered 200, or (``broken``) a 5xx or no answer."""
        out: dict[str, Op] = {}
        for o in ops:
            reason = o.invoke.get("reason")
            if o.f != "get" or o.process != "fuzzer" or not isinstance(reason, str):
                continue
            failed = (o.status or 0) >= 500 or bool(o.completion and o.completion.get("dropped"))
            if (o.type == "ok") if not broken else failed:
                out[reason] = o
        return out
