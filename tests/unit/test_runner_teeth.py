"""The harness has teeth: each known-bad server variant is flagged by the library scenario aimed at it,
and the correct server passes the same scenarios on many seeds.

Runs in process (ASGI transports, see harness.runner.run_inprocess): the
same agents, nemesis and checkers as live mode, at a fraction of the cost, so
the matrix fits the test suite. ``echo_upstream_framing`` needs real sockets
(duplicate ``server``/``date`` headers on the wire): it is flagged in live mode,
``harness run client_disconnect --variant echo_upstream_framing``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.checkers import check_all
from harness.runner import run_inprocess
from harness.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

# known-bad variant -> (the scenario that provokes it, the checker that must flag it)
TEETH: dict[str, tuple[str, str]] = {
    "auto_create": ("delete_during_proxy", "no_resurrection"),
    "commit_aborted": ("litellm_abort_remap", "provisional"),
    "no_closing_recheck": ("delete_during_proxy", "no_resurrection"),
    "no_num_assistant_guard": ("duplicate_inflight_retry", "stale_writers"),
    "provisional_never_superseded": ("abort_retry_supersede", "provisional"),
    "leak_deleted": ("rapid_lifecycle", "leaks"),
    "inflight_leak": ("transport_faults", "log_consistency"),
}

CORRECT_SUITE = (
    "abort_retry_supersede",
    "abort_retries_exhausted",
    "delete_during_proxy",
    "duplicate_inflight_retry",
    "tool_retry_rollback",
    "multi_backend_race",
)


def scenario(name: str, *, variant: str | None = None, seed: int | None = None, sessions: int = 10) -> Scenario:
    overrides: dict[str, object] = {"workload.sessions": sessions}
    if seed is not None:
        overrides["seed"] = seed
        overrides["backend.seed"] = seed
    sc = load_scenario(SCENARIOS / f"{name}.toml", overrides)
    return sc.with_variants([variant] if variant else [])


async def verdicts(sc: Scenario) -> dict[str, tuple[str, list[str]]]:
    out = await run_inprocess(sc)
    assert not out.workload.errors, out.workload.errors
    return {v.checker: (v.status, [x.message for x in v.violations][:3]) for v in check_all(out.data)}


@pytest.mark.parametrize("variant", sorted(TEETH))
async def test_known_bad_variant_is_flagged(variant: str) -> None:
    name, checker = TEETH[variant]
    v = await verdicts(scenario(name, variant=variant, sessions=12))
    flagged = sorted(c for c, (s, _) in v.items() if s == "invalid")
    assert checker in flagged, f"{variant} on {name}: flagged by {flagged}, expected {checker}"


@pytest.mark.parametrize("name", CORRECT_SUITE)
async def test_correct_server_passes(name: str) -> None:
    v = await verdicts(scenario(name, seed=1))
    bad = {c: msgs for c, (s, msgs) in v.items() if s == "invalid"}
    assert not bad, f"correct server flagged on {name}: {bad}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 22))
async def test_correct_server_passes_on_20_seeds(seed: int) -> None:
    for name in CORRECT_SUITE:
        v = await verdicts(scenario(name, seed=seed, sessions=6))
        bad = {c: msgs for c, (s, msgs) in v.items() if s == "invalid"}
        assert not bad, f"seed {seed}: correct server flagged on {name}: {bad}"


@pytest.mark.slow
async def test_variant_checker_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    """Every known-bad variant over every scenario of the matrix: which checkers flag it (printed)."""
    names = sorted({n for n, _ in TEETH.values()})
    rows: dict[str, set[str]] = {}
    for variant in sorted(TEETH):
        flagged: set[str] = set()
        for name in names:
            v = await verdicts(scenario(name, variant=variant, sessions=8))
            flagged |= {c for c, (s, _) in v.items() if s == "invalid"}
        rows[variant] = flagged
    checkers = sorted(set().union(*rows.values()))
    with capsys.disabled():
        print("\nvariant x checker (X = flagged by at least one scenario of", ", ".join(names) + ")")
        print(f"{'':30}" + " ".join(f"{c[:12]:>12}" for c in checkers))
        for variant, flagged in rows.items():
            print(f"{variant:30}" + " ".join(f"{'X' if c in flagged else '.':>12}" for c in checkers))
    assert all(rows.values()), {v: f for v, f in rows.items() if not f}
