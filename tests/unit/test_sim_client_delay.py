"""A slow client (``[chaos] client_delay_ms``) explores the race between a late duplicate and its twin.

On a starved client box a copy of a turn reaches the server after its twin
committed, so it legitimately rolls it back. Checkers that judged order by the
client's invoke/complete times called that a lost turn. With exaggerated
client delays the sim produces that order on purpose: the correct server must
stay valid, and the known-bad variants these scenarios catch stay flagged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario import Scenario, load_scenario
from harness.sim.explore import run_seed
from harness.sim.runner import simulate, with_seed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
DELAY = {"chaos.client_delay_ms": [0, 250]}  # up to 0.5 s round trip on a 0.6 s client timeout


def delayed(name: str, seed: int, variant: str | None = None) -> Scenario:
    return with_seed(load_scenario(SCENARIOS / f"{name}.toml", DELAY), seed, variant)


def test_client_delay_is_seeded_and_changes_the_run() -> None:
    a = simulate(delayed("duplicate_inflight_retry", 1), 1, "random", trace=False)
    b = simulate(delayed("duplicate_inflight_retry", 1), 1, "random", trace=False)
    plain = simulate(with_seed(load_scenario(SCENARIOS / "duplicate_inflight_retry.toml"), 1), 1, "random", trace=False)
    assert a.history_digest == b.history_digest
    assert a.history_digest != plain.history_digest
    assert a.data is not None
    assert any("client_delay_ms" in n for n in a.notes)


@pytest.mark.parametrize(
    "name", ["duplicate_inflight_retry", "multi_backend_race", "mixed_production", "abort_retry_supersede"]
)
def test_correct_server_valid_under_client_delay(name: str) -> None:
    # mixed_production (every race at once, ~15 s a seed on CI) gets one seed: the suite's budget; the
    # other three run the same races alone on three seeds each
    for seed in range(1 if name == "mixed_production" else 3):
        r = run_seed(delayed(name, seed), seed, "random")
        assert not r.error, r.error
        bad = {str(v["checker"]): [x.get("message") for x in v.get("violations", [])][:2] for v in r.invalid}
        assert not bad, f"{name} seed {seed}: correct server flagged under client delay: {bad}"


@pytest.mark.parametrize(
    ("variant", "name", "checker"),
    [
        ("no_num_assistant_guard", "duplicate_inflight_retry", "stale_writers"),
        ("provisional_never_superseded", "abort_retry_supersede", "provisional"),
        ("commit_aborted", "litellm_abort_remap", "provisional"),
        ("no_closing_recheck", "delete_during_proxy", "no_resurrection"),
        ("auto_create", "delete_during_proxy", "no_resurrection"),
        ("leak_deleted", "rapid_lifecycle", "leaks"),
        ("inflight_leak", "transport_faults", "log_consistency"),
    ],
)
def test_known_bad_still_flagged_under_client_delay(variant: str, name: str, checker: str) -> None:
    seen: list[tuple[int, list[str]]] = []
    for seed in range(5):
        r = run_seed(delayed(name, seed, variant), seed, "random")
        flagged = [str(v["checker"]) for v in r.invalid]
        if checker in flagged:
            return
        seen.append((seed, flagged))
    pytest.fail(f"{variant} on {name} not flagged by {checker} under client delay: {seen}")


def test_a_timed_out_request_records_whether_it_had_left_the_client() -> None:
    """The agent records ``sent`` with a timeout: False when its 0.6 s ran out while the (delayed) request
    was still on its way, True when the server had it; liveness needs the difference (#16)."""
    seen: set[bool] = set()
    for seed in range(4):
        r = simulate(
            with_seed(
                load_scenario(SCENARIOS / "duplicate_inflight_retry.toml", {"chaos.client_delay_ms": [0, 900]}), seed
            ),
            seed,
            "random",
            trace=False,
        )
        assert r.data is not None
        timeouts = [e for e in r.data.history if e["type"] == "info" and "timeout after" in str(e.get("error"))]
        seen |= {bool(e["sent"]) for e in timeouts if "sent" in e}
        assert all("sent" in e for e in timeouts), [e for e in timeouts if "sent" not in e][:1]
    assert seen == {True, False}, seen
