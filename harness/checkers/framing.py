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

Rules (RFC 9110 / RFC 9112; the kind in brackets):

- ``server``, ``date`` and ``content-length`` appear at most once: none of
  them is a list field (RFC 9110 5.3, 8.6, 6.6.1, 10.2.4) [duplicate_header];
- ``content-length`` equals the body length (RFC 9112 6.2, 6.3)
  [content_length_mismatch];
- no ``content-length`` together with ``transfer-encoding`` ("A sender MUST
  NOT send a Content-Length header field in any message that contains a
  Transfer-Encoding header field", RFC 9112 6.2) [length_with_chunked];
- no ``transfer-encoding`` and no ``content-length`` but ``0`` on a 1xx or
  204 reply (RFC 9110 8.6, RFC 9112 6.1: it has no body; a client that
  honours the length waits for bytes that never come). ``content-length: 0``
  is a MUST NOT too, but no client can misread it: tolerated
  [framing_on_no_content];
- no hop-by-hop field that describes someone else's connection (RFC 9110
  7.6.1: an intermediary removes them before forwarding): ``te``,
  ``proxy-connection`` and ``proxy-authorization`` never belong on a reply
  (request or pre-standard fields); ``keep-alive`` and ``upgrade`` only with a
  ``connection`` field that could name them (RFC 9110 7.6.1, 7.8);
  ``trailer`` only on a chunked reply, which alone can carry trailers (RFC
  9112 7.1.2); ``proxy-authenticate`` only on a 407 (RFC 9110 11.7.1).
  ``connection`` itself and ``transfer-encoding`` are the replying server's
  own (uvicorn sends ``connection: close``, aiohttp chunks its streams)
  [hop_by_hop];
- a client-side parse error about headers or payload length [parse_error];
- a status code's own requirements (RFC 9110 15), which hold for every server: a
  401 carries ``WWW-Authenticate`` ("The server generating a 401 response MUST
  send a WWW-Authenticate header field containing at least one challenge",
  15.5.2; read from the framing facts' header counts) [unauthorized_without_challenge];
  a 412 answers only a request that carried a precondition (If-Match,
  If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range: 412 means
  "one or more conditions given in the request header fields evaluated to
  false", 15.5.13, 13.1). The harness's agents and fuzzer send none; an
  operation that did says so with ``request_headers`` in its invoke
  [precondition_failed_unasked]. Neither is judged when the scenario's fault
  plan makes the backend answer that status (``http_401``, ``http_412``: a
  non-200 backend answer passes through unchanged, CONTEXT.md) or cannot be
  read.

In simulation the reply the agent parses is the app's ``http.response.start``
header list and the body bytes it sent, plus what the HTTP server layer adds
(``harness/sim/world.py`` ``http_server_layer``: ``server``, ``date``, chunked
framing), so these rules see in sim what they see live. A header value in ``headers`` that
is two values joined by ", " (httpx joins duplicates) also counts as a
duplicate. With no framing facts and no errors in the history the verdict is
unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import Op, chaos_events, fault_kinds, fault_status, faults_applied, is_kill, pair_ops
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData

SINGLE = ("server", "date", "content-length")
NEVER_ON_A_REPLY = ("te", "proxy-connection", "proxy-authorization")
WITH_CONNECTION_ONLY = ("keep-alive", "upgrade")
PRECONDITIONS = frozenset({"if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"})


def backend_statuses(run: RunData) -> set[int] | None:
    """The statuses the fault plan makes the backend answer (passed through unchanged); None: any may be."""
    if not faults_applied(run):
        return set()
    kinds = fault_kinds(run)
    if "unparsed" in kinds:
        return None
    return {code for code in map(fault_status, kinds) if code is not None}


def sent_precondition(invoke: dict[str, Any]) -> bool:
    """Did the request carry a precondition header (RFC 9110 13.1)? From ``request_headers`` when recorded."""
    hdrs = invoke.get("request_headers")
    return isinstance(hdrs, dict) and any(str(k).lower() in PRECONDITIONS for k in hdrs)


def hop_by_hop(counts: dict[str, int], status: int | None) -> list[str]:
    """The connection-specific fields of a reply that the replying server cannot have meant (see the rules)."""
    out = [k for k in NEVER_ON_A_REPLY if counts.get(k)]
    if not counts.get("connection"):
        out += [k for k in WITH_CONNECTION_ONLY if counts.get(k)]
    if counts.get("trailer") and not counts.get("transfer-encoding"):
        out.append("trailer")
    if counts.get("proxy-authenticate") and status != 407:
        out.append("proxy-authenticate")
    return out


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
        return check_whole(self, run)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all

    def part(self, part: Part) -> dict[str, Any]:
        """The rules over this group's own operations (and the run-wide chaos, for the kills)."""
        ops = pair_ops(part.run.history)
        killed = [c for c in chaos_events(ops) if is_kill(c)]
        out: list[Keyed] = []
        facts = 0
        relayed = backend_statuses(part.run)  # a status the backend itself sends passes through: not the server's

        def own(status: int) -> bool:
            return relayed is not None and status not in relayed

        def add(o: Op, msg: str, kind: str) -> None:  # one operation's violations keep their order
            out.append(((o.invoke_index, len(out)), Violation(msg, o.indices, o.session, kind)))

        for o in ops:
            c = o.completion
            if c is None or o.f in ("chaos", "fault") or not part.mine(o.session):
                continue
            got = _counts(c)
            if got is not None:
                facts += 1
                counts, cl, body = got
                dups = [k for k in SINGLE if counts.get(k, 0) > 1]
                if dups:
                    add(o, f"duplicate header(s) {', '.join(f'{k} x{counts[k]}' for k in dups)}", "duplicate_header")
                if counts.get("content-length") and counts.get("transfer-encoding"):
                    add(
                        o,
                        "content-length together with transfer-encoding (RFC 9112 6.2: a sender must not)",
                        "length_with_chunked",
                    )
                # "content-length: 0" breaks no client (there is no body either way): tolerated, not flagged
                framed = [k for k in ("transfer-encoding",) if counts.get(k)]
                if counts.get("content-length") and cl != 0:
                    framed.insert(0, "content-length")
                if framed and o.status is not None and (o.status < 200 or o.status == 204):
                    add(
                        o,
                        f"{' and '.join(framed)} on a {o.status} reply, which has no body (RFC 9110 8.6)",
                        "framing_on_no_content",
                    )
                hop = hop_by_hop(counts, o.status)
                if hop:
                    add(
                        o,
                        f"hop-by-hop field(s) {', '.join(hop)} on the reply: another connection's, forwarded "
                        "(RFC 9110 7.6.1)",
                        "hop_by_hop",
                    )
                bodyless = o.status is not None and (o.status < 200 or o.status in (204, 304))  # RFC 9112 6.3
                # a 1xx/204/304 has no body whatever its length says: that is framing_on_no_content's matter
                chunked = bool(counts.get("transfer-encoding"))
                if cl is not None and body is not None and cl != body and not chunked and not bodyless:
                    add(o, f"content-length {cl} but the body has {body} bytes", "content_length_mismatch")
                if o.status == 401 and not counts.get("www-authenticate") and own(401):
                    add(
                        o,
                        "401 without WWW-Authenticate (RFC 9110 15.5.2: a 401 MUST carry a challenge); "
                        "a request the server refuses for another reason is a 400 / 403 / 422",
                        "unauthorized_without_challenge",
                    )
            if o.status == 412 and not sent_precondition(o.invoke) and own(412):
                add(
                    o,
                    "412 Precondition Failed to a request that carried no precondition header (RFC 9110 15.5.13, "
                    "13.1: 412 answers only If-Match / If-None-Match / If-(Un)Modified-Since / If-Range)",
                    "precondition_failed_unasked",
                )
            fr = c.get("framing")
            sse = fr.get("sse_errors") if isinstance(fr, dict) else None
            if isinstance(sse, list) and sse:
                add(
                    o,
                    f"streamed answer breaks the OpenAI SSE rules: {'; '.join(str(x) for x in sse[:3])}",
                    "sse_malformed",
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
                add(
                    o,
                    f"header(s) {joined} carry several values joined by ', ': duplicated on the wire",
                    "duplicate_header",
                )
            raw_err = c.get("error")
            # only the client's own exception text: a 5xx body naming the *backend's* framing is not ours
            err = raw_err if isinstance(raw_err, str) and (o.status is None or 200 <= o.status < 300) else ""
            if err and any(p in err.lower() for p in PARSE_ERRORS):
                t1 = o.seen_end if o.seen_end is not None else o.start
                if any(k.covers(o.start, t1, margin=1.0) for k in killed):
                    continue
                add(o, f"client could not parse the reply: {err[:200]}", "parse_error")
        return {"out": out, "facts": facts}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        violations = merge_violations(p["out"] for p in parts)
        facts = sum(p["facts"] for p in parts)
        if not facts and not violations:
            return verdict(self.name, [], unknown=["the history records no framing facts (framing / raw_headers)"])
        return verdict(self.name, violations, notes=f"{facts} replies with framing facts")
