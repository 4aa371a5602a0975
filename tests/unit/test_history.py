"""The history recorder: op ids, exactly one completion, times from the injected clock."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harness.history import History, HistoryError, completions, operations, read_history, write_history


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1e9 + self.t


def test_invoke_complete_pairs_and_relative_times() -> None:
    clock = FakeClock()
    h = History(clock)
    op = h.invoke(process="agent-0", f="chat", session="s", server="http://x", turn=0, attempt=0, request_id="r1")
    clock.t += 0.25
    done = h.ok(op, status=200)
    assert [e["index"] for e in h.events] == [0, 1]
    assert h.events[0]["time"] == 0.0 and done["time"] == 0.25
    assert done["type"] == "ok" and done["op"] == op and done["request_id"] == "r1" and done["turn"] == 0
    assert done["intended"] == 0.0


def test_intended_defaults_to_invoke_time_and_can_be_earlier() -> None:
    clock = FakeClock()
    h = History(clock)
    h.now()  # the run starts
    clock.t += 2
    op = h.invoke(process="p", f="create", intended=0.5)
    assert h.events[0]["intended"] == 0.5 and h.events[0]["time"] == 2.0
    op2 = h.invoke(process="p", f="get")
    assert h.events[-1]["intended"] == h.events[-1]["time"]
    h.ok(op2)
    h.info(op, error="timeout")


def test_exactly_one_completion() -> None:
    h = History(FakeClock())
    op = h.invoke(process="p", f="get")
    h.fail(op, status=404)
    with pytest.raises(HistoryError):
        h.ok(op)
    with pytest.raises(HistoryError):
        h.complete(99, "ok")


def test_unknown_function_and_type_rejected() -> None:
    h = History(FakeClock())
    with pytest.raises(HistoryError):
        h.invoke(process="p", f="launch")
    op = h.invoke(process="p", f="get")
    with pytest.raises(HistoryError):
        h.complete(op, "maybe")  # type: ignore[arg-type]


def test_close_open_marks_unknown() -> None:
    h = History(FakeClock())
    a = h.invoke(process="p", f="chat")
    b = h.invoke(process="q", f="chat")
    h.ok(a)
    assert h.open_ops == [b]
    assert h.close_open("run ended") == 1
    assert h.events[-1]["type"] == "info" and h.events[-1]["error"] == "run ended"


def test_event_is_invoke_plus_ok() -> None:
    h = History(FakeClock())
    h.event(process="nemesis", f="chaos", value={"action": "kill"})
    assert [e["type"] for e in h.events] == ["invoke", "ok"]
    assert h.events[1]["value"] == {"action": "kill"}


def test_sink_streams_and_reader_round_trips(tmp_path: Path) -> None:
    sink = io.StringIO()
    h = History(FakeClock(), sink=sink)
    op = h.invoke(process="p", f="delete", session="s")
    h.ok(op, status=204)
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert lines == h.events
    path = tmp_path / "history.jsonl"
    write_history(h.events, path)
    path.write_text(path.read_text() + '{"torn": ')  # a crashed run's last line
    back = read_history(path)
    assert back == h.events
    pairs = list(operations(back))
    assert len(pairs) == 1 and pairs[0][1] is not None and pairs[0][1]["status"] == 204
    assert completions(back, "delete")[0]["type"] == "ok"


def test_save_does_not_write_again_a_history_the_run_appended(tmp_path: Path) -> None:
    from harness.rundata import RUN_FILES, RunData

    clock = FakeClock()
    path = tmp_path / RUN_FILES["history"]
    with path.open("w") as sink:
        h = History(clock, sink=sink)
        op = h.invoke(process="agent-0", f="chat", session="s\u00e9", server="http://x", turn=0, request_id="r")
        clock.t += 1.0
        h.ok(op, status=200, body={"k": [1, 2.5, None, "\ud800"]})
        h.invoke(process="agent-1", f="create", server="http://x")
        h.close_open("run ended")
    written = path.read_bytes()
    inode = path.stat().st_ino
    RunData(scenario={}, history=h.events).save(tmp_path)
    assert path.stat().st_ino == inode and path.read_bytes() == written  # found there, not rewritten
    h.events[1]["status"] = 500  # changed after it was appended: the file is rewritten with it
    RunData(scenario={}, history=h.events).save(tmp_path)
    assert path.stat().st_ino != inode and json.loads(path.read_bytes().splitlines()[1])["status"] == 500
    RunData(scenario={}, history=h.events[:2]).save(tmp_path)  # fewer events than the file holds
    assert len(path.read_bytes().splitlines()) == 2


def test_sink_line_is_json_dumps_sorted() -> None:
    """The sink's prebuilt C encoder writes exactly ``json.dumps(ev, sort_keys=True, default=str)`` (#15)."""
    import json

    from harness.history import _encode_line

    class Odd:
        def __str__(self) -> str:
            return "odd"

    events = [
        {"b": 1, "a": {"z": [1.5, None, True], "y": ()}, "é": 'ü\u2028\x00"\\', "n": float("nan")},
        {"x": Odd(), "s": b"raw", "f": 0.1 + 0.2},
        {2: "int key", 1: None},
        {"inf": float("-inf"), "nested": {"k": {"j": {}}}, "big": 10**30},
    ]
    for ev in events:
        assert _encode_line(ev) == json.dumps(ev, sort_keys=True, default=str)


def test_history_not_kept_writes_the_same_lines_and_holds_only_open_ops(tmp_path: Path) -> None:
    """``keep=False`` (a live run, issue 13): the sink gets the same bytes, nothing ended stays in memory."""

    def record(h: History, clock: FakeClock) -> None:
        for i in range(3):
            op = h.invoke(process=f"agent-{i}", f="create", server="http://x")
            clock.t += 0.5
            h.ok(op, session=f"s{i}", status=201, body={"k": [i, 2.5, None, "\ud800"]})
        h.invoke(process="agent-9", f="chat", session="s1", server="http://x", turn=0)
        h.close_open("run ended")

    kept, streamed = io.StringIO(), io.StringIO()
    seen: list[dict[str, object]] = []
    ca, cb = FakeClock(), FakeClock()
    a = History(ca, sink=kept)
    b = History(cb, sink=streamed, keep=False, observe=seen.append)
    record(a, ca)
    record(b, cb)
    assert streamed.getvalue() == kept.getvalue() and seen == a.events
    assert b.events == [] and b.count == a.count == 8 and b.open_ops == []
    with pytest.raises(ValueError, match="sink"):
        History(FakeClock(), keep=False)


def test_final_states_file_writes_what_json_dumps_writes(tmp_path: Path) -> None:
    from harness.rundata import FinalStatesFile

    states: dict[str, object] = {
        "b" * 32: {"records": [{"input_ids": [1, 2], "lp": -0.25}], "é": "\ud800", "n": None},
        "a" * 32: None,
        "c": {"nested": {"z": 1, "a": [True, 1e300]}},
    }
    f = FinalStatesFile(tmp_path)
    for sid, st in states.items():
        f[sid] = st  # type: ignore[assignment]
    f["c"] = {"again": 1}  # the last state of a session wins, as in a dict
    states["c"] = {"again": 1}
    f.write(tmp_path / "final_states.json")
    assert (tmp_path / "final_states.json").read_text() == json.dumps(states, sort_keys=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_states.json"]  # the spill left nothing
    e = FinalStatesFile(tmp_path)
    e.write(tmp_path / "empty.json")
    assert (tmp_path / "empty.json").read_text() == json.dumps({}, sort_keys=True)
