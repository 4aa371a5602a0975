"""delete_cancel: a generation in flight across the whole DELETE of its session is cancelled (exactly_once).

CONTEXT.md: the DELETE cancellation channel "cancels the in-flight proxy of that session (and tells the
backend via POST /abort_request), instead of letting it run to completion". A server that declares the
design but lets the proxy run on answers the chat 200 after the DELETE and never names its rid:
cancel_not_sent (which reads 404'd chats) cannot see it. exactly_once's ``cancel_not_done`` bounds, from
the client's times and the fake's ``latency_ms``, when the generation reached the backend and until when it
ran; one that spans the whole DELETE must carry ``abort_requested``. The reference server passes; the same
server whose DELETE skips the cancellation (mutant d92bfe4ddfad of reference_impl/app.py) is flagged. One
sim seed each of delete_during_proxy, plus builder runs for the bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.checkers import CHECKERS, Verdict, check_all
from harness.coverage._bugs import reference_app
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "delete_during_proxy.toml"


def no_cancel(**kw: Any) -> Any:
    """delete_cancel declared, but DELETE neither cancels the proxy nor tells the backend."""
    app = reference_app(**kw)
    server = app.state.server

    async def _skip(session: Any) -> None:
        return None

    server._cancel_inflight = _skip
    return app


def _exactly_once(target: str | None) -> Verdict:
    sc = with_seed(load_scenario(SCENARIO), 0, "delete_cancel")
    out = simulate(sc, 0, "random", target=target, trace=False)
    assert out.error is None and out.data is not None, out.error
    return next(v for v in check_all(out.data) if v.checker == "exactly_once")


def test_a_generation_in_flight_across_the_delete_is_cancelled() -> None:
    assert _exactly_once(None).status == "valid"
    bad = _exactly_once("asgi:test_delete_cancel_done:no_cancel")
    assert bad.status == "invalid" and {v.kind for v in bad.violations} == {"cancel_not_done"}, bad


def _run(chat_span: tuple[float, float], delete_span: tuple[float, float], **ex: Any) -> set[str]:
    """One closing_skip chat (answered 200) with one generation of 100 ms, and one DELETE (204)."""
    from test_checkers_builders import RunBuilder

    b = RunBuilder(variants=["delete_cancel"])
    sid = b.create()
    b.chat(sid, 0, outcome="closing_skip", t0=chat_span[0], t1=chat_span[1], execute=False)
    rid = [e for e in b.events if e["f"] == "chat"][-1]["request_id"]
    entry = {"rid": "g0", "request_id": rid, "turn": 0, "attempt": 0, "outcome": "completed"}
    entry.update(finish_reason="stop", status=200, fault=None, latency_ms=100.0)
    entry.update(ex)
    b.execs[sid].append(entry)
    b.delete(sid, at=delete_span[0])
    b.events[-1]["time"] = delete_span[1]
    return {v.kind for v in CHECKERS["exactly_once"].check(b.build()).violations}


def test_the_bounds() -> None:
    # chat 1.000-1.110 with a 100 ms generation: at the backend by 1.010, generating until 1.100
    assert _run((1.0, 1.11), (1.02, 1.03)) == {"cancel_not_done"}
    assert _run((1.0, 1.11), (1.02, 1.03), abort_requested=True) == set()  # told: the server's part is done
    assert _run((1.0, 1.11), (1.005, 1.03)) == set()  # DELETE sent before the generation surely began
    assert _run((1.0, 1.11), (1.02, 1.105)) == set()  # answered after it may have ended
    assert _run((1.0, 1.11), (1.02, 1.03), fault="spike") == set()  # a fault: the schedule is not the plan's
    assert _run((1.0, 1.11), (1.02, 1.03), finish_reason="length") == set()  # cut short: shorter than latency
