"""Checkers assume only the protocol: a server that differs from ours where the protocol allows gets
our verdicts, and a known-bad variant behind the same differences is still flagged.

The other server is tests/unit/protocol_wrapper.py (the reference app behind a wrapper that renames
the metadata token key, drops stored messages, strips request ids, turns and kinds from records and
has no ``/stats``), run in simulation through ``--target asgi:protocol_wrapper:create_app``. The
scripted incident agent runs against it too: agents keep their own conversation and never read the
stored messages back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.checkers import check_all
from harness.scenario import load_scenario
from harness.sim.runner import simulate, with_seed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TARGET = "asgi:protocol_wrapper:create_app"
NEEDS_STATS = ("leaks",)  # the protocol promises no /stats
NEEDS_EXTRAS = ("diagnostics",)  # nor GET's metadata.token_mismatch: the wrapper drops it


def verdicts(name: str, seed: int, target: str | None, variant: str | None = None) -> dict[str, Any]:
    sc = with_seed(load_scenario(SCENARIOS / f"{name}.toml"), seed, variant)
    out = simulate(sc, seed, "random", target=target, trace=False)
    assert out.error is None, out.error
    assert out.data is not None
    return {v.checker: v for v in check_all(out.data)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["abort_retry_supersede", "duplicate_inflight_retry", "tool_retry_rollback", "incidents/dup_retry_race"],
)
def test_a_server_that_differs_only_where_the_protocol_allows_gets_our_verdicts(name: str) -> None:
    ours = verdicts(name, 1, None)
    theirs = verdicts(name, 1, TARGET)
    assert {n: v.status for n, v in ours.items() if v.status != "valid"} == {}
    differ = {
        n: (v.status, v.notes, [x.message for x in v.violations][:3])
        for n, v in theirs.items()
        if v.status != ours[n].status and n not in (*NEEDS_STATS, *NEEDS_EXTRAS)
    }
    assert differ == {}
    for n in NEEDS_STATS:  # without /stats (and no heartbeat in a short run) a leak cannot be seen: said so
        assert theirs[n].status in ("valid", "unknown"), theirs[n].notes
        if theirs[n].status == "unknown":
            assert "stats" in theirs[n].notes
    for n in NEEDS_EXTRAS:  # our extra is not there: unknown, and says so
        assert theirs[n].status == "unknown" and "extras" in theirs[n].notes, theirs[n].notes
    token = theirs["token_state"]
    assert "metadata.accumulated_token_ids" in token.notes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "name", "checker"),
    [
        ("no_num_assistant_guard", "duplicate_inflight_retry", "stale_writers"),
        ("commit_aborted", "abort_retries_exhausted", "provisional"),
    ],
)
def test_known_bad_variant_behind_the_same_differences_is_still_flagged(variant: str, name: str, checker: str) -> None:
    for seed in range(3):
        v = verdicts(name, seed, TARGET, variant)
        if v[checker].status == "invalid":
            return
    pytest.fail(f"{variant} behind the protocol wrapper not flagged by {checker} in 3 seeds")
