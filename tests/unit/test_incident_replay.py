"""Every shipped incident: importing its log gives the committed scenario, and the sim replay reproduces it.

"Reproduces" means: for every session of the incident, the replay's
``chat_done`` outcomes, in order, are the original log's (the same request
loses the state_changed race, the same turn is aborted then retried, the
same chat finds its session closing). Runs on a few seeds and both
exploring strategies, so the reproduction does not hang on one schedule.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.incident import (
    compare,
    expected_outcomes,
    filter_events,
    read_logs,
    reconstruct,
    replay,
    replay_outcomes,
)
from harness.incident.cli import main as incident_main
from harness.scenario import Scenario, load_scenario
from harness.sim.runner import simulate

INCIDENTS = Path(__file__).resolve().parents[2] / "scenarios" / "incidents"

# name -> (log files, --session filters, the outcome classes the incident is about)
SHIPPED: dict[str, tuple[list[str], list[str], set[str]]] = {
    "dup_retry_race": (["dup_retry_race.log.jsonl"], ["aaa1f29d"], {"state_changed_skip"}),
    "abort_weight_update": (["abort_weight_update.log.jsonl"], [], {"aborted"}),
    "delete_mid_proxy": (["delete_mid_proxy.log.jsonl"], [], {"closing_skip"}),
    "transport_storm": (
        ["transport_storm.server-0.log.jsonl", "transport_storm.server-1.log.jsonl"],
        [],
        {"transport_error", "upstream_error"},
    ),
    # read from Python-logging text lines (reference server --log-format text), not JSON
    "text_dup_retry": (
        ["text_dup_retry.server-0.log", "text_dup_retry.server-1.log"],
        [],
        {"state_changed_skip"},
    ),
}


def original_outcomes(name: str) -> list[str]:
    logs, sessions, _ = SHIPPED[name]
    parsed = read_logs([INCIDENTS / f for f in logs])
    assert not parsed.skipped
    inc = reconstruct(filter_events(parsed.events, sessions))
    return [f"{sid}:{o}" for sid, o, _ in inc.outcome_sequence()]


def test_every_incident_file_is_shipped_with_its_log() -> None:
    names = sorted(p.stem for p in INCIDENTS.glob("*.toml"))
    assert names == sorted(SHIPPED)
    for name, (logs, _, _) in SHIPPED.items():
        assert all((INCIDENTS / f).is_file() for f in logs)
        sc = load_scenario(INCIDENTS / f"{name}.toml")
        assert len(sc.description) > 200 and sc.workload.script


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_fresh_import_matches_the_committed_scenario(name: str, tmp_path: Path) -> None:
    logs, sessions, classes = SHIPPED[name]
    out = tmp_path / f"{name}.toml"
    argv = ["import", *(str(INCIDENTS / f) for f in logs), *(a for s in sessions for a in ("--session", s))]
    assert incident_main([*argv, "-o", str(out)]) == 0
    fresh, shipped = load_scenario(out), load_scenario(INCIDENTS / f"{name}.toml")
    assert fresh.workload.script == shipped.workload.script
    assert fresh.checks.options == shipped.checks.options
    assert fresh.target.processes == shipped.target.processes
    expected = original_outcomes(name)
    assert shipped.checks.options["incident"]["outcomes"] == expected
    assert classes <= {e.rpartition(":")[2] for e in expected}  # the incident shows what it is about


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_sim_replay_reproduces_the_outcome_sequence(name: str) -> None:
    sc = load_scenario(INCIDENTS / f"{name}.toml")
    expected = original_outcomes(name)
    for strategy in ("random", "pct"):
        for seed in range(3):
            check = replay(sc, seed, strategy)
            assert check.reproduced, f"{name} seed {seed} {strategy}:\n{check.report()}"
    # the same, computed from a run's lines directly: per session, replay == original log
    out = simulate(sc, 0, "random", trace=False)
    assert out.data is not None and out.error is None
    per_session = compare(expected, replay_outcomes(out.data.history, out.data.server_logs))
    assert per_session.actual == per_session.expected


def test_replay_joins_requests_by_caller_request_id() -> None:
    """Each replayed chat carries the original x-request-id: the same request gets the same outcome."""
    sc = load_scenario(INCIDENTS / "dup_retry_race.toml")
    out = simulate(sc, 1, "random", trace=False)
    assert out.data is not None
    got = {ln["caller_request_id"]: ln["outcome"] for ln in out.data.server_logs if ln["event"] == "chat_done"}
    want = {s.request_id: s.expect for s in sc.workload.script if s.kind == "chat"}
    assert got == want


@pytest.mark.parametrize("name", ["dup_retry_race", "text_dup_retry"])
def test_a_server_without_the_guard_does_not_reproduce_the_race(name: str) -> None:
    """The comparison has teeth: under no_num_assistant_guard the losing copy commits too."""
    sc = load_scenario(INCIDENTS / f"{name}.toml")
    bad = sc.with_variants(["no_num_assistant_guard"])
    check = replay(bad, 0)
    assert not check.reproduced
    assert all("state_changed_skip" not in seq for seq in check.actual.values())


def test_replay_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert incident_main(["replay", str(INCIDENTS / "delete_mid_proxy.toml"), "--seed", "2"]) == 0
    assert "REPRODUCED" in capsys.readouterr().out
    text = (INCIDENTS / "dup_retry_race.toml").read_text()
    bad = tmp_path / "dup_bad.toml"
    bad.write_text(text.replace("processes = 1\n", 'processes = 1\nvariants = ["no_num_assistant_guard"]\n', 1))
    assert incident_main(["replay", str(bad)]) == 1
    assert "NOT REPRODUCED" in capsys.readouterr().out
    plain = tmp_path / "plain.toml"
    plain.write_text('name = "plain"\n')
    assert incident_main(["replay", str(plain)]) == 2
    sc = load_scenario(INCIDENTS / "abort_weight_update.toml")
    changed = [dataclasses.replace(s, fault=None) if s.expect == "aborted" else s for s in sc.workload.script]
    no_abort = dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, script=tuple(changed)))
    assert not replay(no_abort, 0).reproduced  # without the pinned aborts the incident is gone


def _slower(sc: Scenario, extra_ms: float) -> Scenario:
    steps = []
    for s in sc.workload.script:
        if s.fault and s.fault.startswith("spike;ms="):
            s = dataclasses.replace(s, fault=f"spike;ms={float(s.fault.split('=')[1]) + extra_ms:g}")
        steps.append(s)
    return dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, script=tuple(steps)))


@pytest.mark.parametrize("name", ["delete_mid_proxy", "dup_retry_race"])
def test_a_slower_replay_keeps_the_original_causality(name: str) -> None:
    """Every answer 60 ms later than in production: each turn still follows the answer it followed
    (done_s), so the incident still reproduces instead of turning into self-made races."""
    sc = _slower(load_scenario(INCIDENTS / f"{name}.toml"), 60.0)
    check = replay(sc, 0)
    assert check.reproduced, check.report()
    no_causality = dataclasses.replace(
        sc,
        workload=dataclasses.replace(
            sc.workload, script=tuple(dataclasses.replace(s, done_s=None) for s in sc.workload.script)
        ),
    )
    assert not replay(no_causality, 0).reproduced  # open loop alone overtakes the late answers


def test_aborts_land_when_they_did_in_production() -> None:
    """The weight update's aborts are sent as /abort_request at the original moment, not answered at once:
    the replay's chat_done order is the original's across sessions too."""
    sc = load_scenario(INCIDENTS / "abort_weight_update.toml")
    timed = [s for s in sc.workload.script if s.abort_after_ms is not None]
    assert len(timed) == 2 and all(s.expect == "aborted" for s in timed)
    out = simulate(sc, 0, "random", trace=False)
    assert out.data is not None
    aborts = [e for e in out.data.history if e["f"] == "chaos" and e["type"] == "invoke"]
    assert [e["value"]["action"] for e in aborts] == ["backend_abort", "backend_abort"]
    check = compare(expected_outcomes(sc), replay_outcomes(out.data.history, out.data.server_logs))
    assert check.reproduced and check.same_global_order, check.report()


def test_an_incident_replay_is_a_function_of_its_seed() -> None:
    sc = load_scenario(INCIDENTS / "transport_storm.toml")
    a, b = simulate(sc, 4, "pct", trace=False), simulate(sc, 4, "pct", trace=False)
    assert a.history_digest == b.history_digest and a.trace_digest == b.trace_digest
    assert simulate(sc, 5, "pct", trace=False).trace_digest != a.trace_digest
