"""Writing an incident as a scenario file that ``load_scenario`` accepts and simulation replays.

The file is meant to be read by the engineer who handles the incident, not
only by the loader: a header comment says where it came from (files,
filters, skipped lines) and what happened, and each scripted request carries
a comment with the original ``req_id``, its outcome, its latencies and the
requests of the same session it overlapped. The data the replay needs is
the ``[[workload.script]]`` (see harness.agents._script) and the expected
outcome sequence under ``[checks.options.incident]``, which ``harness
incident replay`` compares with a simulated run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from harness.incident._reconstruct import Incident, abort_after_ms, backend_fault

__all__ = ["describe", "scenario_text"]

_MARGIN_S = 5.0


def _q(s: str) -> str:
    return json.dumps(s)  # a TOML basic string is JSON-compatible for what we write


def _f(x: float) -> str:
    return f"{round(x, 6):.6f}".rstrip("0").rstrip(".") if x else "0.0"


def describe(inc: Incident) -> str:
    """One paragraph: sessions, processes, outcome classes and the notable sequences."""
    reqs = inc.requests()
    counts = Counter(r.outcome for r in reqs)
    parts = [
        f"{len(inc.sessions)} session(s) on {len(inc.processes)} process(es), {len(reqs)} chat request(s)"
        + (": " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) if counts else "")
        + "."
    ]
    for s in inc.sessions:
        seq = " -> ".join(f"t{r.turn}a{r.attempt} {r.outcome}" for r in s.requests)
        extra = []
        races = [r for r in s.requests if r.outcome in ("state_changed_skip", "conflict")]
        for r in races:
            extra.append(f"req {r.req_id} lost a state_changed_during_proxy race to {', '.join(r.overlaps) or '?'}")
        for r in s.requests:
            if r.outcome == "closing_skip":
                extra.append(f"req {r.req_id} was in its proxy phase when the session was deleted (closing_skip)")
        if s.deleted_ts:
            extra.append(f"deleted {len(s.deleted_ts)}x")
        tail = f" ({'; '.join(extra)})" if extra else ""
        parts.append(f"Session {s.session[:12]}: {seq or 'no chats'}{tail}.")
    return " ".join(parts)


def scenario_text(
    inc: Incident,
    *,
    name: str,
    sources: Sequence[str],
    note: str = "",
    filters: str = "",
    parse_summary: str = "",
    variants: Sequence[str] = (),
    seed: int = 0,
) -> str:
    """The scenario TOML for ``inc``."""
    auto = describe(inc)
    description = (note.strip() + "\n\n" if note.strip() else "") + "Reconstructed: " + auto
    lines = [
        f"# Incident {name}: imported by `harness incident import` from {', '.join(sources)}",
    ]
    if filters:
        lines.append(f"# filters: {filters}")
    if parse_summary:
        lines.append(f"# log: {parse_summary}")
    for pkey, hb in sorted(inc.heartbeat_stats.items()):
        maxima = ", ".join(f"{k} max {hb[k]:g}" for k in ("rss_mb", "inflight", "sessions") if k in hb)
        lines.append(f"# heartbeats {pkey}: {hb['count']:g}" + (f" ({maxima})" if maxima else ""))
    if inc.processes != ["?"]:
        lines.append("# processes (server index = position): " + ", ".join(inc.processes))
    lines += [
        "#",
        "# What happened (write-up):",
        *(f"#   {w}" for w in _wrap(note.strip() or auto, 96)),
        "#",
        "# Replay it: harness incident replay THIS_FILE  (or harness run THIS_FILE --mode sim --seed 0)",
        "# Message contents are not in the logs: the replay sends its own, so prompt_tokens differ.",
        "",
        f"name = {_q(name)}",
        f'description = """\n{description}\n"""',
        f"seed = {seed}",
        "",
        "[target]",
        f"processes = {len(inc.processes)}",
    ]
    if variants:
        lines.append("variants = [" + ", ".join(_q(v) for v in variants) + "]")
    last = max([r.start_ts + r.total_ms / 1000.0 for r in inc.requests()] + [inc.t0], default=inc.t0) - inc.t0
    for s in inc.sessions:
        last = max([last, *(d - inc.t0 for d in s.deleted_ts)])
    longest = max([r.total_ms for r in inc.requests()] + [0.0]) / 1000.0
    lines += [
        "",
        "[agent]",
        f"timeout_s = {_f(max(10.0, 2 * longest + 1.0))}",
        "",
        "[workload]",
        f"duration_s = {_f(last + _MARGIN_S)}",
        "",
        "[checks]",
        f"liveness_bound_s = {_f(max(30.0, 2 * longest + 5.0))}",
        "",
        "[checks.options.incident]",
        "# the original chat_done outcomes and session_deleted lines, in order: what a faithful replay shows again",
        "outcomes = [" + ", ".join(_q(f"{sid}:{o}") for sid, o, _ in inc.outcome_sequence()) + "]",
        "requests = [" + ", ".join(_q(c or "") for _, _, c in inc.outcome_sequence()) + "]",
    ]
    steps: list[tuple[float, int, list[str]]] = []
    for order, s in enumerate(inc.sessions):
        proc = inc.process_index(s.process)
        if s.needs_create:
            first = min([r.start_ts for r in s.requests] + s.deleted_ts + [s.created_ts or float("inf")])
            at = (s.created_ts if s.created_ts is not None else first - 0.001) - inc.t0
            body = [f"session = {_q(s.session)}", 'kind = "create"', f"at_s = {_f(max(0.0, at))}"]
            if proc:
                body.append(f"process = {proc}")
            steps.append((max(0.0, at), order, body))
        for r in s.requests:
            fault = backend_fault(r)
            body = [
                f"# req {r.req_id}: {r.outcome} {r.status if r.status is not None else ''}".rstrip()
                + f", proxy {r.proxy_ms:g} ms, total {r.total_ms:g} ms"
                + (f", overlapped {', '.join(r.overlaps)}" if r.overlaps else ""),
                f"session = {_q(s.session)}",
                f"at_s = {_f(r.start_ts - inc.t0)}",
                *([f"done_s = {_f(r.done_ts - inc.t0)}"] if r.done_ts is not None else []),
                f"turn = {r.turn}",
                f"attempt = {r.attempt}",
            ]
            if proc:
                body.append(f"process = {proc}")
            if fault:
                body.append(f"fault = {_q(fault)}")
            abort_at = abort_after_ms(r)
            if abort_at is not None:
                body.append(f"abort_after_ms = {_f(abort_at)}")
            if r.caller_request_id:
                body.append(f"request_id = {_q(r.caller_request_id)}")
            body.append(f"expect = {_q(r.outcome)}")
            steps.append((r.start_ts - inc.t0, order, body))
        for d in s.deleted_ts:
            at_text = _f(d - inc.t0)
            body = [
                f"session = {_q(s.session)}",
                'kind = "delete"',
                f"at_s = {at_text}",
                f"done_s = {at_text}",
                'expect = "204"',
            ]
            if proc:
                body.append(f"process = {proc}")
            steps.append((d - inc.t0, order, body))
    steps.sort(key=lambda x: x[0])
    for _, _, body in steps:
        lines += ["", "[[workload.script]]", *body]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for para in text.splitlines() or [""]:
        cur = ""
        for word in para.split():
            if cur and len(cur) + 1 + len(word) > width:
                out.append(cur)
                cur = word
            else:
                cur = f"{cur} {word}" if cur else word
        out.append(cur)
    return out
