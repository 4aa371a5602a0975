"""http_framing: the session server's replies are well-formed HTTP.

A proxy that copies the backend's hop-by-hop or framing headers onto its own
reply (``echo_upstream_framing``) sends two ``server`` and two ``date``
headers, and a ``content-length`` that describes the backend's body, not its
own. Lenient clients (httpx) shrug; strict ones (aiohttp's parser) reject the
response or truncate the body, and the agent sees a transport error for a turn
the server committed.

What the runner records on each completion (docs/checkers.md):

- ``framing``: ``{"header_counts": {name: n}, "content_length": int|null,
  "body_bytes": int|null}`` as seen on the wire (any HTTP client can count
  ``response.headers.get_list(name)`` / ``getall``);
- or ``raw_headers``: ``[[name, value], ...]`` in wire order;
- and ``error`` (the client's exception text) when the client could not parse.

Rules: ``server``, ``date`` and ``content-length`` appear at most once;
``content-length`` equals the body length; a client-side parse error about
headers or payload length is a violation. A header value in ``headers`` that
is two values joined by ", " (httpx joins duplicates) also counts as a
duplicate. With no framing facts and no errors in the history the verdict is
unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import chaos_events, is_kill, pair_ops
from harness.checkers.stream import Keyed, Part, RunContext, merge_violations
from harness.rundata import RunData

SINGLE = ("server", "date", "content-length")
PARSE_ERRORS = (
    "duplicate",
    "content-length",
    "content length",
    "badhttpmessage",
    "clientresponseerror",
    "clientpayloaderror",
    "contentlengtherror",
    "payload is not completed",
    "transferencodingerror",
    "invalid header",
    "invalid http",
    "too much data",
    "data after",
    "localprotocolerror",
)


def _counts(c: dict[str, Any]) -> tuple[dict[str, int], int | None, int | None] | None:
    fr = c.get("framing")
    raw = c.get("raw_headers")
    counts: dict[str, int] = {}
    cl: int | None = None
    body: int | None = None
    have = False
    if isinstance(fr, dict):
        have = True
        hc = fr.get("header_counts")
        if isinstance(hc, dict):
            counts = {str(k).lower(): int(v) for k, v in hc.items()}
        if isinstance(fr.get("content_length"), int):
            cl = int(fr["content_length"])
        if isinstance(fr.get("body_bytes"), int):
            body = int(fr["body_bytes"])
    if isinstance(raw, list):
        have = True
        rc: dict[str, int] = {}
        for pair in raw:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                k = str(pair[0]).lower()
                rc[k] = rc.get(k, 0) + 1
                if k == "content-length" and cl is None:
                    try:
                        cl = int(str(pair[1]).strip())
                    except ValueError:
                        pass
        for k, v in rc.items():
            counts[k] = max(counts.get(k, 0), v)
    return (counts, cl, body) if have else None


class HttpFraming:
    name = "http_framing"

    def check(self, run: RunData) -> Verdict:
        ops = pair_ops(run.history)
        killed = [c for c in chaos_events(ops) if is_kill(c)]
        violations: list[Violation] = []
        facts = 0
        for o in ops:
            c = o.completion
            if c is None or o.f in ("chaos", "fault"):
                continue
            got = _counts(c)
            if got is not None:
                facts += 1
                counts, cl, body = got
                dups = [k for k in SINGLE if counts.get(k, 0) > 1]
                if dups:
                    violations.append(
                        Violation(
                            f"duplicate header(s) {', '.join(f'{k} x{counts[k]}' for k in dups)}",
                            o.indices,
                            o.session,
                            "duplicate_header",
                        )
                    )
                if cl is not None and body is not None and cl != body and counts.get("transfer-encoding", 0) == 0:
                    violations.append(
                        Violation(
                            f"content-length {cl} but the body has {body} bytes",
                            o.indices,
                            o.session,
                            "content_length_mismatch",
                        )
                    )
            fr = c.get("framing")
            sse = fr.get("sse_errors") if isinstance(fr, dict) else None
            if isinstance(sse, list) and sse:
                violations.append(
                    Violation(
                        f"streamed answer breaks the OpenAI SSE rules: {'; '.join(str(x) for x in sse[:3])}",
                        o.indices,
                        o.session,
                        "sse_malformed",
                    )
                )
            hdrs = o.headers
            joined = [
                k
                for k in ("date", "content-length", "server")
                if isinstance(hdrs.get(k), str)
                and (
                    (k == "date" and str(hdrs[k]).count("GMT") > 1)
                    or (k == "content-length" and "," in str(hdrs[k]))
                    or (k == "server" and got is None and ", " in str(hdrs[k]))
                )
            ]
            if joined and got is None:
                facts += 1
                violations.append(
                    Violation(
                        f"header(s) {joined} carry several values joined by ', ': duplicated on the wire",
                        o.indices,
                        o.session,
                        "duplicate_header",
                    )
                )
            raw_err = c.get("error")
            # only the client's own exception text: a 5xx body naming the *backend's* framing is not ours
            err = raw_err if isinstance(raw_err, str) and (o.status is None or 200 <= o.status < 300) else ""
            if err and any(p in err.lower() for p in PARSE_ERRORS):
                t1 = o.seen_end if o.seen_end is not None else o.start
                if any(k.covers(o.start, t1, margin=1.0) for k in killed):
                    continue
                violations.append(
                    Violation(f"client could not parse the reply: {err[:200]}", o.indices, o.session, "parse_error")
                )
        if not facts and not violations:
            return verdict(self.name, [], unknown=["the history records no framing facts (framing / raw_headers)"])
        return verdict(self.name, violations, notes=f"{facts} replies with framing facts")

    # --- the per-session pass (harness/checkers/stream.py): the same verdict as check(), a group at a time

    def part(self, part: Part) -> dict[str, Any]:
        """check() over this group's own operations (and the run-wide chaos, for the kills)."""
        ops = pair_ops(part.run.history)
        keep = {
            id(e)
            for o in ops
            if part.mine(o.session) or o.f in ("chaos", "fault")
            for e in (o.invoke, o.completion)
            if e is not None
        }
        v = self.check(replace(part.run, history=[e for e in part.run.history if id(e) in keep]))
        at = {i: o.invoke_index for o in ops for i in o.indices}  # one op's violations keep their order
        out: list[Keyed] = [((at[x.ops[0]], j), x) for j, x in enumerate(v.violations)]
        facts = int(v.notes.split(" ", 1)[0]) if v.status != "unknown" else 0  # "{facts} replies with ..."
        return {"out": out, "facts": facts}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        violations = merge_violations(p["out"] for p in parts)
        facts = sum(p["facts"] for p in parts)
        if not facts and not violations:
            return verdict(self.name, [], unknown=["the history records no framing facts (framing / raw_headers)"])
        return verdict(self.name, violations, notes=f"{facts} replies with framing facts")
