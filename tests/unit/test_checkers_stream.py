"""The per-session check pass (harness/checkers/stream.py) gives the whole-run pass's verdicts, exactly.

Both paths run over recorded runs: simulation runs of library scenarios (correct
server and known-bad variants, one and several processes), builder runs with
final states and server logs, and a run cut mid-operation. Verdicts are compared
as JSON (status, every violation with its ops and order, notes: unknown reasons
included), with one group for the whole run and with (about) one group per
session, so a checker's per-session step that leaned on another session's data
would show.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import S0, S1, clean_run, random_clean_run
from test_checkers_diagnostics import MINE as DIAGNOSTICS
from test_checkers_rules import sessions
from test_checkers_stream_joins import MINE as JOINS
from test_checkers_stream_more import MINE as MORE
from test_checkers_stream_whole import MINE as WHOLE

from harness.checkers import CHECKERS, check_all
from harness.checkers.ops import find_token_key, pair_ops, snapshots
from harness.checkers.stream import TMP_DIR, NotStreamable, Part, SessionChecker, Spill, check_streaming
from harness.rundata import RunData
from harness.scenario import load_scenario
from harness.sim.runner import save_outcome, simulate, with_seed

ROOT = Path(__file__).resolve().parents[2]
SIMS = [  # (scenario, variant): ~1-3 s each on a loaded box
    ("delete_during_proxy", "auto_create"),
    ("client_disconnect", "no_closing_recheck"),
    ("process_kill_restart", "auto_create"),
]


def _js(verdicts: list[Any]) -> list[str]:
    return [json.dumps(v.to_dict(), sort_keys=True) for v in verdicts]


def _sim(tmp: Path, name: str, variant: str | None) -> Path:
    sc = with_seed(load_scenario(ROOT / "scenarios" / f"{name}.toml"), 1, variant)
    out = simulate(sc, 1, "random", trace=False)
    assert out.data is not None, out.error
    d = tmp / f"{name}-{variant}"
    save_outcome(out, d)
    return d


def _non_owners() -> RunData:
    """Sessions served and created by a process that does not own them (ownership: invalid, several)."""
    b = clean_run()
    a, c, _ = sessions(b)
    b.probe(a, server=S1, value="wrong_process", status=200)
    b.log("session_created", S1, b.t, session_id=a)
    b.probe(c, server=S1, value="wrong_process", status=200)
    b.log("session_created", S1, b.t, session_id=c)
    b.probe(c, value="odd", status=503)  # no_unexpected_5xx: two unexplained 5xx, of two statuses
    b.probe(a, value="odd", status=500)
    b.heartbeat(S0, sessions=7)  # leaks: a process counting sessions nobody left it, and a stats snapshot too
    b.heartbeat(S1)
    b.stats(S0, sessions=9)
    fz = b.invoke("fuzz", process="fuzzer", request_id="passed-through")  # a generate through the pass-through
    b.complete(fz, status=200)
    run = b.build()
    chats = [e for e in run.history if e.get("f") == "chat" and e.get("type") == "ok"]
    for e in (chats[-1], chats[0]):  # http_framing: two violations on one reply, one on another
        e["framing"] = {"header_counts": {"date": 2, "server": 1}, "content_length": 10, "body_bytes": 12}
    chats[1]["framing"] = {"header_counts": {"server": 2}}
    chats[2]["headers"] = {**chats[2]["headers"], "x-req-id": chats[3]["headers"]["x-req-id"]}  # 8 hex ids collide
    # exactly_once: an execution repeated, one without a request id, one nobody sent executed under two keys,
    # one of another session's chat, and two sessions' chats with one request id (ids collide at scale)
    e = run.backend_executions
    k0, k1 = sorted(e)[:2]
    e[k0].append(dict(e[k0][0]))
    e[k1].append({**e[k1][0], "request_id": None})
    e[k0].append({**e[k0][0], "request_id": "nobody-sent-this"})
    e[k1].append({**e[k1][0], "request_id": "nobody-sent-this"})
    e[k1].append(dict(e[k0][1]))
    e[k1].append({**e[k1][0], "request_id": "passed-through"})  # no chat turn: exactly_once skips it
    invokes = {ev["op"]: ev for ev in run.history if ev.get("type") == "invoke" and ev.get("f") == "chat"}
    by_session: dict[str, list[dict[str, Any]]] = {}
    for ev in invokes.values():
        by_session.setdefault(str(ev["session"]), []).append(ev)
    s0, s1 = sorted(by_session)[:2]
    shared = by_session[s0][-1]["request_id"]
    for ev in run.history:
        if ev.get("op") == by_session[s1][0]["op"]:
            ev["request_id"] = shared
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("stream")
    out = [_sim(tmp, n, v) for n, v in SIMS]
    for k, run in enumerate([clean_run().build(), random_clean_run(3).build(), _non_owners()]):
        d = tmp / f"built{k}"
        run.save(d)
        out.append(d)
    cut = tmp / "cut"  # a run cut by a signal: its last operations never completed (history torn mid-line too)
    clean_run().build().save(cut)
    lines = (cut / "history.jsonl").read_text().splitlines(keepends=True)
    (cut / "history.jsonl").write_text("".join(lines[: len(lines) * 2 // 3]) + lines[len(lines) * 2 // 3][:20])
    out.append(cut)
    return out


def test_some_checkers_have_a_per_session_step() -> None:
    assert {"ownership", "no_resurrection", "http_framing", "no_unexpected_5xx", "exactly_once", "leaks"} <= {
        n for n, c in CHECKERS.items() if isinstance(c, SessionChecker)
    }


@pytest.mark.parametrize("groups", [1, 1_000_003], ids=["one_group", "group_per_session"])
def test_the_per_session_pass_gives_the_whole_run_verdicts(runs: list[Path], groups: int) -> None:
    streamed = [n for n, c in CHECKERS.items() if isinstance(c, SessionChecker)]
    seen: set[str] = set()
    invalid: set[str] = set()
    for d in runs:
        whole = check_all(RunData.load(d), streamed)
        got = check_streaming(d, streamed, groups=groups)
        # the checkers that join records and log lines go whole where ids collide across groups (_non_owners)
        assert set(got.whole) <= set(JOINS) and bool(got.whole) == bool(got.why_whole), got.why_whole
        assert got.streamed == [n for n in streamed if n not in got.whole]
        assert _js(got.verdicts) == _js(whole), d.name
        seen |= {v.status for v in whole}
        assert not (d / TMP_DIR).exists()  # the pass removed what it wrote, and only that
        invalid |= {v.checker for v in whole if v.status == "invalid"}
    assert {"valid", "invalid"} <= seen  # the runs exercise both outcomes (the known-bad variants are caught)
    # and every checker compared is invalid on some run: no vacuous match (those of test_checkers_stream_more and
    # test_checkers_stream_joins, test_checkers_stream_whole and test_checkers_diagnostics on their known-bad runs)
    assert set(streamed) - set(MORE) - set(JOINS) - set(WHOLE) - set(DIAGNOSTICS) <= invalid


def test_the_whole_run_part_is_the_one_group_spill_part(runs: list[Path]) -> None:
    """``Part.whole`` (what every per-session checker's ``check`` reduces) answers as the spill does."""
    asked = 0
    for d in runs:
        run = RunData.load(d)
        whole = Part.whole(run)
        with Spill(d, groups=1) as sp:
            (one,) = list(sp.parts())
            # the token key: decided by the spill over every snapshot, by the checkers' snapshots() on the whole run
            assert whole.context == replace(one.context, token_key=None) and whole.first and one.first
            snaps = list(snapshots(run, pair_ops(run.history))[0].values())
            assert one.context.token_key == find_token_key(run, snaps)
            assert whole.log_pos == one.log_pos and whole.exec_at == one.exec_at and whole.split == one.split == {}
            assert one.sessions <= whole.sessions
            keys = {"caller:nobody", "nobody", *(e.get("request_id") or "" for e in run.history)}
            for e in run.history:
                keys |= {f"caller:{e.get('request_id')}", str((e.get("headers") or {}).get("x-req-id"))}
            for k in sorted(keys):
                assert whole.chat_ops(k) == sp.chat_ops(k), (d.name, k)
                assert whole.fuzzed(k) == sp.fuzzed(k), (d.name, k)
                asked += whole.chat_ops(k) is not None or whole.fuzzed(k)
    assert asked > 10


def test_every_checker_through_the_streaming_entry_point(runs: list[Path]) -> None:
    """All checkers, the unconverted ones on the whole run: the same list, in the same order."""
    for d in runs[:2]:
        got = check_streaming(d)
        assert _js(got.verdicts) == _js(check_all(RunData.load(d)))
        assert set(got.streamed) | set(got.whole) == set(CHECKERS)


def test_parts_hold_whole_sessions(runs: list[Path]) -> None:
    d = runs[2]  # two server processes
    whole = RunData.load(d)
    with Spill(d, groups=1_000_003) as sp:
        parts = list(sp.parts())
        assert len(parts) > 3
        by_session: dict[str, int] = {}
        for k, p in enumerate(parts):
            for ev in p.run.history:
                if ev.get("session") is not None:
                    assert by_session.setdefault(str(ev["session"]), k) == k or not p.mine(ev["session"])
        n = sum(len(x) for x in whole.backend_executions.values())
        assert n and sum(len(x) for p in parts for x in p.run.backend_executions.values()) == n
        assert sum(len(p.run.final_states) for p in parts) == len(whole.final_states)
        assert (d / TMP_DIR).is_dir()
    assert not (d / TMP_DIR).exists()


def test_the_pass_leaves_a_temp_area_it_did_not_make(tmp_path: Path) -> None:
    clean_run().build().save(tmp_path)
    mine = tmp_path / TMP_DIR / "someone-elses"
    mine.mkdir(parents=True)
    check_streaming(tmp_path, ["ownership"])
    assert mine.is_dir() and list((tmp_path / TMP_DIR).iterdir()) == [mine]


def test_a_history_it_cannot_group_exactly_is_checked_whole(tmp_path: Path) -> None:
    run = clean_run().build()
    for ev in run.history:
        ev.pop("op", None)  # paired by process, as pair_ops allows: the grouping does not try
    run.save(tmp_path)
    with pytest.raises(NotStreamable):
        Spill(tmp_path)
    got = check_streaming(tmp_path, ["ownership", "no_resurrection"])
    assert got.whole == ["ownership", "no_resurrection"] and "operation id" in got.why_whole
    assert _js(got.verdicts) == _js(check_all(RunData.load(tmp_path), ["ownership", "no_resurrection"]))
    assert not (tmp_path / TMP_DIR).exists()
