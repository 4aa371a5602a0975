"""The capacity model: determinism, queueing theory, the session lock, tokenization modes, faults.

Most tests switch every cost off but the one under study, so the expected
figure can be written down by hand (or by Pollaczek-Khinchine) and the model
must hit it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest

from harness.fake_sglang.plan import parse_plan
from harness.model import Costs, Deployment, ModelParams, Tokens, Workload, run_model
from harness.model._params import Stalls

ZERO = Costs(
    http_ms=0.0,
    http_per_token_ms=0.0,
    tokenize_in_ms=0.0,
    tokenize_in_per_token_ms=0.0,
    tokenize_out_ms=0.0,
    tokenize_out_per_token_ms=0.0,
    proxy_ms=0.0,
    proxy_per_token_ms=0.0,
    control_ms=0.0,
    resume_ms=0.0,
    thread_hop_ms=0.0,
    untimed_ms=0.0,
    client_ms=0.0,
)


def quiet_workload(**kw: object) -> Workload:
    """One-turn sessions, no GET / DELETE at the end: only the chat request costs anything."""
    base = {"sessions": 10, "concurrency": 10, "turns": (1, 1), "collect_at_end": False, "delete_at_end": False}
    base.update(kw)
    return Workload(**base)  # type: ignore[arg-type]


def params(costs: Costs = ZERO, plan: dict[str, object] | None = None, **kw: object) -> ModelParams:
    p = ModelParams(costs=costs, plan=parse_plan(plan or {}), workload=quiet_workload())
    return p.replace(**kw) if kw else p


def mean(xs: object) -> float:
    return statistics.fmean(xs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- determinism


def test_same_seed_same_result_different_seed_different() -> None:
    p = ModelParams(
        seed=5,
        plan=parse_plan(
            {
                "latency": {"model": "lognormal", "median_ms": 30, "p99_ms": 300},
                "rules": [{"fault": "abort", "probability": 0.1}, {"fault": "http_503", "probability": 0.05}],
            }
        ),
        workload=Workload(sessions=200, concurrency=20, turns=(2, 5), think_time_s=(0.0, 0.01), arrival_rate=50),
        deployment=Deployment(processes=3),
    )
    a, b = run_model(p), run_model(p)
    assert a.requests > 500
    for name in a.buckets:
        assert list(a.buckets[name]) == list(b.buckets[name])
    assert a.outcomes == b.outcomes
    assert a.sim_time_s == b.sim_time_s
    c = run_model(p.replace(seed=6))
    assert list(c.buckets["total_ms"]) != list(a.buckets["total_ms"])


def test_summary_has_every_bucket_with_counts() -> None:
    r = run_model(params(plan={"latency": {"model": "fixed", "ms": 10}}))
    s = r.summary()
    assert set(s["buckets"]) == {
        "lock_wait_ms",
        "tokenize_in_ms",
        "proxy_elapsed_ms",
        "tokenize_out_ms",
        "total_ms",
        "client_request_ms",
    }
    assert s["buckets"]["total_ms"]["n"] == 10
    assert s["buckets"]["proxy_elapsed_ms"]["p50_ms"] == pytest.approx(10.0, abs=0.05)


# ---------------------------------------------------------------- queueing theory


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_single_loop_poisson_arrivals_match_m_d_1(rho: float) -> None:
    """One loop, deterministic service D (inline tokenization), Poisson arrivals: Pollaczek-Khinchine.

    The loop's work is that of an M/D/1 queue (the answer's own burst costs nothing here), so by PASTA
    a request waits rho * D / (2 (1 - rho)) on average before its handler starts. The server's
    total_ms starts with the handler, so that wait is exactly client time minus total_ms.
    """
    d_ms = 10.0
    lam = rho / (d_ms / 1000.0)
    p = params(
        dataclasses.replace(ZERO, tokenize_in_ms=d_ms),
        sessions=20_000,
        concurrency=100_000,
        arrival_rate=lam,
        tokenize_in_thread=False,
        create=False,
        seed=3,
    )
    r = run_model(p)
    assert r.requests == 20_000
    assert min(r.buckets["total_ms"]) == pytest.approx(d_ms, rel=1e-9)
    assert all(x == pytest.approx(d_ms) for x in r.buckets["tokenize_in_ms"])
    wait = mean(r.client_request_ms) - mean(r.buckets["total_ms"])
    assert wait == pytest.approx(rho * d_ms / (2 * (1 - rho)), rel=0.08)
    assert r.requests / r.sim_time_s == pytest.approx(lam, rel=0.03)


def test_littles_law_closed_loop() -> None:
    """N agents always in a request: throughput x mean response time = N."""
    n = 8
    p = params(
        dataclasses.replace(ZERO, tokenize_in_ms=2.0),
        plan={"latency": {"model": "uniform", "min_ms": 5, "max_ms": 25}},
        sessions=4000,
        concurrency=n,
        processes=2,
        tokenize_in_thread=False,
    )
    r = run_model(p)
    throughput = r.requests / r.sim_time_s
    w = mean(r.client_request_ms) / 1000.0
    assert throughput * w == pytest.approx(n, rel=0.02)


def test_more_processes_cut_the_queue() -> None:
    base = params(
        dataclasses.replace(ZERO, tokenize_in_ms=1.0, http_ms=1.0),
        plan={"latency": {"model": "fixed", "ms": 20}},
        sessions=400,
        concurrency=200,
        tokenize_in_thread=False,
    )
    one = run_model(base.replace(processes=1))
    eight = run_model(base.replace(processes=8))
    p99 = lambda r: r.stats("client_request_ms").get(99)  # noqa: E731
    assert p99(eight) < p99(one) / 3


# ---------------------------------------------------------------- the session lock


def _duplicate(**kw: object) -> ModelParams:
    """One session, one turn sent twice at once (a duplicate in-flight retry)."""
    return params(
        kw.pop("costs", ZERO),  # type: ignore[arg-type]
        plan={"latency": {"model": "fixed", "ms": 100}},
        sessions=1,
        concurrency=1,
        duplicate_inflight=1.0,
        duplicate_delay_ms=(0.0, 0.0),
        **kw,
    )


def test_lock_restore_serializes_two_requests_on_one_session() -> None:
    r = run_model(_duplicate(lock_restore=True, tokenize_in_thread=False))
    waits = sorted(r.buckets["lock_wait_ms"])
    totals = sorted(r.buckets["total_ms"])
    assert waits[0] == pytest.approx(0.0, abs=1e-9)
    assert waits[1] == pytest.approx(100.0, abs=1e-6)  # the whole of the first one's backend call
    assert totals[1] == pytest.approx(200.0, abs=1e-6)
    # the second plans after the first committed (a rollback retry in TITO terms): no stale writer
    assert r.outcomes == {"committed": 2}


def test_split_lock_lets_both_proxy_at_once() -> None:
    r = run_model(_duplicate(lock_restore=False, tokenize_in_thread=False))
    assert max(r.buckets["lock_wait_ms"]) == pytest.approx(0.0, abs=1e-9)
    assert max(r.buckets["total_ms"]) == pytest.approx(100.0, abs=1e-6)
    assert r.outcomes == {"committed": 1, "state_changed_skip": 1}


def test_thread_tokenization_holds_the_lock_across_the_hop_inline_does_not() -> None:
    """Inline, Phase 1 runs in one loop burst, so a same-session request never finds the lock held.

    In a thread the lock is held while the tokenizer runs, so the duplicate waits for it.
    """
    costs = dataclasses.replace(ZERO, tokenize_in_ms=20.0, gil_fraction=0.0)
    inline = run_model(_duplicate(costs=costs, tokenize_in_thread=False))
    thread = run_model(_duplicate(costs=costs, tokenize_in_thread=True))
    assert max(inline.buckets["lock_wait_ms"]) == pytest.approx(0.0, abs=1e-9)
    assert sorted(thread.buckets["lock_wait_ms"])[1] == pytest.approx(20.0, abs=1e-6)
    # inline, the duplicate instead waits for the loop, before its handler starts (not in total_ms)
    assert sorted(inline.client_request_ms)[1] == pytest.approx(140.0, abs=1e-6)


def test_thread_tokenization_frees_the_loop_for_other_sessions() -> None:
    """Many sessions, heavy tokenization that releases the GIL: threads beat inline on the tail."""
    base = params(
        dataclasses.replace(ZERO, tokenize_in_ms=5.0, http_ms=0.2, gil_fraction=0.0),
        plan={"latency": {"model": "fixed", "ms": 30}},
        sessions=400,
        concurrency=40,
        threads=8,
    )
    inline = run_model(base.replace(tokenize_in_thread=False))
    thread = run_model(base.replace(tokenize_in_thread=True))
    assert thread.stats("client_request_ms").get(99) < inline.stats("client_request_ms").get(99)


def test_delete_during_proxy_skips_the_commit_and_ends_the_session() -> None:
    p = params(
        plan={"latency": {"model": "fixed", "ms": 50}},
        sessions=50,
        concurrency=50,
        turns=(3, 3),
        delete_during_proxy=1.0,
        delete_delay_ms=(5.0, 5.0),
    )
    r = run_model(p)
    assert r.outcomes["closing_skip"] == 50
    assert r.sessions_done == 50


# ---------------------------------------------------------------- the backend's models and faults


def test_fixed_and_per_token_latency() -> None:
    fixed = run_model(params(plan={"latency": {"model": "fixed", "ms": 40}}))
    assert all(x == pytest.approx(40.0, abs=1e-6) for x in fixed.buckets["proxy_elapsed_ms"])
    per_token = run_model(params(plan={"latency": {"model": "per_token", "ttft_ms": 10, "itl_ms": 2}}))
    for px, ct in zip(per_token.buckets["proxy_elapsed_ms"], per_token.completion_tokens, strict=True):
        assert px == pytest.approx(10 + 2 * (ct - 1), abs=1e-6)


def test_lognormal_median_and_p99_come_from_the_fakes_model() -> None:
    r = run_model(params(plan={"latency": {"model": "lognormal", "median_ms": 50, "p99_ms": 500}}, sessions=20_000))
    st = r.stats("proxy_elapsed_ms")
    assert st.get(50) == pytest.approx(50, rel=0.05)
    assert st.get(99) == pytest.approx(500, rel=0.12)


def test_abort_and_error_rates_follow_the_plan_and_agents_retry() -> None:
    plan = {
        "latency": {"model": "fixed", "ms": 10},
        "rules": [
            {"fault": "abort", "attempt": 0, "probability": 0.2},
            {"fault": "http_503", "attempt": 0, "probability": 0.1},
        ],
    }
    r = run_model(params(plan=plan, sessions=5000, concurrency=100))
    first = 5000
    assert r.outcomes["aborted"] == pytest.approx(0.2 * first, rel=0.1)
    assert r.outcomes["upstream_error"] == pytest.approx(0.8 * 0.1 * first, rel=0.15)
    assert r.outcomes["committed"] == first  # every retry (attempt 1) succeeds


def test_retries_run_out() -> None:
    plan = {"latency": {"model": "fixed", "ms": 1}, "rules": [{"fault": "abort"}]}
    r = run_model(params(plan=plan, sessions=3, max_retries=2))
    assert r.outcomes == {"aborted": 9}  # 1 + 2 retries each


def test_client_timeout_retries_while_the_hung_request_runs_on() -> None:
    plan = {
        "latency": {"model": "fixed", "ms": 5},
        "rules": [{"fault": "hang", "attempt": 0, "params": {"seconds": 3}}],
    }
    r = run_model(params(plan=plan, sessions=2, timeout_s=1.0, turns=(1, 1)))
    assert r.outcomes == {"committed": 2, "transport_error": 2}
    assert sorted(r.client_request_ms)[-1] == pytest.approx(1000.0, abs=1e-6)


def test_prompts_grow_by_answer_and_turn_tokens() -> None:
    p = params(
        plan={"latency": {"model": "fixed", "ms": 1}},
        sessions=1,
        turns=(4, 4),
        tokens=Tokens(first_prompt_tokens=50, turn_tokens=10, tokens_per_word=1.0),
    )
    r = run_model(p)
    pt, ct = list(r.prompt_tokens), list(r.completion_tokens)
    assert pt[0] == 50
    for i in range(1, 4):
        assert pt[i] == pt[i - 1] + ct[i - 1] + 10


def test_noise_tables_vary_costs_around_the_fit() -> None:
    costs = dataclasses.replace(ZERO, tokenize_in_ms=2.0)
    table = tuple(float(x) for x in (-1.0, 0.0, 0.0, 1.0, 3.0))
    r = run_model(params(costs, sessions=2000, tokenize_in_thread=False, noise={"tokenize_in": table}))
    seen = set(round(x, 6) for x in r.buckets["tokenize_in_ms"])
    assert seen == {1.0, 2.0, 3.0, 5.0}
    assert mean(r.buckets["tokenize_in_ms"]) == pytest.approx(2.0 + 0.6, rel=0.05)


def test_machine_cores_slow_everything_down_when_oversubscribed() -> None:
    base = params(
        dataclasses.replace(ZERO, tokenize_in_ms=5.0),
        plan={"latency": {"model": "fixed", "ms": 5}},
        sessions=200,
        concurrency=50,
        processes=4,
        tokenize_in_thread=False,
    )
    free = run_model(base)
    shared = run_model(base.replace(machine_cores=1, machine_background=1.0))
    assert mean(shared.client_request_ms) > 1.5 * mean(free.client_request_ms)
    assert not math.isnan(shared.stats("total_ms").get(99))


# ---------------------------------------------------------------- whole-process stalls


def test_stalls_raise_the_tail_not_the_median_and_are_seeded() -> None:
    p = params(
        plan={"latency": {"model": "fixed", "ms": 10}},
        workload=quiet_workload(sessions=1000, concurrency=10, turns=(5, 5)),
    )
    calm = run_model(p)
    stalled = p.replace(stalls=Stalls(rate_per_s=2.0, durations_ms=(40.0, 60.0)))
    a, b = run_model(stalled), run_model(stalled)
    assert list(a.buckets["total_ms"]) == list(b.buckets["total_ms"])  # deterministic
    assert a.stalls == b.stalls > 3
    assert a.stall_ms == pytest.approx(sum([40.0, 60.0]) / 2 * a.stalls, rel=0.5)
    assert calm.stalls == 0
    c50, c99 = calm.stats("total_ms").get(50), calm.stats("total_ms").get(99)
    s50, s99 = a.stats("total_ms").get(50), a.stats("total_ms").get(99)
    assert s50 <= c50 * 1.1 + 0.5
    assert s99 >= c99 + 30.0
    assert a.summary()["stalls"]["count"] == a.stalls
    # simulated time ends with the last session, not with the stall process's next wake-up
    assert a.sim_time_s == pytest.approx(calm.sim_time_s + a.stall_ms / 1000.0, rel=0.5)
    other = run_model(stalled.replace(seed=3))
    assert list(other.buckets["total_ms"]) != list(a.buckets["total_ms"])


def test_stalls_switched_off_leave_the_model_unchanged() -> None:
    p = params(plan={"latency": {"model": "fixed", "ms": 10}})
    off = p.replace(stalls=Stalls(rate_per_s=5.0, durations_ms=()))
    assert not off.stalls.enabled
    assert list(run_model(off).buckets["total_ms"]) == list(run_model(p).buckets["total_ms"])
