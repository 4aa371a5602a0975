"""blocking: a wait for the session lock behind another request's proxy phase is flagged unless
``lock_restore`` declares it; constructed histories and logs, then the reference server in sim."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import EPOCH, RunBuilder

from harness.checkers import CHECKERS, Verdict
from harness.rundata import RunData

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def judge(run: RunData) -> Verdict:
    return CHECKERS["blocking"].check(run)


def kinds(v: Verdict) -> set[str]:
    return {x.kind for x in v.violations}


def two_chats(b: RunBuilder, sid: str, *, wait_ms: float) -> None:
    """Chat A proxies 400 ms from t=1.0; chat B arrives at t=1.1 and waits ``wait_ms`` for the lock."""
    b.chat(sid, 1, 0, t0=1.0, t1=1.42)
    b.chat(sid, 1, 1, t0=1.1, t1=1.1 + wait_ms / 1000 + 0.42)
    done = [ln for ln in b.logs if ln["event"] == "chat_done"]
    a, c = done[-2], done[-1]
    a.update(ts=EPOCH + 1.42, total_ms=420.0, lock_wait_ms=0.1, tokenize_in_ms=0.5, proxy_elapsed_ms=400.0)
    a.update(tokenize_out_ms=0.4)
    c.update(ts=EPOCH + 1.1 + wait_ms / 1000 + 0.42, total_ms=wait_ms + 420.0, lock_wait_ms=wait_ms)
    c.update(tokenize_in_ms=0.5, proxy_elapsed_ms=400.0, tokenize_out_ms=0.4)


def logged_run(wait_ms: float, variants: list[str] | None = None) -> RunData:
    b = RunBuilder(variants=variants)
    sid = b.create()
    b.chat(sid, 0, t0=0.5, t1=0.6)
    two_chats(b, sid, wait_ms=wait_ms)
    return b.build()


def test_a_wait_through_the_other_chats_proxy_phase_is_flagged_from_the_logs() -> None:
    v = judge(logged_run(wait_ms=320.0))
    assert v.status == "invalid"
    assert kinds(v) == {"lock_wait_behind_proxy"}
    assert v.violations[0].ops  # points at both chats in the history


def test_a_short_wait_and_a_declared_lock_restore_are_valid() -> None:
    assert judge(logged_run(wait_ms=2.0)).status == "valid"
    v = judge(logged_run(wait_ms=320.0, variants=["lock_restore"]))
    assert v.status == "valid" and "lock_restore" in v.notes


def test_a_short_proxy_phase_is_not_judged() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, t0=1.0, t1=1.03)
    b.chat(sid, 0, 1, t0=1.01, t1=1.06)
    done = [ln for ln in b.logs if ln["event"] == "chat_done"]
    done[0].update(ts=EPOCH + 1.03, total_ms=30.0, proxy_elapsed_ms=28.0, tokenize_out_ms=0.0)
    done[1].update(ts=EPOCH + 1.06, total_ms=50.0, lock_wait_ms=20.0, proxy_elapsed_ms=28.0)
    assert judge(b.build()).status == "valid"


def delete_during(delete_end: float, *, log: bool = False) -> RunData:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, t0=1.0, t1=1.5, log=log)
    b.delete(sid, process="nemesis", at=1.05)
    d = next(e for e in b.events if e["f"] == "delete" and e["type"] != "invoke")
    d["time"] = delete_end
    return b.build()


def test_a_delete_that_completes_only_after_the_chat_is_unknown_from_client_timing_alone() -> None:
    """It waited behind Phase 2, or it reached the server late: the client cannot tell (issue #16)."""
    v = judge(delete_during(1.51))
    assert v.status == "unknown" and not v.violations
    assert "reached the server late" in v.notes
    assert judge(delete_during(1.06)).status == "valid"


def test_without_logs_or_overlap_it_is_unknown() -> None:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, log=False)
    b.delete(sid)
    v = judge(b.build())
    assert v.status == "unknown" and "no evidence" in v.notes


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_server_that_holds_the_lock_across_phase_2_undeclared_is_flagged_in_sim(seed: int) -> None:
    """The reference server under lock_restore, judged as if the scenario declared the default design."""
    from harness.scenario import load_scenario
    from harness.sim.runner import simulate, with_seed

    def run(variant: str | None) -> RunData:
        sc = with_seed(load_scenario(str(SCENARIOS / "variant_comparison.toml")), seed, variant)
        out = simulate(sc, seed, "random", trace=False)
        assert out.data is not None
        return out.data

    held = run("lock_restore")
    assert judge(held).status == "valid"
    undeclared = copy.copy(held)
    scenario: dict[str, Any] = copy.deepcopy(held.scenario)
    scenario["target"]["variants"] = []
    undeclared.scenario = scenario
    v = judge(undeclared)
    assert v.status == "invalid"
    assert "lock_wait_behind_proxy" in kinds(v)
    assert judge(run(None)).status == "valid"
