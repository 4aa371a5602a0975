"""The per-session pass of liveness, log_consistency and passthrough gives check_all's verdicts exactly.

These three read other sessions' data (harness/checkers/stream_index.py): the client
clock every process's chats bound, a chat of *another* session that never reached
the process a timed-out DELETE waited on, a process's in-flight count over every
session's lines. The runs put that evidence in other sessions than the one judged,
so with (about) one group per session it comes from other parts; each checker is
invalid on some run and unknown on another (no vacuous equivalence). Builder runs:
no simulation, about a second in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import S0, S1, RunBuilder, clean_run
from test_checkers_passthrough import SRV, Tick
from test_liveness_clock import lost_chat_beside, skewed, timed_out_delete

from harness.checkers import CHECKERS, check_all
from harness.checkers.stream import TMP_DIR, Part, SessionChecker, Spill, check_streaming
from harness.checkers.stream_index import LogIndex
from harness.history import History
from harness.rundata import RunData

MINE = ["liveness", "log_consistency", "passthrough"]


def _js(verdicts: list[Any]) -> list[str]:
    return [json.dumps(v.to_dict(), sort_keys=True) for v in verdicts]


def _liveness_runs() -> list[RunData]:
    out = [
        skewed(timed_out_delete(9.7), stall_s=1.0),  # served in time by the clock: unknown
        skewed(timed_out_delete(30.0)),  # served late: delete_timeout
        skewed(timed_out_delete(20.0, bound=30.0)),  # given up before the bound, served within it: unknown
        skewed(timed_out_delete(40.0, bound=30.0)),  # ... served surely after it: delete_timeout
    ]
    b = timed_out_delete(None)
    lost_chat_beside(b)  # another session's chat lost on the way to the process: unknown
    out.append(skewed(b))
    b = timed_out_delete(None)
    lost_chat_beside(b, logged=True)  # that chat did arrive: delete_timeout
    out.append(skewed(b))
    b = timed_out_delete(None)
    lost_chat_beside(b)
    d = next(e for e in b.events if e["f"] == "delete" and e["type"] == "invoke")
    rid = next(e for e in reversed(b.events) if e["f"] == "chat" and e["type"] == "info")["request_id"]
    g = b.invoke("get", at=d["time"], session=b.create(S1), request_id=rid)  # its request id is not its own
    b.complete(g, status=200, at=d["time"] + 0.1)
    out.append(skewed(b))
    b = RunBuilder()  # a slow chat and a slow DELETE, another session's chats around them, two processes
    b.scenario["checks"]["liveness_bound_s"] = 1.0
    a, c = b.create(), b.create(S1)
    b.chat(a, 0, t0=b.tick(), t1=b.t + 0.2)
    b.chat(c, 0, t0=b.tick(), t1=b.t + 3.0, server=S1)
    b.delete(a, at=b.tick())
    b.events[-1]["time"] += 2.5
    out.append(b.build())
    return out


def _log_run() -> RunData:
    """log_consistency's rules over lines of several sessions: two sessions' chats sharing a server request id,
    lines that name no session (with a session's lines of their id, and alone), a drifting in-flight count on one
    process whose other sessions' lines are in other parts, a heartbeat that disagrees, bad buckets, a lost line."""
    b = clean_run()
    b.heartbeat(S0, inflight=3)
    run = b.build()
    logs = run.server_logs
    chat_lines = [ln for ln in logs if ln["event"] in ("chat_start", "chat_done")]
    by_session: dict[str, list[dict[str, Any]]] = {}
    for ln in chat_lines:
        by_session.setdefault(ln["session_id"], []).append(ln)
    a, c, e = sorted(by_session)[:3]
    shared, moved = by_session[a][0]["req_id"], by_session[c][0]["req_id"]
    for ln in by_session[c][:2]:  # c's first chat gets a's first request id: lines and the client's header
        ln["req_id"] = shared
    for ev in run.history:
        if (ev.get("headers") or {}).get("x-req-id") == moved:
            ev["headers"] = {**ev["headers"], "x-req-id": shared}
    del by_session[a][2]["session_id"]  # a line naming no session, beside its id's lines naming a
    done = by_session[c][3]
    done.update(tokenize_in_ms=-3.0, total_ms=done["total_ms"] + 2000.0)  # negative; longer than the client waited
    logs.remove(by_session[e][-1])  # e's last chat_done lost: missing_chat_done and an unlogged request
    for ln in by_session[e][-3:-1]:
        ln["inflight_now"] += 1  # the counter drifts from e's last chats on
    logs.append({**by_session[a][0], "req_id": "0dd", "ts": logs[-1]["ts"] + 1.0})  # alone, naming no session
    del logs[-1]["session_id"]
    return run


def _passthrough_run() -> RunData:
    h = History(Tick())
    for sid in ("v", "w"):
        op = h.invoke(process="fuzzer", f="create", server=SRV)
        h.ok(op, status=200, session=sid)
    for sid, method, tail, status in [
        ("v", "GET", "v1/models", 403),  # refused on a live session
        ("w", "GET", "./health", 200),
        ("w", "POST", "generate", 404),  # refused too, in another session
        ("v", "GET", "admin/plan", 404),  # not judged
    ]:
        op = h.invoke(
            process="fuzzer", f="fuzz", session=sid, server=SRV, method=method, path=f"/sessions/{sid}/{tail}"
        )
        (h.ok if 200 <= status < 300 else h.fail)(op, status=status)
    return RunData(scenario={}, history=h.events)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("stream_whole")
    built = [*_liveness_runs(), _log_run(), _passthrough_run(), clean_run().build()]
    out = []
    for k, run in enumerate(built):
        d = tmp / f"run{k}"
        run.save(d)
        out.append(d)
    return out


def test_these_checkers_have_a_per_session_step() -> None:
    assert all(isinstance(CHECKERS[n], SessionChecker) for n in MINE)


@pytest.mark.parametrize("groups", [1, 1_000_003], ids=["one_group", "group_per_session"])
def test_the_per_session_pass_gives_the_whole_run_verdicts(runs: list[Path], groups: int) -> None:
    seen: dict[str, set[str]] = {n: set() for n in MINE}
    for d in runs:
        whole = check_all(RunData.load(d), MINE)
        got = check_streaming(d, MINE, groups=groups)
        assert got.streamed == MINE and not got.whole, got.why_whole
        assert _js(got.verdicts) == _js(whole), d.name
        for v in whole:
            seen[v.checker].add(v.status)
        assert not (d / TMP_DIR).exists()
    # each checker is caught invalid on some run, and liveness's clock-settled DELETEs are unknown on others
    assert all("invalid" in s for s in seen.values()), seen
    assert "unknown" in seen["liveness"]


def test_the_index_of_a_spill_is_the_loaded_runs(runs: list[Path]) -> None:
    """The index a spill builds from the folder answers as the one ``Part.whole`` builds from the loaded run."""
    for d in runs:
        run = RunData.load(d)
        whole = Part.whole(run).log_index()
        with Spill(d, groups=3) as sp:
            mine = next(sp.parts()).log_index()
        callers = {str(ln.get("caller_request_id")) for ln in run.server_logs} | {"nobody", ""}
        reqs = {str(ln.get("req_id")) for ln in run.server_logs} | {"cafe"}
        for k in sorted(callers):
            assert whole.start_by_caller(k) == mine.start_by_caller(k) and whole.logged(k) == mine.logged(k)
        for k in sorted(reqs):
            assert whole.start_by_req(k) == mine.start_by_req(k)
        for port in (9001, 9002, None):
            assert [(p, list(ts)) for p, ts in whole.arrivals(port)] == [(p, list(ts)) for p, ts in mine.arrivals(port)]


def test_codes_are_exact() -> None:
    ix = LogIndex([])
    hexes = ["0", "00", "a", "0a", "ffffffffffffffff"[:15], "deadbeef"]
    codes = [ix.intern(s) for s in [*hexes, "DEADBEEF", "", "x-1", "deadbeef" * 2]]
    assert len(set(codes)) == len(codes) and None not in codes
    assert ix.code("never-seen") is None and ix.code("DEADBEEF") == codes[len(hexes)]
