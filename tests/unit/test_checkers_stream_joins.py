"""The per-session pass of lost_turns, provisional, token_state and stale_writers gives check_all's verdicts exactly.

These checkers join records to requests (ops.Links) and chats to the server's log lines (ops.ServerOrder), and read
the run's token key (ops.find_token_key): harness/checkers/stream_joins.py proves from the spill that a part's joins
are the whole run's, else they are checked whole, and decides the token key over every session's snapshot as the
whole run does. Compared as JSON with one group and with (about) one group per session over simulation runs against
the known-bad servers each checker exists to catch (docs/coverage.md) and a built run with a provisional record
dropped, so every checker here is invalid on some run; and over built runs: server request ids that collide across
groups (streamed, same verdicts), caller ids and backend rids that do (checked whole, said why), token ids under
another metadata key name, a run cut mid-operation. ~10 s idle (two simulations).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import clean_run, random_clean_run
from test_checkers_stream_more import _sim

from harness.checkers import CHECKERS, check_all
from harness.checkers.ops import find_token_key, pair_ops, snapshots
from harness.checkers.stream import TMP_DIR, SessionChecker, Spill, _group_of, check_streaming
from harness.rundata import RunData

MINE = ["lost_turns", "provisional", "token_state", "stale_writers"]
# (scenario, variant, bug, judged as the default design): known-bad runs of docs/coverage.md (~1-3 s each)
SIMS = [
    ("tool_retry_rollback", None, "drop_record", False),  # lost_turns lost_turn, token_state checkpoints_mismatch
    ("duplicate_inflight_retry", "no_num_assistant_guard", None, False),  # stale_writers double_commit, token_state
]


def _js(verdicts: list[Any]) -> list[str]:
    return [json.dumps(v.to_dict(), sort_keys=True) for v in verdicts]


def _chats(run: RunData) -> dict[str, list[dict[str, Any]]]:
    """Each session's chat completions (ok), in history order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for ev in run.history:
        if ev.get("f") == "chat" and ev.get("type") == "ok":
            out.setdefault(str(ev["session"]), []).append(ev)
    return out


def server_ids_collide() -> RunData:
    """Two sessions' chats get one server request id (8 hex: ~18 pairs in 10^5 sessions), in their answers'
    x-req-id and in their chat_start/chat_done lines, each line naming its own session (of_session scopes them)."""
    run = clean_run().build()
    by = _chats(run)
    s0, s1 = sorted(by)[:2]
    a, b = by[s0][0], by[s1][1]
    old, new = b["headers"]["x-req-id"], a["headers"]["x-req-id"]
    b["headers"] = {**b["headers"], "x-req-id": new}
    for ln in run.server_logs:
        if ln.get("req_id") == old:
            ln["req_id"] = new
    return run


def caller_ids_collide() -> RunData:
    """Two sessions' chats carry one caller request id (a foreign client reusing ids): checked whole."""
    run = clean_run().build()
    by = _chats(run)
    s0, s1 = sorted(by)[:2]
    shared, old = by[s0][-1]["request_id"], by[s1][0]["request_id"]
    for ev in run.history:
        if ev.get("request_id") == old:
            ev["request_id"] = shared
    return run


def rid_executed_elsewhere() -> RunData:
    """A session's record names a backend rid that the backend executed under another session's chat."""
    run = clean_run().build()
    e = run.backend_executions
    k0, k1 = sorted(e)[:2]
    e[k0].append({**e[k1][0], "request_id": e[k0][0]["request_id"]})
    return run


def other_token_key() -> RunData:
    """The token ids under a metadata key no list names (found as the only int list consistent with the records),
    in final states and in collect GET bodies alike, and a second int list that is not consistent."""
    run = clean_run().build()

    def rename(body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            m = body["metadata"]
            m["acc_ids"] = m.pop("token_ids")
            m["lengths"] = [7, 8]
            m["messages"] = [{"role": "user", "content": "u"}]  # [] is an int list consistent with any short prompt

    # a committed prompt no longer than the trim tolerance is a prefix of any list: tolerate none here
    run.scenario.setdefault("checks", {}).setdefault("options", {})["max_trim_tokens"] = 0
    for body in run.final_states.values():
        rename(body)
    for ev in run.history:
        rename(ev.get("body"))
    return run


def provisional_dropped() -> RunData:
    """Retries ran out on a turn but no state keeps its provisional record (provisional: provisional_missing)."""
    run = clean_run().build()

    def drop(body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("records"), list):
            body["records"] = [r for r in body["records"] if r.get("kind") != "provisional"]

    for body in run.final_states.values():
        drop(body)
    for ev in run.history:
        drop(ev.get("body"))
    return run


BUILT = {
    "provisional_dropped": provisional_dropped,
    "server_ids_collide": server_ids_collide,
    "caller_ids_collide": caller_ids_collide,
    "rid_executed_elsewhere": rid_executed_elsewhere,
    "other_token_key": other_token_key,
    "random": lambda: random_clean_run(7).build(),
}
WHOLE = {"caller_ids_collide": "caller request id", "rid_executed_elsewhere": "backend rid"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("stream_joins")
    out = [_sim(tmp, *s) for s in SIMS]
    for name, make in BUILT.items():
        make().save(tmp / name)
        out.append(tmp / name)
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
        assert _js(got.verdicts) == _js(whole), d.name
        if d.name in WHOLE and groups > 1:  # the joins cannot be shown to be the whole run's: checked whole
            assert got.whole == MINE and WHOLE[d.name] in got.why_whole, got.why_whole
        else:
            assert got.streamed == MINE and not got.whole, (d.name, got.why_whole)
        invalid |= {v.checker for v in whole if v.status == "invalid"}
        assert not (d / TMP_DIR).exists()
    assert invalid == set(MINE)  # each checker's known-bad server is caught: no vacuous equivalence


def test_colliding_server_ids_are_in_different_groups_and_scoped_by_session(runs: list[Path]) -> None:
    d = next(r for r in runs if r.name == "server_ids_collide")
    run = RunData.load(d)
    shared = [o for o in pair_ops(run.history) if o.f == "chat"]
    ids: dict[str, set[str]] = {}
    for o in shared:
        ids.setdefault(str(o.req_id), set()).add(str(o.session))
    (pair,) = [s for s in ids.values() if len(s) > 1]
    assert len({_group_of(s, 1_000_003) for s in pair}) == 2
    with Spill(d, groups=1_000_003) as sp:
        assert sp.context is not None and sp.context.joins_whole == ""


def test_the_spill_decides_the_token_key_as_the_whole_run_does(runs: list[Path]) -> None:
    keys = set()
    for d in runs:
        run = RunData.load(d)
        ops = pair_ops(run.history)
        want = find_token_key(run, list(snapshots(run, ops)[0].values()))
        for groups in (1, 1_000_003):
            with Spill(d, groups=groups) as sp:
                assert sp.context is not None and sp.context.token_key == want, d.name
        keys.add(want[0])
    assert {"token_ids", "acc_ids"} <= keys
