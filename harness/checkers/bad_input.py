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
- a 413 (content too large) to a body under 1 KiB is ``too_large_claimed``; so is one to a body within
  ``max_body_bytes`` of the reference server the harness starts itself (docs/reference_server.md: larger is
  413; ``ops.server_max_body``; another server's limit is not known);
- a body sent slowly (``upload_chunks``, the fuzz's huge chat bodies on a slow link) and refused 413 by our
  reference server (``ops.reference_target``, the coverage bug wrappers included; docs/reference_server.md:
  "a content-length above the limit is refused before reading, a chunked body as soon as the limit is passed
  (nothing past it is read or buffered)"): a declared length past ``max_body_bytes`` refused after the server
  read a piece of the body is ``read_before_refusal``; a chunked one refused after it read more pieces than
  it takes to pass the limit is ``read_past_limit``. Judged only where the pieces counted are the ones the
  server read (``upload_reader = "server"``: in process, the app's ASGI ``receive`` takes them); over a socket
  the count is what the client wrote, and another server's limit and reading are its own (a note says so);
- the canary session, which no fuzz request addresses, reads back the same
  before and after (``canary_changed``), compared on what the protocol
  promises: its records and the token id lists in its metadata (a server may
  keep other bookkeeping there);
- the victim session, which the chat cases address, reads back the same when
  every one of them was refused (``rejected_changed_state``).

Unknown: a canary snapshot is missing (its GET failed), or a kill overlapped
the fuzz. A run without fuzz operations has nothing to judge: valid, noted.

Per session (harness/checkers/stream.py): each part judges its own sessions' fuzz
operations and keeps, per snapshot reason, its last GET (a few fields, its place
in the run's order); the reduce takes the run's last per reason and compares
them. ``check`` is that reduce over the one part that is the whole run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import REFERENCE_MAX_BODY, Op, pair_ops, reference_target, server_max_body, server_options
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
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
        return check_whole(self, run)

    def part(self, part: Part) -> dict[str, Any]:
        ops = pair_ops(part.run.history)
        fuzz = [o for o in ops if o.invoke.get("fuzz") is not None and part.mine(o.session)]
        out: list[Keyed] = []
        known = server_max_body(part.run)
        limit = known if known is not None else -1  # -1: no body is within an unknown limit
        read_limit = _reading_limit(part.run)
        slow_unjudged = 0
        timeouts = 0
        statuses: Counter[str] = Counter()
        for o in fuzz:
            name = str(o.invoke.get("fuzz"))
            st = o.status
            key = (o.invoke_index,)
            if o.type == "info" or st is None:
                if o.completion is not None and o.completion.get("dropped"):
                    out.append(
                        (key, Violation(f"{name}: connection dropped, no answer", o.indices, o.session, "no_answer"))
                    )
                else:
                    timeouts += 1
                continue
            statuses[f"{st // 100}xx"] += 1
            if st == 413 and isinstance(o.invoke.get("upload_chunks"), int):
                found = _read_too_much(o, read_limit)
                if found is None:
                    slow_unjudged += 1
                elif found:
                    out.append((key, Violation(f"{name}: {found[1]}", o.indices, o.session, found[0])))
            if st >= 500:
                # a request the backend was told to fail (expect "backend_fault") may get a gateway error:
                # no_unexpected_5xx attributes its status to the fault the backend applied
                if o.invoke.get("expect") != "backend_fault":
                    out.append((key, Violation(f"{name}: answered {st}", o.indices, o.session, "status_5xx")))
            elif 200 <= st < 300:
                if o.invoke.get("fuzz_category") == "odd_session_id":
                    msg = f"{name}: a session never created was served ({st})"
                    out.append((key, Violation(msg, o.indices, None, "unknown_session_served")))
                elif o.invoke.get("expect") == "4xx":
                    msg = f"{name}: a request no server can accept answered {st}"
                    out.append((key, Violation(msg, o.indices, o.session, "accepted_malformed")))
            elif st == 413 and isinstance(o.invoke.get("body_bytes"), int) and o.invoke["body_bytes"] < SMALL_BODY:
                # 413 says the body is too large: for a few hundred bytes no server's limit makes that true
                msg = f"{name}: 413 (too large) for a {o.invoke['body_bytes']}-byte body"
                out.append((key, Violation(msg, o.indices, o.session, "too_large_claimed")))
            elif st == 413 and isinstance(o.invoke.get("body_bytes"), int) and o.invoke["body_bytes"] <= limit:
                # our reference server's documented limit (docs/reference_server.md): a body up to it is read
                msg = (
                    f"{name}: 413 (too large) for a {o.invoke['body_bytes']}-byte body, within the reference "
                    f"server's max_body_bytes {limit}"
                )
                out.append((key, Violation(msg, o.indices, o.session, "too_large_claimed")))
            elif not 400 <= st < 500 and o.invoke.get("expect") == "4xx":
                # a refusal is a 4xx (the HTTP client error class): a 1xx/3xx tells the client nothing usable
                msg = f"{name}: a malformed request answered {st}, not a 4xx refusal"
                out.append((key, Violation(msg, o.indices, o.session, "not_a_refusal")))
        mine = [o for o in ops if part.mine(o.session)]
        return {
            "fuzz": len(fuzz),
            "out": out,
            "timeouts": timeouts,
            "slow_unjudged": slow_unjudged,
            "statuses": statuses,
            "acked": list({o.session for o in fuzz if o.acknowledged}),  # the sessions of accepted cases (few)
            "snaps": {r: _snap(o) for r, o in self._snapshots(mine).items()},
            "unreadable": {r: _snap(o) for r, o in self._snapshots(mine, broken=True).items()},
            # chaos operations are in every part: the run's kills
            "killed": any(
                o.f == "chaos" and isinstance(o.value, dict) and o.value.get("action") == "kill" for o in ops
            ),
        }

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        n_fuzz = sum(p["fuzz"] for p in parts)
        if not n_fuzz:
            return verdict(self.name, [], notes="no fuzz requests in this run ([workload] fuzz = N sends them)")
        violations = merge_violations(p["out"] for p in parts)
        unknown: list[str] = []
        timeouts = sum(p["timeouts"] for p in parts)
        statuses: Counter[str] = sum((p["statuses"] for p in parts), Counter())
        acked = {s for p in parts for s in p["acked"]}

        def last(which: str, reason: str) -> dict[str, Any] | None:
            got = [p[which][reason] for p in parts if reason in p[which]]
            return max(got, key=lambda x: x["at"]) if got else None  # the run's last in operation order

        for role in ("canary", "victim"):
            before, after = last("snaps", f"fuzz_{role}_before"), last("snaps", f"fuzz_{role}_after")
            broken = last("unreadable", f"fuzz_{role}_after")
            if before is not None and broken is not None:
                violations.append(
                    Violation(
                        f"{role} session cannot be read back after the fuzz: {broken['status'] or 'no answer'}",
                        broken["indices"],
                        broken["session"],
                        "state_unreadable",
                    )
                )
                continue
            if before is None or after is None:
                unknown.append(f"no {role} snapshot before and after the fuzz (a GET failed)")
                continue
            if role == "victim" and before["session"] in acked:
                continue  # a case was accepted: a real turn, judged by the other checkers
            if before["view"] != after["view"]:
                kind = "canary_changed" if role == "canary" else "rejected_changed_state"
                what = "no request addressed it" if role == "canary" else "every request to it was refused"
                violations.append(
                    Violation(
                        f"{role} session's records or token ids changed though {what}",
                        [*before["indices"], *after["indices"]],
                        before["session"],
                        kind,
                    )
                )
        if parts[0]["killed"] and violations:
            unknown.append("a process was killed during the run: fuzz answers not judged")
            violations = []
        said = [f"{n_fuzz} fuzz requests", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))]
        if timeouts:
            said.append(f"{timeouts} timed out (not judged)")
        slow = sum(p.get("slow_unjudged", 0) for p in parts)
        if slow:
            said.append(
                f"{slow} slowly sent bodies refused 413 not judged on how much was read before the refusal "
                "(only our reference server documents it, and only in process is the count the server's reads)"
            )
        return verdict(self.name, violations, unknown=unknown, notes="; ".join(p for p in said if p))

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


def _reading_limit(run: RunData) -> int | None:
    """``max_body_bytes`` of our reference server (its coverage bug wrappers too), whose reading of a body it
    refuses is documented (docs/reference_server.md); None for any other server."""
    if not reference_target(run, kind_default="reference"):
        return None
    given, _why = server_options(run)
    n = given.get("max_body_bytes", REFERENCE_MAX_BODY) if given is not None else None
    return n if isinstance(n, int) and n >= 1 else None


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_too_much(o: Op, limit: int | None) -> tuple[str, str] | tuple[()] | None:
    """A 413 to a slowly sent body: (kind, message) when the server read more of it than documented, () when it
    did not, None when that cannot be judged (not our server, or the pieces counted are the client's writes)."""
    comp = o.completion or {}
    sent, piece, size = comp.get("upload_sent"), o.invoke.get("upload_piece"), o.invoke.get("body_bytes")
    if limit is None or comp.get("upload_reader") != "server":
        return None
    if not (_count(sent) and _count(piece) and _count(size)):
        return None
    assert isinstance(sent, int) and isinstance(piece, int) and isinstance(size, int)
    if piece < 1:
        return None
    pieces = o.invoke["upload_chunks"]
    if o.invoke.get("upload_declared", True):
        if size > limit and sent > 0:
            return (
                "read_before_refusal",
                f"413 for a declared Content-Length of {size} past max_body_bytes {limit} came after the server "
                f"read {sent} of its {pieces} pieces: the reference server refuses such a length before reading",
            )
        return ()
    needed = min(pieces, limit // piece + 1)  # pieces it takes to pass the limit
    if sent > needed:
        return (
            "read_past_limit",
            f"413 for a chunked body came after the server read {sent} of its {pieces} pieces of {piece} bytes, "
            f"though {needed} pass max_body_bytes {limit}: the reference server stops reading at the limit",
        )
    return ()


def _snap(o: Op) -> dict[str, Any]:
    """What the reduce reads of one snapshot GET: its place, session, indices, status and promised view."""
    return {
        "at": o.invoke_index,
        "session": o.session,
        "indices": o.indices,
        "status": o.status,
        "view": promised_view(o.body) if o.type == "ok" else None,
    }
