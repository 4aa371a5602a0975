"""log_consistency: a chat's proxy_elapsed_ms holds the backend generation that answered it.

CONTEXT.md names proxy_elapsed_ms as the timing bucket of Phase 2, the backend call. The fake answers a
generation that ends as planned (no fault, finish ``stop``) only after its ``latency_ms``, so a chat
answered 200 from it cannot log a shorter proxy bucket (less 1 ms + 1 % for rounding and clocks). A
server that never writes the bucket on success (mutants 9e9ede2ba263, 49a2597731d1 of reference_impl/app.py:
``if st.proxy_elapsed_ms`` for ``if not st.proxy_elapsed_ms``) logs 0 while the backend took 60-150 ms.
"""

from __future__ import annotations

from typing import Any

from test_checkers_builders import RunBuilder

from harness.checkers import CHECKERS


def _kinds(latency_ms: float | None, proxy_ms: float | None = None, **ex: Any) -> set[str]:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, t0=1.0, t1=1.2)  # total_ms 200, proxy_elapsed_ms 160 (the builder's 80 %)
    if proxy_ms is not None:
        next(ln for ln in b.logs if ln["event"] == "chat_done")["proxy_elapsed_ms"] = proxy_ms
    if latency_ms is not None:
        b.execs[sid][-1]["latency_ms"] = latency_ms
    b.execs[sid][-1].update(ex)
    return {v.kind for v in CHECKERS["log_consistency"].check(b.build()).violations}


def test_a_proxy_bucket_that_holds_the_generation_is_valid() -> None:
    assert _kinds(None) == set()  # no latency in the log (an external backend): nothing to compare
    assert _kinds(100.0) == set()
    assert _kinds(161.0) == set()  # within 1 ms + 1 %: rounding, two clocks
    assert _kinds(160.0, proxy_ms=159.5) == set()


def test_a_proxy_bucket_shorter_than_the_generation_is_flagged() -> None:
    assert _kinds(170.0) == {"proxy_bucket_short"}
    assert _kinds(100.0, proxy_ms=0.0) == {"proxy_bucket_short"}


def test_generations_off_their_plan_are_not_judged() -> None:
    assert _kinds(170.0, fault="spike") == set()  # a fault: the wait is not the plan's
    assert _kinds(170.0, finish_reason="length") == set()  # cut short: shorter than latency_ms
    assert _kinds(170.0, outcome="aborted", finish_reason="abort") == set()
    assert _kinds(170.0, abort_requested=True) == set()


def _one_bucket(total: float, **buckets: float) -> set[str]:
    """One 404 chat whose chat_done says total_ms ``total`` and the given buckets (the others 0)."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, outcome="not_found", t0=1.0, t1=1.0 + total / 1000.0)
    ln = next(x for x in b.logs if x["event"] == "chat_done")
    ln.update(lock_wait_ms=0.0, tokenize_in_ms=0.0, proxy_elapsed_ms=0.0, tokenize_out_ms=0.0, read_body_ms=0.0)
    ln.update(total_ms=total, **buckets)
    return {v.kind for v in CHECKERS["log_consistency"].check(b.build()).violations}


def test_one_bucket_longer_than_the_whole_request_is_flagged() -> None:
    """Mutant 91906f71fca2 (tokenize_in_ms starts at 1.0): a 404 answered in no time logs 1 ms of tokenization,
    within the sum rule's 1 ms tolerance but longer than the request itself."""
    assert _one_bucket(0.0, tokenize_in_ms=1.0) == {"bucket_exceeds_total"}
    assert _one_bucket(0.2, read_body_ms=0.9) == {"bucket_exceeds_total"}
    assert _one_bucket(0.0, tokenize_in_ms=0.5) == set()  # a whole-millisecond server's rounding
    assert _one_bucket(0.3, lock_wait_ms=0.3) == set()
    assert _one_bucket(10.0, tokenize_in_ms=25.0) == {"buckets_exceed_total"}  # the sum rule says it once
