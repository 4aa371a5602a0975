"""harness.serverlog: one parser for JSON and key=value log lines, names mapped, bad lines counted."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pytest

from harness.scenario import ScenarioError, parse_scenario
from harness.serverlog import LogConfig, LogConfigError, lines_of_run, parse_line, parse_lines, read_server_logs

PREFIX = "2026-12-01 09:30:00,123 INFO foreign.sessions pid=4242 "
T0 = datetime(2026, 12, 1, 9, 30, 0, 123000).timestamp()  # zone-less prefixes are local time, as asctime


def ok(line: str, config: LogConfig | None = None) -> dict[str, object]:
    ev, reason, _ = parse_line(line, config)
    assert ev is not None, f"{line!r} skipped: {reason}"
    return ev


def skipped(line: str, config: LogConfig | None = None) -> str | None:
    ev, reason, _ = parse_line(line, config)
    assert ev is None, ev
    return reason


def test_python_logging_kv_line_is_read_with_prefix_facts_and_types() -> None:
    ev = ok(
        PREFIX + "chat_done req_id=01234567 session_id=00ff status=200 outcome=committed lock_wait_ms=0.010 "
        "tokenize_in_ms=1.5 proxy_elapsed_ms=300 tokenize_out_ms=0.5 total_ms=302.125 inflight_now=0 "
        "caller_request_id=-"
    )
    assert ev["event"] == "chat_done" and ev["level"] == "INFO" and ev["pid"] == 4242
    assert ev["ts"] == pytest.approx(T0)
    # ids stay text even when they spell a number; the rest are numbers; "-" is no value
    assert ev["req_id"] == "01234567" and ev["session_id"] == "00ff"
    assert ev["status"] == 200 and ev["total_ms"] == 302.125 and ev["proxy_elapsed_ms"] == 300
    assert ev["caller_request_id"] is None


@pytest.mark.parametrize(
    ("line", "level", "pid"),
    [
        ("2026-12-01 09:30:00,123 - app - WARNING - chat_start req_id=a1 session_id=s", "WARNING", None),
        ("[2026-12-01 09:30:00,123] [INFO] app[77]: chat_start req_id=a1 session_id=s", "INFO", 77),
        ("2026-12-01T09:30:00.123 INFO:app:chat_start req_id=a1 session_id=s pid=9", "INFO", 9),
        ("2026-12-01 09:30:00.123 ERROR app pid=12 event=chat_start req_id=a1 session_id=s", "ERROR", 12),
    ],
)
def test_logging_prefixes_of_many_shapes(line: str, level: str, pid: int | None) -> None:
    ev = ok(line)
    assert ev["event"] == "chat_start" and ev["req_id"] == "a1" and ev["level"] == level and ev.get("pid") == pid
    assert ev["ts"] == pytest.approx(T0)


def test_zoned_and_epoch_times_and_a_ts_field() -> None:
    assert ok("2026-12-01T09:30:00.5Z INFO chat_start req_id=a")["ts"] == pytest.approx(1796117400.5)
    assert ok("2026-12-01T10:30:00+01:00 INFO chat_start req_id=a")["ts"] == pytest.approx(1796117400.0)
    assert ok("1796117400.25 INFO app: chat_start req_id=a")["ts"] == pytest.approx(1796117400.25)
    assert ok(PREFIX + "chat_start ts=17.5 req_id=a")["ts"] == 17.5  # the line's own ts beats the prefix


def test_quoted_values_with_spaces_and_escapes() -> None:
    ev = ok(PREFIX + r'chat_done req_id="a b" error="said \"no\" \\ twice" url=' + "'it\\'s' outcome=\"12\"")
    assert ev["req_id"] == "a b" and ev["error"] == 'said "no" \\ twice' and ev["url"] == "it's"
    assert ev["outcome"] == "12"  # quoted: text
    assert ok(PREFIX + 'heartbeat note="7" sessions="3"')["note"] == "7"  # quoted text stays text
    assert ok(PREFIX + 'heartbeat sessions="3"')["sessions"] == 3  # ... unless a number belongs there


def test_truncated_and_unusable_lines_are_reasons_not_errors() -> None:
    assert skipped(PREFIX + 'chat_done req_id=a error="connection reset by pe') == "truncated"
    assert skipped('{"ts": 1, "event": "chat_done", "req_id": "a", "sess') == "truncated"
    assert skipped("INFO:app:chat_done req_id=a total_ms=3") == "no_time"  # %(asctime)s missing
    assert skipped("2026-12-01 09:30:00,123 INFO uvicorn: Application startup complete.") == "no_event"
    assert skipped('2026-12-01 INFO app: {"ts": 1, "event": "x" "y"}') == "not_json"
    assert skipped("\x00\xff garbage") == "no_event"


def test_json_line_after_a_prefix_takes_the_prefix_pid_and_time_only_when_missing() -> None:
    ev = ok(PREFIX + json.dumps({"event": "heartbeat", "sessions": 2}))
    assert ev["pid"] == 4242 and ev["ts"] == pytest.approx(T0) and ev["sessions"] == 2
    ev = ok(PREFIX + json.dumps({"ts": 5.0, "pid": 1, "event": "heartbeat"}))
    assert ev["pid"] == 1 and ev["ts"] == 5.0
    # a key=value line whose value holds braces is still key=value
    assert ok(PREFIX + 'chat_done req_id=a error={"x":1}')["error"] == '{"x":1}'


def test_free_text_warnings_by_default_pattern() -> None:
    ev = ok(
        "2026-12-01 09:30:00,123 WARNING foreign.sessions pid=7 state_changed_during_proxy: session 9c01 "
        "moved on while request r1 was at the backend (worker_port=8001 inflight_chat_count=2 "
        "caller_request_id=x-1 proxy_elapsed_ms=12.5 expected_num_assistant=1 actual_num_assistant=2); skipped"
    )
    assert ev["event"] == "state_changed_during_proxy" and ev["level"] == "WARNING"
    assert (ev["session_id"], ev["req_id"], ev["caller_request_id"]) == ("9c01", "r1", "x-1")
    assert (ev["worker_port"], ev["expected_num_assistant"], ev["actual_num_assistant"]) == (8001, 1, 2)
    ev = ok(PREFIX + "pass-through to http://127.0.0.1:3/v1/x failed: ConnectError (proxy_transport_error)")
    assert ev["event"] == "proxy_transport_error" and ev["url"] == "http://127.0.0.1:3/v1/x"


def test_configured_patterns_name_events_in_free_text() -> None:
    cfg = LogConfig(
        patterns={
            "state_changed_during_proxy": r"lost the race for (?P<session_id>\w+)",
            "chat_done": r"request (?P<req_id>\w+) answered (?P<status>\d+) in (?P<total_ms>[\d.]+) ms",
        }
    )
    ev = ok(PREFIX + "turn lost the race for abc; not committed", cfg)
    assert ev["event"] == "state_changed_during_proxy" and ev["session_id"] == "abc"
    ev = ok(PREFIX + "request 0042 answered 200 in 12.5 ms", cfg)
    assert (ev["event"], ev["req_id"], ev["status"], ev["total_ms"]) == ("chat_done", "0042", 200, 12.5)
    assert skipped(PREFIX + "turn lost the race for abc") == "no_event"  # without the pattern: not an event


def test_mapping_table_renames_fields_and_events_for_json_and_kv() -> None:
    cfg = LogConfig(
        fields={"request_id": "req_id", "latency_ms": "total_ms", "sid": "session_id", "time": "ts"},
        events={"request_finished": "chat_done"},
    )
    ev = ok(PREFIX + "request_finished request_id=7 sid=s latency_ms=12.5 total_ms=99", cfg)
    assert (ev["event"], ev["req_id"], ev["session_id"], ev["total_ms"]) == ("chat_done", "7", "s", 12.5)
    ev = ok(json.dumps({"time": "2026-12-01T09:30:00Z", "event": "request_finished", "request_id": 7}), cfg)
    assert ev["event"] == "chat_done" and ev["req_id"] == "7" and ev["ts"] == pytest.approx(1796117400.0)


def test_format_json_and_kv_refuse_the_other() -> None:
    kv = PREFIX + "chat_start req_id=a session_id=s"
    js = json.dumps({"ts": 1.0, "event": "chat_start", "req_id": "a"})
    assert skipped(kv, LogConfig(format="json")) == "not_json"
    assert skipped(js, LogConfig(format="kv")) == "no_event"
    assert ok(kv, LogConfig(format="kv"))["req_id"] == "a" and ok(js, LogConfig(format="json"))["req_id"] == "a"


def test_real_python_logging_output_round_trips(tmp_path: Path) -> None:
    """What a server printing through ``logging`` writes (the foreign server's format) reads back whole."""
    path = tmp_path / "server.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"))
    log = logging.getLogger("test_serverlog.roundtrip")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("server starting on 127.0.0.1:8000")
        log.info("chat_start req_id=%s session_id=%s inflight_now=%d", "00000001", "s1", 1)
        log.warning("state_changed_during_proxy: session %s moved on while request %s was away", "s1", "00000001")
        log.info("chat_done req_id=%s session_id=%s status=%d outcome=%s total_ms=%.3f", "00000001", "s1", 200, "ok", 3)
    finally:
        log.removeHandler(handler)
        handler.close()
    lines, stats = read_server_logs([path])
    assert [ln["event"] for ln in lines] == ["chat_start", "state_changed_during_proxy", "chat_done"]
    assert {ln["pid"] for ln in lines} == {__import__("os").getpid()}
    assert lines[2]["req_id"] == "00000001" and lines[2]["total_ms"] == 3.0
    assert stats.lines == 4 and stats.used == 3 and dict(stats.skipped) == {"no_event": 1}
    assert "4 line(s) read, 3 used" in stats.summary() and "no_event 1 (first at server.log:1)" in stats.summary()


def test_read_merges_files_by_time_counts_duplicates_and_reads_from_offsets(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("INFO chat_start ts=1.0 req_id=r1 session_id=s\nINFO chat_done ts=3.0 req_id=r1 session_id=s\n")
    b.write_text("INFO heartbeat ts=2.0 sessions=1\nINFO chat_start ts=1.0 req_id=r1 session_id=s\n")
    lines, stats = read_server_logs([a, b])
    assert [ln["ts"] for ln in lines] == [1.0, 2.0, 3.0] and stats.skipped["duplicate"] == 1
    lines, _ = read_server_logs([a], offsets={str(a): len(a.read_text().splitlines()[0]) + 1})
    assert [ln["event"] for ln in lines] == ["chat_done"]
    # two equal lines in one file are two events (two warnings in one millisecond); a merged
    # file beside the per-process one adds nothing
    warn = PREFIX + "proxy_transport_error: backend call failed url=http://127.0.0.1:1/x elapsed_ms=1.0\n"
    one, merged = tmp_path / "one.log", tmp_path / "merged.log"
    one.write_text(warn * 2)
    merged.write_text(warn * 2 + PREFIX + "heartbeat sessions=0\n")
    lines, stats = read_server_logs([one, merged])
    assert [ln["event"] for ln in lines].count("proxy_transport_error") == 2 and stats.skipped["duplicate"] == 2


def test_lines_of_run_keeps_the_runs_sessions_and_heartbeats_between() -> None:
    shapes = ["heartbeat", "chat_start session_id=mine", "heartbeat", "chat_start session_id=other"]
    shapes += ["chat_done session_id=mine", "heartbeat"]
    lines = [ok(f"INFO {e} ts={t}") for t, e in enumerate(shapes, 1)]
    assert [ln["ts"] for ln in lines_of_run(lines, {"mine"})] == [2, 3, 5]


def test_parse_lines_never_raises_on_hostile_content() -> None:
    hostile = ["{" * 100_000, "a=" * 5000, '"' * 999, "chat_done " + "x=" * 300, "\ud800 chat_start", "}{"]
    events, stats = parse_lines(hostile, "h.log")
    assert stats.lines == len(hostile) and len(events) + sum(stats.skipped.values()) == len(hostile)


def test_config_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(LogConfigError) as ei:
        LogConfig.from_mapping({"patterns": {"chat_done": "(unclosed"}})
    assert ei.value.key == "patterns.chat_done"
    cases = [
        ({"format": "yaml"}, "target.logs.format", "auto"),
        ({"fields": {"request_id": 3}}, "target.logs.fields", "request_id"),
        ({"fields": {"request_id": ""}}, "target.logs.fields.request_id", "empty"),
        ({"patterns": {"chat_done": "(x"}}, "target.logs.patterns.chat_done", "regular expression"),
        ({"fromat": "kv"}, "target.logs.fromat", "allowed here"),
    ]
    for logs, key, words in cases:
        with pytest.raises(ScenarioError) as se:
            parse_scenario({"name": "x", "target": {"logs": logs}}, "s.toml")
        assert se.value.key == key and words in se.value.message and "s.toml" in str(se.value), se.value
    sc = parse_scenario({"name": "x", "target": {"logs": {"format": "kv", "fields": {"request_id": "req_id"}}}})
    assert sc.target.logs == LogConfig(format="kv", fields={"request_id": "req_id"})
    assert LogConfig.from_mapping(sc.to_plain()["target"]["logs"]) == sc.target.logs  # scenario.json round trip


def test_reference_server_text_format_reads_back_as_its_json_lines() -> None:
    """``--log-format text`` (reference_impl.logs.TextLineSink) on real events: same events, ms-precise time."""
    from reference_impl.logs import TextLineSink

    sink = TextLineSink()
    root = Path(__file__).resolve().parents[2] / "scenarios" / "incidents"
    originals = [json.loads(x) for x in (root / "dup_retry_race.log.jsonl").read_text().splitlines() if x.strip()]
    assert {"chat_start", "chat_done", "state_changed_during_proxy", "heartbeat"} <= {o["event"] for o in originals}
    warning = {"ts": 1.0, "level": "WARNING", "event": "proxy_transport_error", "pid": 3, "worker_port": 9}
    warning.update(req_id="00000012", session_id="5e55", url="http://127.0.0.1:1/v1/chat/completions", error="x y")
    for original in [*originals, warning]:
        text = sink.format(original)
        assert not text.lstrip().startswith("{") and f"pid={original['pid']}" in text
        back = ok(text)
        assert back["ts"] == pytest.approx(original["ts"], abs=1e-3), text
        assert {k: v for k, v in back.items() if k != "ts"} == {k: v for k, v in original.items() if k != "ts"}, text


def test_a_port_said_only_in_chat_start_is_given_to_the_processes_other_lines(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    log.write_text(
        PREFIX
        + "chat_start req_id=a session_id=s worker_port=8001 inflight_now=1\n"
        + PREFIX
        + "chat_done req_id=a session_id=s status=200 outcome=committed total_ms=3\n"
        + "2026-12-01 09:30:00,124 INFO app pid=99 chat_done req_id=b session_id=t status=200\n"
    )
    lines, _ = read_server_logs([log])
    assert [ln.get("worker_port") for ln in lines] == [8001, 8001, None]  # pid 99 never said its port


def test_server_log_flag_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.checkers.__main__ import main as check_main
    from harness.runner.cli import main as run_main

    sc = Path(__file__).resolve().parents[2] / "scenarios" / "delete_during_proxy.toml"
    missing = str(tmp_path / "nope.log")
    assert run_main([str(sc), "--server-log", missing, "--out", str(tmp_path / "o")]) == 2
    assert "--server-log: no such file" in capsys.readouterr().err
    log = tmp_path / "s.log"
    log.write_text("")
    assert run_main([str(sc), "--server-log", str(log), "--mode", "sim", "--out", str(tmp_path / "o")]) == 2
    assert "needs --mode live" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.jsonl").write_text("")
    assert check_main([str(run_dir), "--server-log", missing]) == 2
    assert "--server-log: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was written
