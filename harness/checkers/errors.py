"""no_unexpected_5xx: a server error is either explained by an injected fault or a bug.

A 500 from the session server is a crash (an unhandled tokenization mismatch,
a KeyError on a half-deleted session, a stale writer that broke the prefix
invariant): always a violation, unless it is the backend's own 500 passed
through (the server's ``chat_done`` says ``upstream_error`` and the backend's
execution log or the scenario's fault plan shows an injected 5xx).

502 / 503 / 504 are the server's honest answers to a sick backend (transport
error, malformed answer, backend 5xx passed through). They are expected only
where something explains them:

- the backend's execution log shows a fault for that request id;
- the scenario's backend fault plan injects a class that produces them
  (status faults produce that status; transport / malformed / hang faults
  produce 502 and 504);
- client chaos overlapping the request in time: a backend outage window, a
  server process kill.

Non-chat operations (create, get, delete, probe) never reach the backend, so
only chaos explains their 5xx. The notes report counts per status.
"""

from __future__ import annotations

from collections import Counter

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import (
    Chaos,
    Op,
    chaos_events,
    chat_done_by_caller,
    chat_done_by_req,
    done_for,
    fault_kinds,
    is_kill,
    is_outage,
    pair_ops,
)
from harness.rundata import RunData

# fault classes of the fake SGLang (harness.fake_sglang.plan.FAULTS) that make the session
# server answer 502 (transport error, malformed answer) or, on its own backend timeout, 504
TRANSPORT_FAULTS = (
    "reset",
    "close_mid_body",
    "sse_cut",
    "hang",
    "slow_drip",
    "no_meta_info",
    "null_content",
    "logprob_mismatch",
    "invalid_json",
    "outage",
    "transport",
    "unparsed",
)


def fault_name(f: str) -> str:
    """``"hang;seconds=60"`` -> ``"hang"`` (the fake's execution log spelling)."""
    return f.split(";", 1)[0].strip().lower()


def plan_explains(status: int, kinds: set[str]) -> bool:
    """Does a fault class (plan rule, forced header, outage) explain this status?"""
    names = {fault_name(k) for k in kinds}
    if {f"http_{status}", f"status_{status}", str(status), "http_5xx", "5xx"} & names:
        return True
    return status in (502, 504) and any(n in TRANSPORT_FAULTS for n in names)


class NoUnexpected5xx:
    name = "no_unexpected_5xx"

    def check(self, run: RunData) -> Verdict:
        ops = pair_ops(run.history)
        kinds = fault_kinds(run)
        chaos = chaos_events(ops)
        by_req, by_caller = chat_done_by_req(run), chat_done_by_caller(run)
        exec_fault: dict[str, str] = {}
        for execs in run.backend_executions.values():
            for ex in execs:
                f = ex.get("fault")
                if f and ex.get("request_id") is not None:
                    exec_fault[str(ex["request_id"])] = str(f)
        counts: Counter[int] = Counter()
        explained: Counter[int] = Counter()
        violations: list[Violation] = []
        for o in ops:
            st = o.status
            if st is None or st < 500 or o.f in ("chaos", "fault"):
                continue
            counts[st] += 1
            why = self._explain(o, st, kinds, chaos, exec_fault, by_req, by_caller)
            if why:
                explained[st] += 1
                continue
            what = "server error (500)" if st == 500 else f"{st} with no backend fault or chaos to explain it"
            violations.append(Violation(f"{o.f} answered {what}", o.indices, o.session, f"status_{st}"))
        per = ", ".join(f"{s}: {counts[s]} ({explained[s]} explained)" for s in sorted(counts)) or "no 5xx"
        return verdict(self.name, violations, notes=per)

    @staticmethod
    def _explain(
        o: Op,
        st: int,
        kinds: set[str],
        chaos: list[Chaos],
        exec_fault: dict[str, str],
        by_req: dict[str, list[dict[str, object]]],
        by_caller: dict[str, list[dict[str, object]]],
    ) -> str:
        t1 = o.seen_end if o.seen_end is not None else o.start
        for c in chaos:
            same = c.server is None or o.server is None or c.server.rstrip("/") == o.server.rstrip("/")
            if ((is_kill(c) and same) or (is_outage(c) and o.f == "chat")) and c.covers(o.start, t1, margin=1.0):
                return f"chaos {c.kind}"
        if o.f != "chat":
            return ""
        if st == 500:
            done = done_for(o, by_req, by_caller)
            if done and not any(d.get("outcome") == "upstream_error" for d in done):
                return ""  # the server's own 500, not the backend's passed through
        f = exec_fault.get(o.request_id or "")
        if f is not None:
            return f"backend fault {f}" if plan_explains(st, {f}) else ""
        return "plan" if plan_explains(st, kinds) else ""
