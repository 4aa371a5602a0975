"""delete_cancel: a chat cancelled by its session's DELETE is aborted at the backend by rid (exactly_once).

CONTEXT.md: the DELETE cancellation channel "cancels the in-flight proxy of that session (and tells the
backend via POST /abort_request)". The fake marks every execution that an ``/abort_request`` named
(``abort_requested``); exactly_once, when the run declares ``delete_cancel``, wants that mark on each
execution whose chat was answered 404 while its session was deleted. The reference server passes; the
same server behind a transport that swallows ``/abort_request`` (the backend is never told) is flagged.
One sim seed each of delete_during_proxy (~3 s together).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from harness.checkers import Verdict, check_all
from harness.coverage._bugs import reference_app
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "delete_during_proxy.toml"


class _NoAbort(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/abort_request"):
            return httpx.Response(200, json={"aborted": 0})
        return await self.inner.handle_async_request(request)


def silent_cancel(**kw: Any) -> Any:
    """delete_cancel that cancels the proxy but never tells the backend."""
    return reference_app(**{**kw, "backend_transport": _NoAbort(kw["backend_transport"])})


def _exactly_once(target: str | None) -> Verdict:
    sc = with_seed(load_scenario(SCENARIO), 0, "delete_cancel")
    out = simulate(sc, 0, "random", target=target, trace=False)
    assert out.error is None and out.data is not None, out.error
    cancelled = [
        e
        for es in out.data.backend_executions.values()
        for e in es
        if any(o.get("request_id") == e.get("request_id") and o.get("status") == 404 for o in out.data.history)
    ]
    assert cancelled, "no chat was cancelled mid-proxy: the scenario no longer exercises the rule"
    return next(v for v in check_all(out.data) if v.checker == "exactly_once")


def test_a_cancelled_generation_is_aborted_at_the_backend_by_rid() -> None:
    assert _exactly_once(None).status == "valid"
    bad = _exactly_once("asgi:test_delete_cancel_told:silent_cancel")
    assert bad.status == "invalid" and {v.kind for v in bad.violations} == {"cancel_not_sent"}, bad


def test_a_backend_404_passed_through_is_no_cancelled_chat() -> None:
    """The backend's own 404 (fault http_404) is passed through (CONTEXT.md), and the episode's DELETE comes
    long after the chat: no DELETE cancelled it, so nothing had to be aborted (review of #12)."""
    from test_checkers_builders import RunBuilder

    from harness.checkers import CHECKERS

    b = RunBuilder(variants=["delete_cancel"], faults=["http_404"])
    sid = b.create()
    b.chat(sid, 0)
    b.chat(sid, 1, outcome="upstream_error", status=404, execute=False)
    rid = [e for e in b.events if e["f"] == "chat"][-1]["request_id"]
    b.execs[sid].append(
        {
            "rid": "q1",
            "request_id": rid,
            "turn": 1,
            "attempt": 0,
            "outcome": "error",
            "status": 404,
            "fault": "http_404",
        }
    )
    b.delete(sid)
    v = CHECKERS["exactly_once"].check(b.build())
    assert "cancel_not_sent" not in {x.kind for x in v.violations}, v.violations
