"""harness.incident parsing: prefixes, malformed lines counted by reason, merging, filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.incident import Window, WindowError, filter_events, parse_lines, parse_window, read_logs


def line(event: str, ts: float, **fields: object) -> str:
    return json.dumps({"ts": ts, "level": "INFO", "event": event, "pid": 7, "worker_port": 9000, **fields})


def chat(ts: float, req: str, sid: str, outcome: str = "committed", port: int = 9000, pid: int = 7) -> list[str]:
    start = {"ts": ts, "event": "chat_start", "pid": pid, "worker_port": port, "req_id": req, "session_id": sid}
    done = {
        "ts": ts + 0.1,
        "event": "chat_done",
        "pid": pid,
        "worker_port": port,
        "req_id": req,
        "session_id": sid,
        "status": 200,
        "outcome": outcome,
        "proxy_elapsed_ms": 90.0,
        "total_ms": 100.0,
    }
    return [json.dumps(start), json.dumps(done)]


def test_prefix_before_json_is_accepted() -> None:
    lines = [
        "2026-11-26 07:12:01,123 INFO reference_impl: " + line("session_created", 1.0, session_id="s1"),
        "Nov 26 07:12:01 host app[7]: " + line("heartbeat", 2.0, rss_mb=1.0),
    ]
    out = parse_lines(lines, "x.log")
    assert [e.event for e in out.events] == ["session_created", "heartbeat"]
    assert not out.skipped


def test_malformed_lines_are_counted_by_reason_never_raised() -> None:
    lines = [
        "plain text, no json at all",  # neither an object nor a line naming an event
        "[1, 2, 3]",
        '{"ts": 1.0, "event": "chat_done", "req_id": "ab"}',  # no session_id, outcome, status
        '{"event": "heartbeat"}',  # no ts
        '{"ts": "yesterday", "event": "heartbeat"}',
        line("gc_pause", 1.0),
        '{"ts": 1.0, "event": "chat_start", "req_id": "ab", "sess',  # cut mid-line
        '{"ts": 1.0, "event": "chat_start" "oops"}',  # broken but closed
        "\x00\xff garbage {{{",
        "",
        line("heartbeat", 3.0),
    ]
    out = parse_lines(lines, "x.log")
    assert len(out.events) == 1
    assert out.lines == 10  # blank lines are not counted
    assert dict(out.skipped) == {"no_event": 2, "not_json": 2, "missing_fields": 3, "unknown_event": 1, "truncated": 1}
    assert out.examples["truncated"] == "x.log:7"
    s = out.summary()
    assert "10 line(s) read, 1 used" in s and "truncated 1 (first at x.log:7)" in s


def test_merge_orders_by_ts_keys_processes_by_port_and_counts_duplicates(tmp_path: Path) -> None:
    a = tmp_path / "server-0.jsonl"
    b = tmp_path / "server-1.jsonl"
    a.write_text("\n".join([*chat(1.0, "r1", "s1"), *chat(1.5, "r3", "s1")]) + "\n")
    b.write_text("\n".join([*chat(1.2, "r1", "s2", port=9001, pid=8), chat(1.0, "r1", "s1")[0]]) + "\n")
    out = read_logs([a, b])
    assert [(e.event, e.get("req_id"), e.process) for e in out.events][:3] == [
        ("chat_start", "r1", "port:9000"),
        ("chat_done", "r1", "port:9000"),
        ("chat_start", "r1", "port:9001"),
    ]
    assert [e.ts for e in out.events] == sorted(e.ts for e in out.events)
    assert out.skipped["duplicate"] == 1


def test_restarted_process_keeps_its_slot() -> None:
    lines = chat(1.0, "r1", "s1", pid=7) + chat(2.0, "r2", "s2", pid=99)  # same port, new pid
    out = parse_lines(lines, "x")
    assert {e.process for e in out.events} == {"port:9000"}
    nopid = parse_lines(['{"ts": 1, "event": "session_created", "pid": 5, "session_id": "s"}'], "x")
    assert nopid.events[0].process == "pid:5"


def test_window_forms() -> None:
    assert parse_window("+0.5..+1") == Window(0.5, 1.0, True)
    assert parse_window("100..200") == Window(100.0, 200.0, False)
    assert parse_window("..200").start is None
    w = parse_window("2026-11-26T07:12:01Z..")
    assert w.start is not None and w.start > 1.7e9 and w.end is None
    for bad in ("100", "abc..def", "+1..200", "5..1"):
        with pytest.raises(WindowError):
            parse_window(bad)


def test_window_and_session_filters_keep_a_chat_together() -> None:
    lines = [
        line("session_created", 10.0, session_id="aaaa1111"),
        line("session_created", 10.0, session_id="bbbb2222"),
        *chat(10.5, "r1", "aaaa1111"),
        *chat(10.95, "r2", "aaaa1111"),  # starts inside, ends at 11.05: outside
        *chat(10.6, "r3", "bbbb2222"),
        *chat(12.0, "r4", "aaaa1111"),
        line("heartbeat", 10.7, rss_mb=1.0),
    ]
    ev = parse_lines(lines, "x").events
    ev.sort(key=lambda e: e.ts)
    got = filter_events(ev, ["AAAA"], parse_window("+0.4..+1"))
    assert [(e.event, e.get("req_id")) for e in got] == [
        ("chat_start", "r1"),
        ("chat_done", "r1"),
        ("chat_start", "r2"),
        ("chat_done", "r2"),
    ]
    everything = filter_events(ev, (), parse_window("+0.4..+1"))
    assert any(e.event == "heartbeat" for e in everything)
    assert filter_events([], ["x"]) == []
