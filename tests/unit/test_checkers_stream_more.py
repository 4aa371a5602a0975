"""The per-session pass of bad_input, refused_legal, leaks and blocking gives check_all's verdicts exactly.

Over simulation runs of library scenarios against the known-bad servers that each
of these checkers exists to catch (the coverage proofs of docs/coverage.md), so the
comparison covers violations, not only valid verdicts: every checker here must be
``invalid`` in at least one run. Compared as JSON with one group for the whole run
and with (about) one group per session. And ``harness check`` on a run folder goes
through that pass, says which checkers ran per session and which whole, and writes
the verdicts of the loaded run (a run cut mid-operation included).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import clean_run

from harness.checkers import CHECKERS, check_all
from harness.checkers.__main__ import main as check_main
from harness.checkers.stream import TMP_DIR, SessionChecker, check_streaming
from harness.coverage._compute import BUGS_MODULE
from harness.rundata import RunData
from harness.scenario import load_scenario
from harness.sim.runner import save_outcome, simulate, with_seed
from harness.verdict import check_folder, run_checkers

ROOT = Path(__file__).resolve().parents[2]
MINE = ["bad_input", "refused_legal", "leaks"]
# (scenario, variant, bug, judged as the default design): known-bad runs of docs/coverage.md, seed 0
SIMS = [
    ("malformed_requests", "auto_create", None, False),  # bad_input unknown_session_served, leaks sessions_leak
    ("malformed_requests", None, "crash_on_bad_json", False),  # bad_input status_5xx
    ("abort_retry_supersede", None, "refuse_retries", False),  # refused_legal refused_400
    ("duplicate_inflight_retry", "conflict_409", None, True),  # refused_legal conflict_undeclared
    ("duplicate_inflight_retry", "lock_restore", None, True),  # blocking lock_wait_behind_proxy
    ("abort_retries_exhausted", "leak_deleted", None, False),  # leaks sessions_leak
]


def _js(verdicts: list[Any]) -> list[str]:
    return [json.dumps(v.to_dict(), sort_keys=True) for v in verdicts]


def _sim(tmp: Path, name: str, variant: str | None, bug: str | None, as_default: bool) -> Path:
    sc = with_seed(load_scenario(ROOT / "scenarios" / f"{name}.toml"), 0, variant)
    out = simulate(sc, sc.seed, "random", target=f"asgi:{BUGS_MODULE}:{bug}" if bug else None, trace=False)
    assert out.data is not None, out.error
    d = tmp / f"{name}-{variant or bug}"
    save_outcome(out, d)
    if as_default:  # the variant's behaviour judged against the default design (what the proof does)
        p = d / "scenario.json"
        scenario = json.loads(p.read_text())
        scenario = copy.deepcopy(scenario)
        scenario["target"]["variants"] = []
        p.write_text(json.dumps(scenario))
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("stream_more")
    out = [_sim(tmp, *s) for s in SIMS]
    cut = tmp / "cut"  # a run cut by a signal: its last operations never completed (history torn mid-line too)
    clean_run().build().save(cut)
    lines = (cut / "history.jsonl").read_text().splitlines(keepends=True)
    (cut / "history.jsonl").write_text("".join(lines[: len(lines) * 2 // 3]) + lines[len(lines) * 2 // 3][:20])
    out.append(cut)
    return out


def test_these_checkers_have_a_per_session_step() -> None:
    assert all(isinstance(CHECKERS[n], SessionChecker) for n in MINE)


@pytest.mark.parametrize("groups", [1, 1_000_003], ids=["one_group", "group_per_session"])
def test_the_per_session_pass_gives_the_whole_run_verdicts(runs: list[Path], groups: int) -> None:
    invalid: set[str] = set()
    for d in runs:
        whole = check_all(RunData.load(d), MINE)
        got = check_streaming(d, MINE, groups=groups)
        assert got.streamed == MINE and not got.whole, got.why_whole
        assert _js(got.verdicts) == _js(whole), d.name
        invalid |= {v.checker for v in whole if v.status == "invalid"}
        assert not (d / TMP_DIR).exists()
    assert invalid == set(MINE)  # each checker's known-bad server is caught: no vacuous equivalence


def test_harness_check_streams_and_writes_the_loaded_runs_verdicts(
    runs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for d in (runs[0], runs[-1]):  # a known-bad run and the cut one (cut operations unknown)
        want = run_checkers(RunData.load(d))
        fc = check_folder(d)
        assert fc.verdicts == want
        assert set(fc.streamed) == {n for n in CHECKERS if isinstance(CHECKERS[n], SessionChecker)}
        assert set(fc.streamed) | set(fc.whole) == {v["checker"] for v in want} and not fc.why_whole
        code = check_main([str(d)])
        said = capsys.readouterr().out
        assert f"checked per session: {', '.join(fc.streamed)}; on the whole run: {', '.join(fc.whole)}" in said
        assert json.loads((d / "verdicts.json").read_text()) == json.loads(json.dumps(want))
        assert code == (1 if any(v["status"] == "invalid" for v in want) else 0)
        assert not (d / TMP_DIR).exists()


def test_harness_check_with_replaced_server_logs_runs_whole(
    runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "server.log"
    log.write_text("")
    check_main([str(runs[-1]), "--server-log", str(log)])
    assert "checked on the whole run (--server-log" in capsys.readouterr().out
