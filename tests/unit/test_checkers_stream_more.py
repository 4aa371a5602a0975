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
from test_checkers_builders import EPOCH, RunBuilder, clean_run

from harness.checkers import CHECKERS, Verdict, check_all
from harness.checkers.__main__ import main as check_main
from harness.checkers.stream import TMP_DIR, SessionChecker, check_streaming
from harness.coverage._compute import BUGS_MODULE
from harness.rundata import CUT_REASON, RunData
from harness.scenario import load_scenario
from harness.sim.runner import save_outcome, simulate, with_seed
from harness.verdict import check_folder, run_checkers

ROOT = Path(__file__).resolve().parents[2]
MINE = ["bad_input", "refused_legal", "leaks", "blocking"]
# (scenario, variant, bug, judged as the default design): known-bad runs of docs/coverage.md, seed 0 (~1-3 s each)
SIMS = [
    ("malformed_requests", "auto_create", None, False),  # bad_input unknown_session_served, leaks sessions_leak
    ("abort_retry_supersede", None, "refuse_retries", False),  # refused_legal refused_400
    ("duplicate_inflight_retry", "conflict_409", None, True),  # refused_legal conflict_undeclared
    ("duplicate_inflight_retry", "lock_restore", None, True),  # blocking lock_wait_behind_proxy
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


def delete_beside_chat(*, proxy_end: float, sent: float, deleted: float) -> RunData:
    """test_blocking_clock's DELETE beside a chat, with the chat that pins the server's clock to the client's
    in another session: a part that holds the DELETE does not hold what places its chat on the client's clock."""
    b = RunBuilder()
    sid, other = b.create(), b.create()
    b.chat(other, 0, t0=0.5, t1=0.6)  # answered at once: pins the server's clock to the client's
    b.chat(sid, 0, t0=1.0, t1=1.5)
    done = [ln for ln in b.logs if ln["event"] == "chat_done"][-1]
    done.update(ts=EPOCH + proxy_end + 0.0004, total_ms=(proxy_end - 1.0) * 1000 + 0.4, tokenize_out_ms=0.4)
    done.update(proxy_elapsed_ms=(proxy_end - 1.0) * 1000 - 1.0)
    d = b.invoke("delete", at=sent, session=sid, request_id=b.uid("r"), process="nemesis")
    b.log("session_deleted", "http://127.0.0.1:9001", deleted, session_id=sid)
    b.complete(d, status=204, at=1.55, framing=b.framing(0))
    b.deleted.add(sid)
    return b.build()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("stream_more")
    out = [_sim(tmp, *s) for s in SIMS]
    for k, (proxy_end, sent, deleted) in enumerate([(1.2, 1.3, 1.52), (1.49, 1.3, 1.52), (1.49, 1.05, 1.06)]):
        # a DELETE beside a chat, settled (or not) by the server's evidence on the client's clock: the clock
        # is bound by every session's chats, so with a group per session it comes from the other parts
        d = tmp / f"clock{k}"
        delete_beside_chat(proxy_end=proxy_end, sent=sent, deleted=deleted).save(d)
        out.append(d)
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


def test_the_cross_session_clock_settles_a_delete_in_both_paths(runs: list[Path]) -> None:
    clock = [d for d in runs if d.name.startswith("clock")]
    got = [check_streaming(d, ["blocking"], groups=1_000_003).verdicts[0] for d in clock]
    assert [v.status for v in got] == ["valid", "unknown", "valid"], [v.notes for v in got]
    assert "at most 10 ms left" in got[0].notes and "session_deleted" in got[2].notes


class WholeOnly:
    """A checker with no per-session steps (liveness's rule, checked on the loaded run)."""

    name = "whole_only"

    def check(self, run: RunData) -> Verdict:
        v = CHECKERS["liveness"].check(run)
        return Verdict(self.name, v.status, v.violations, v.notes)


@pytest.fixture
def whole_only(monkeypatch: pytest.MonkeyPatch) -> str:
    """A checker that only checks a whole run, registered for the test (every shipped one has per-session steps)."""
    monkeypatch.setitem(CHECKERS, WholeOnly.name, WholeOnly())
    return WholeOnly.name


def test_harness_check_streams_and_writes_the_loaded_runs_verdicts(
    runs: list[Path], capsys: pytest.CaptureFixture[str], whole_only: str
) -> None:
    for d in (runs[0], runs[-1]):  # a known-bad run and the cut one (cut operations unknown)
        want = run_checkers(RunData.load(d))
        code = check_main([str(d), "--per-session", "always"])
        said = capsys.readouterr().out
        per = [v["checker"] for v in want if isinstance(CHECKERS.get(v["checker"]), SessionChecker)]
        rest = [v["checker"] for v in want if v["checker"] in CHECKERS and v["checker"] not in per]
        assert per and rest and f"checked per session: {', '.join(per)}; on the whole run: {', '.join(rest)}\n" in said
        assert json.loads((d / "verdicts.json").read_text()) == json.loads(json.dumps(want))
        assert code == (1 if any(v["status"] == "invalid" for v in want) else 0)
        assert not (d / TMP_DIR).exists()
    assert any(e.get("error") == CUT_REASON for e in RunData.load(runs[-1]).history)  # its cut ops: info, unknown
    fc = check_folder(runs[0], ["leaks", whole_only], per_session=True)  # a selection, in its order
    assert [v["checker"] for v in fc.verdicts] == ["leaks", whole_only]
    assert fc.streamed == ["leaks"] and fc.whole == [whole_only]
    small = check_folder(runs[0], ["leaks", whole_only])  # the default: a run this small is checked whole
    assert small.verdicts == fc.verdicts and small.streamed == [] and small.whole == ["leaks", whole_only]
    assert small.why_whole.startswith("a small run (") and "under 64 MiB" in small.how()
    check_main([str(runs[0]), "--per-session", "never"])
    assert "checked per session: none; on the whole run:" in capsys.readouterr().out


def test_the_default_takes_the_per_session_pass_only_where_it_saves_memory(
    runs: list[Path], monkeypatch: pytest.MonkeyPatch, whole_only: str
) -> None:
    """A big folder (here: any, the threshold at 0) is checked per session only when every selected checker
    can be: one that cannot needs the run loaded whole, and then the pass would cost CPU and save nothing."""
    import harness.verdict as verdict

    monkeypatch.setattr(verdict, "PER_SESSION_MIN_BYTES", 0)
    mixed = check_folder(runs[0], ["leaks", whole_only])
    assert mixed.streamed == [] and f"loaded whole anyway for {whole_only}" in mixed.why_whole
    alone = check_folder(runs[0], ["leaks", "blocking"])
    assert alone.streamed == ["leaks", "blocking"] and alone.why_whole == ""
    assert alone.verdicts == check_folder(runs[0], ["leaks", "blocking"], per_session=False).verdicts


def test_harness_check_with_replaced_server_logs_runs_whole(
    runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "server.log"
    log.write_text("")
    check_main([str(runs[-1]), "--server-log", str(log)])
    assert "checked on the whole run (--server-log" in capsys.readouterr().out


def test_a_history_record_of_the_wrong_shape_is_checked_whole_not_a_traceback(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid JSON of an unexpected shape (a null time) is the checkers' to judge, as on the loaded run: the
    per-session pass names it and falls back to the whole run, which it loads once (not again in check_folder)."""
    import shutil

    import harness.checkers.stream as stream

    d = tmp_path / "odd"
    shutil.copytree(runs[0], d)
    hist = d / "history.jsonl"
    events = [json.loads(ln) for ln in hist.read_text().splitlines()]
    events[len(events) // 2]["time"] = None
    hist.write_text("".join(json.dumps(e) + "\n" for e in events))
    loads: list[Path] = []
    real = RunData.load
    monkeypatch.setattr(stream.RunData, "load", lambda p, *a, **k: loads.append(Path(p)) or real(p, *a, **k))
    fc = check_folder(d, ["leaks", "blocking"], per_session=True)
    assert fc.streamed == [] and "unexpected shape" in fc.why_whole and fc.whole == ["leaks", "blocking"]
    assert len(loads) == 1, loads  # check_streaming's whole-run load, and no second one
    assert not (d / TMP_DIR).exists()
    monkeypatch.setattr(stream.RunData, "load", real)
    assert fc.verdicts == run_checkers(RunData.load(d), ["leaks", "blocking"])
