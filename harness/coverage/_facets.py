"""Facets: did a measured run exercise a rule's code path or outcome? One counting function per facet.

A rule of CONTEXT.md is *exercised* by a run only when the situation the rule
governs actually happened in it: a DELETE while a chat of that session was in
its proxy phase, an abort that produced zero completion tokens, a retry that
superseded a provisional record. A scenario file that merely *asks* for a
fault proves nothing (the fault may never fire, the window may be missed), so
each facet counts occurrences in what the run left behind (history, server
log lines, the fake's execution log, session snapshots), never in the
scenario's settings. A facet is a pure function ``RunData -> int`` (how many
times it happened); 0 means not exercised.

Facets use only the data the checkers use (harness.checkers.ops), so a live
run folder (``harness coverage --from-runs``) is judged the same way as an
in-memory simulated run.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.checkers.ops import (
    INF,
    Op,
    chaos_events,
    deletes_204,
    is_kill,
    log_events,
    max_trim_tokens,
    pair_ops,
    record_checkpoint,
    record_input_ids,
    record_reported_prompt,
    snapshots,
)
from harness.rundata import RunData

__all__ = ["FACETS", "Facet", "View", "count_facets"]

NON_APPEND_ONLY = ("reasoning", "tools", "trail")  # shipped templates whose re-rendering is not a prefix
TRANSPORT_FAULTS = ("reset", "close_mid_body", "sse_cut")
MALFORMED_FAULTS = ("no_meta_info", "null_content", "logprob_mismatch", "invalid_json")
SLOW_FAULTS = ("hang", "slow_drip", "spike", "latency")


class View:
    """What the facets read, computed once per run."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        self.ops = pair_ops(run.history)
        self.chats = [o for o in self.ops if o.f == "chat"]
        self.executions = [
            ex
            for execs in run.backend_executions.values()
            if isinstance(execs, list)
            for ex in execs
            if isinstance(ex, dict)
        ]
        self.done = log_events(run, "chat_done")
        self._snaps: dict[str, Any] | None = None

    @property
    def snaps(self) -> dict[str, Any]:
        if self._snaps is None:
            self._snaps = snapshots(self.run, self.ops)[0]
        return self._snaps

    def outcomes(self, *names: str) -> int:
        return sum(1 for ln in self.done if ln.get("outcome") in names)

    def kind(self, o: Op) -> str | None:
        k = o.invoke.get("request_kind")
        return None if k is None else str(k)

    def tokenizer(self) -> str:
        t = self.run.scenario.get("target")
        name = t.get("tokenizer") if isinstance(t, dict) else None
        return str(name or "chatml")


@dataclass(frozen=True)
class Facet:
    name: str
    what: str  # one line: what counts as an occurrence
    count: Callable[[View], int]


def _acked(v: View, kinds: tuple[str, ...] | None = None, turn_min: int = 0) -> int:
    return sum(
        1
        for o in v.chats
        if o.acknowledged and (kinds is None or v.kind(o) in kinds) and (o.turn is None or o.turn >= turn_min)
    )


def _delete_during_proxy(v: View) -> int:
    """A DELETE of a session invoked while a chat of that session had been sent and not yet answered."""
    by_sid: dict[str, list[Op]] = defaultdict(list)
    for o in v.chats:
        if o.session is not None:
            by_sid[o.session].append(o)
    n = 0
    for d in v.ops:
        if d.f != "delete" or d.session is None:
            continue
        if any(c.start < d.start < c.end for c in by_sid.get(d.session, [])):
            n += 1
    return n


def _concurrent_deletes(v: View) -> int:
    """Pairs of DELETEs of one session whose intervals overlap (both in flight at once)."""
    by_sid: dict[str, list[Op]] = defaultdict(list)
    for o in v.ops:
        if o.f == "delete" and o.session is not None:
            by_sid[o.session].append(o)
    n = 0
    for ds in by_sid.values():
        for i, a in enumerate(ds):
            n += sum(1 for b in ds[i + 1 :] if a.overlaps(b))
    return n


def _after_delete(v: View) -> int:
    """Requests to a session invoked after the client saw its DELETE answered 204."""
    deleted = deletes_204(v.ops)
    n = 0
    for o in v.ops:
        d = deleted.get(o.session or "")
        if d is None or o is d or o.f not in ("chat", "get", "delete", "probe"):
            continue
        if d.seen_end is not None and o.start > d.seen_end:
            n += 1
    return n


def _unknown_session(v: View) -> int:
    """Requests naming a session id that no create of the run returned."""
    created = {o.session for o in v.ops if o.f == "create" and o.session is not None}
    return sum(
        1
        for o in v.ops
        if o.f in ("chat", "get", "delete", "fuzz")
        and o.session is None
        and "/sessions/" in str(o.invoke.get("path", ""))
    ) + sum(1 for o in v.ops if o.f in ("chat", "get", "delete") and o.session is not None and o.session not in created)


def _duplicates(v: View) -> int:
    """Pairs of chats of one session and turn in flight at once (a hedged duplicate, a retry racing its twin)."""
    groups: dict[tuple[str, int], list[Op]] = defaultdict(list)
    for o in v.chats:
        if o.session is not None and o.turn is not None:
            groups[(o.session, o.turn)].append(o)
    n = 0
    for g in groups.values():
        for i, a in enumerate(g):
            n += sum(1 for b in g[i + 1 :] if a.overlaps(b))
    return n


def _aborted(v: View) -> list[Op]:
    return [o for o in v.chats if o.type == "ok" and o.status == 200 and o.aborted]


def _abort_tokens(v: View, zero: bool) -> int:
    return sum(
        1
        for ex in v.executions
        if ex.get("finish_reason") == "abort" and (int(ex.get("completion_tokens") or 0) == 0) == zero
    )


def _abort_remapped(v: View) -> int:
    """Aborted answers that the client saw with a finish reason other than ``abort`` (litellm's remap)."""
    return sum(1 for o in _aborted(v) if o.completion is not None and o.completion.get("finish_reason") != "abort")


def _session_chats(v: View) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = defaultdict(list)
    for o in v.chats:
        if o.session is not None and o.type == "ok" and o.status == 200:
            out[o.session].append(o)
    for lst in out.values():
        lst.sort(key=lambda o: o.seen_end or INF)
    return out


def _provisional_replaced(v: View) -> int:
    """Two aborted answers of one session in a row (no acknowledged turn between): the newer replaces the older."""
    n = 0
    for lst in _session_chats(v).values():
        n += sum(1 for a, b in itertools.pairwise(lst) if a.aborted and b.aborted)
    return n


def _provisional_superseded(v: View) -> int:
    """An aborted answer followed by an acknowledged answer of the same turn of the session."""
    n = 0
    for lst in _session_chats(v).values():
        n += sum(1 for a, b in itertools.pairwise(lst) if a.aborted and b.acknowledged and a.turn == b.turn)
    return n


def _retries_exhausted(v: View) -> int:
    """Sessions whose last answered chat was aborted (the provisional must stay as the final turn)."""
    return sum(1 for lst in _session_chats(v).values() if lst and lst[-1].aborted)


def _wrong_process(v: View) -> int:
    """Requests for a session sent to a process that does not own it."""
    owners = v.run.owners
    return sum(
        1
        for o in v.ops
        if o.f in ("chat", "get", "delete", "probe")
        and o.session in owners
        and o.server is not None
        and o.server.rstrip("/") != str(owners[o.session]).rstrip("/")
    )


def _fault(ex: dict[str, Any]) -> str:
    """The fault class an execution applied (``hang;seconds=1.5`` -> ``hang``), "" for none."""
    return str(ex.get("fault") or "").split(";")[0].strip()


def _faults(v: View, names: tuple[str, ...]) -> int:
    return sum(1 for ex in v.executions if _fault(ex) in names)


def _backend_status(v: View) -> int:
    """Backend executions answered with a 4xx/5xx status by the fault plan (the server must pass it through)."""
    return sum(1 for ex in v.executions if _fault(ex).startswith("http_"))


def _trim_used(v: View) -> int:
    """Committed turns whose prompt extends the previous checkpoint only after dropping trailing tokens: the
    prompt sent, or the one the backend reported (``meta_info.prompt_token_ids``, which the new checkpoint is
    built from) when it differs from the checkpoint in its last few tokens only."""
    trim = max_trim_tokens(v.run)

    def trimmed(prev: list[int], ids: list[int] | None) -> bool:
        return (
            ids is not None
            and ids[: len(prev)] != prev
            and any(ids[: len(prev) - k] == prev[: len(prev) - k] for k in range(1, trim + 1))
        )

    n = 0
    for snap in v.snaps.values():
        prev: list[int] | None = None
        kept: list[int] | None = None  # the previous record's reported prompt + completion
        for rec in snap.records:
            if rec.get("kind") != "committed":
                continue
            ids, cp = record_input_ids(rec), record_checkpoint(rec)
            if kept is not None and ids is not None and ids[: len(kept)] == kept:
                prev = kept  # the server stored the reported prompt: that is the checkpoint this turn extends
            if prev is not None and (trimmed(prev, ids) or trimmed(prev, record_reported_prompt(rec))):
                n += 1
            rep = record_reported_prompt(rec)
            kept = rep + cp[len(ids) :] if rep is not None and ids is not None and cp is not None else None
            prev = cp
    return n


def _streamed(v: View) -> int:
    return sum(1 for o in v.chats if o.invoke.get("stream") and o.type == "ok" and o.status == 200)


def _fuzz(v: View, categories: tuple[str, ...] | None = None) -> int:
    return sum(
        1
        for o in v.ops
        if o.f == "fuzz" or o.invoke.get("fuzz") is not None
        if categories is None or str(o.invoke.get("fuzz_category")) in categories
    )


def _passthrough(v: View) -> int:
    """Requests to ``/sessions/{id}/{path}`` other than the chat endpoint (the plain pass-through)."""
    n = 0
    for o in v.ops:
        path = str(o.invoke.get("path") or "")
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "sessions" and "/".join(parts[2:]) != "v1/chat/completions":
            n += 1
    return n


def _logged_buckets(v: View) -> int:
    keys = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
    return sum(1 for ln in v.done if all(isinstance(ln.get(k), (int, float)) for k in keys))


def _stats_probes(v: View) -> int:
    return sum(1 for o in v.ops if o.f in ("probe", "stats") and o.value == "stats" and o.type == "ok")


def _kills(v: View) -> int:
    return sum(1 for c in chaos_events(v.ops) if is_kill(c) and "restart" not in c.kind)


def _routed(v: View) -> int:
    """Backend executions of chats, each under a routing key (the fake's log is keyed by it)."""
    return len(v.executions)


def _mismatch_reported(v: View) -> int:
    """GET bodies whose ``metadata.token_mismatch`` (our extra) is a report: the diagnostic had a difference to
    describe (the reasoning template's dropped think blocks, a trail template's trailing tokens past the trim)."""
    n = 0
    for o in v.ops:
        body = o.body if o.f == "get" and o.status == 200 else None
        meta = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("token_mismatch"), dict):
            n += "error" not in meta["token_mismatch"]
    return n


def _non_append_turns(v: View) -> int:
    return _acked(v, ("next", "tool_retry"), 1) if v.tokenizer() in NON_APPEND_ONLY else 0


FACETS: dict[str, Facet] = {
    f.name: f
    for f in (
        Facet(
            "create",
            "a session created (POST /sessions answered with an id)",
            lambda v: sum(1 for o in v.ops if o.f == "create" and o.type == "ok" and o.session is not None),
        ),
        Facet("first_turn", "a first turn (request_kind first) acknowledged", lambda v: _acked(v, ("first",))),
        Facet(
            "later_turn", "a later turn extending the stored history acknowledged", lambda v: _acked(v, ("next",), 1)
        ),
        Facet(
            "non_append_template",
            f"a later turn acknowledged on a template that is not append-only ({', '.join(NON_APPEND_ONLY)})",
            _non_append_turns,
        ),
        Facet(
            "tool_retry",
            "a tool step redone with another tool result (one-step rollback) acknowledged",
            lambda v: _acked(v, ("tool_retry",)),
        ),
        Facet(
            "first_turn_retry",
            "turn 0 redone with another user message acknowledged",
            lambda v: _acked(v, ("first_turn_retry",)),
        ),
        Facet(
            "trim_used",
            "a committed prompt that extends the previous checkpoint only after dropping "
            "<= max_trim_tokens trailing tokens",
            _trim_used,
        ),
        Facet(
            "tokenization_error",
            "a chat_done with outcome tokenization_error (prefix invariant broken: 500)",
            lambda v: v.outcomes("tokenization_error"),
        ),
        Facet("stream", "a stream=true chat answered 200", _streamed),
        Facet("routed", "a chat executed by the backend (under the session's routing key)", _routed),
        Facet("committed", "a chat_done with outcome committed", lambda v: v.outcomes("committed")),
        Facet(
            "delete_during_proxy", "a DELETE invoked while a chat of that session was in flight", _delete_during_proxy
        ),
        Facet(
            "closing_skip",
            "a chat_done with outcome closing_skip (Phase 3 found the session closing)",
            lambda v: v.outcomes("closing_skip"),
        ),
        Facet(
            "closing_404",
            "a chat_done with outcome not_found (Phase 1 found the session closing or gone)",
            lambda v: v.outcomes("not_found"),
        ),
        Facet("concurrent_deletes", "two DELETEs of one session in flight at once", _concurrent_deletes),
        Facet("after_delete", "a request to a session invoked after its DELETE was answered 204", _after_delete),
        Facet("unknown_session", "a request naming a session id no create returned", _unknown_session),
        Facet("duplicate_inflight", "two chats of one session and turn in flight at once", _duplicates),
        Facet(
            "state_changed",
            "a chat_done with outcome state_changed_skip or conflict (Phase 3 guard fired)",
            lambda v: v.outcomes("state_changed_skip", "conflict"),
        ),
        Facet("conflict_409", "a chat answered 409", lambda v: sum(1 for o in v.chats if o.status == 409)),
        Facet("abort_partial", "a backend abort with partial completion tokens", lambda v: _abort_tokens(v, False)),
        Facet("abort_zero_tokens", "a backend abort with zero completion tokens", lambda v: _abort_tokens(v, True)),
        Facet("abort_answered", "a 200 carrying x-sglang-aborted: 1", lambda v: len(_aborted(v))),
        Facet(
            "abort_remapped",
            "an aborted answer the client saw with finish_reason != abort (litellm remap)",
            _abort_remapped,
        ),
        Facet("provisional_replaced", "two aborted answers in a row on one session", _provisional_replaced),
        Facet(
            "provisional_superseded",
            "an aborted answer followed by an acknowledged retry of that turn",
            _provisional_superseded,
        ),
        Facet("retries_exhausted", "a session whose last answered chat was aborted", _retries_exhausted),
        Facet("wrong_process", "a request for a session sent to a process that does not own it", _wrong_process),
        Facet("backend_status", "a backend 4xx/5xx answer injected by the fault plan", _backend_status),
        Facet(
            "backend_transport",
            "a backend transport fault (reset, close mid-body, cut stream)",
            lambda v: _faults(v, TRANSPORT_FAULTS),
        ),
        Facet(
            "backend_malformed",
            "a malformed backend answer (no meta_info, null content, logprob count, invalid JSON)",
            lambda v: _faults(v, MALFORMED_FAULTS),
        ),
        Facet(
            "backend_slow",
            "a hanging or slow backend answer (hang, slow drip, spike)",
            lambda v: _faults(v, SLOW_FAULTS),
        ),
        Facet(
            "client_timeout",
            "a chat whose client gave up (info: unknown outcome)",
            lambda v: sum(1 for o in v.chats if o.type == "info"),
        ),
        Facet("kill_restart", "a server process killed during the run", _kills),
        Facet("chat_logged", "a chat_done line with all five timing buckets", _logged_buckets),
        Facet(
            "transport_error_logged",
            "a proxy_transport_error warning",
            lambda v: len(log_events(v.run, "proxy_transport_error")),
        ),
        Facet(
            "state_changed_logged",
            "a state_changed_during_proxy warning",
            lambda v: len(log_events(v.run, "state_changed_during_proxy")),
        ),
        Facet("heartbeat", "a heartbeat log line", lambda v: len(log_events(v.run, "heartbeat"))),
        Facet("stats", "a final GET /stats snapshot of a server", _stats_probes),
        Facet("fuzz_malformed", "a malformed or hostile request (fuzz workload)", lambda v: _fuzz(v)),
        Facet("passthrough", "a request through /sessions/{id}/{path} (not the chat endpoint)", _passthrough),
        Facet(
            "mismatch_reported",
            "a GET whose metadata.token_mismatch (our extra) reports a difference from the canonical tokenization",
            _mismatch_reported,
        ),
    )
}


def count_facets(run: RunData) -> dict[str, int]:
    """Every facet's count over one run."""
    v = View(run)
    return {name: f.count(v) for name, f in FACETS.items()}
