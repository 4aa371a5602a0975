"""harness.incident reconstruction and scenario writing: turns, overlaps, backend faults, round trip, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.incident import abort_after_ms, backend_fault, parse_lines, reconstruct, scenario_text
from harness.incident.cli import main as incident_main
from harness.scenario import ScenarioError, load_scenario, parse_scenario

T0 = 1_795_000_000.0


def ev(event: str, t: float, port: int = 9000, **f: Any) -> str:
    return json.dumps({"ts": T0 + t, "level": "INFO", "event": event, "pid": port - 8000, "worker_port": port, **f})


def chat(t: float, dur: float, req: str, sid: str, outcome: str, *, port: int = 9000, **f: Any) -> list[str]:
    done = {
        "status": 200,
        "proxy_elapsed_ms": dur * 1000 - 2,
        "total_ms": dur * 1000,
        "prompt_tokens": 10,
        "completion_tokens": 5,
    }
    done.update(f)
    return [
        ev("chat_start", t, port, req_id=req, session_id=sid, caller_request_id="c-" + req),
        ev(
            "chat_done",
            t + dur,
            port,
            req_id=req,
            session_id=sid,
            caller_request_id="c-" + req,
            outcome=outcome,
            **done,
        ),
    ]


def incident_lines() -> list[str]:
    return [
        ev("session_created", 0.0, session_id="s1"),
        *chat(0.01, 0.10, "a1", "s1", "committed"),
        *chat(0.02, 0.12, "a2", "s1", "state_changed_skip"),  # duplicate of turn 0, loses
        ev("state_changed_during_proxy", 0.14, req_id="a2", session_id="s1", expected_num_assistant=0),
        *chat(0.20, 0.05, "a3", "s1", "aborted", prompt_tokens=30, completion_tokens=3),
        *chat(0.26, 0.05, "a4", "s1", "committed", prompt_tokens=30),
        *chat(0.32, 0.10, "a5", "s1", "closing_skip", prompt_tokens=50),
        ev("session_deleted", 0.35, session_id="s1"),
        ev("session_created", 0.0, port=9001, session_id="s2"),
        *chat(0.05, 0.002, "b1", "s2", "transport_error", port=9001, status=502, proxy_elapsed_ms=1.5),
        ev("proxy_transport_error", 0.052, port=9001, req_id="b1", session_id="s2", elapsed_ms=1.5),
        *chat(0.06, 0.03, "b2", "s2", "upstream_error", port=9001, status=503),
        *chat(0.30, 0.001, "g1", "ghost", "not_found", status=404),
    ]


def test_reconstruct_turns_attempts_overlaps_and_processes() -> None:
    inc = reconstruct(sorted(parse_lines(incident_lines(), "x").events, key=lambda e: e.ts))
    assert [s.session for s in inc.sessions] == ["s1", "s2", "ghost"]
    assert inc.processes == ["port:9000", "port:9001"]
    s1 = inc.sessions[0]
    assert [(r.req_id, r.turn, r.attempt) for r in s1.requests] == [
        ("a1", 0, 0),
        ("a2", 0, 1),
        ("a3", 1, 0),
        ("a4", 1, 1),
        ("a5", 2, 0),
    ]
    assert s1.requests[0].overlaps == ["a2"] and s1.requests[2].overlaps == []
    assert s1.deleted_ts == [T0 + 0.35]
    assert not inc.sessions[2].needs_create  # only ever not_found: it never existed
    assert [o for _, o, _ in inc.outcome_sequence()][:3] == ["transport_error", "upstream_error", "committed"]


def test_backend_fault_per_outcome() -> None:
    inc = reconstruct(sorted(parse_lines(incident_lines(), "x").events, key=lambda e: e.ts))
    faults = {r.req_id: backend_fault(r) for r in inc.requests()}
    assert faults["a1"] == "spike;ms=98"
    assert faults["a3"] == "spike;ms=1050"  # a long answer, aborted from outside at the original moment
    assert abort_after_ms(next(r for r in inc.requests() if r.req_id == "a3")) == 50.0
    assert faults["b1"] == "reset"  # 1.5 ms: a reset, not a hang
    assert faults["b2"] == "http_503"
    assert faults["g1"] is None


def test_written_scenario_round_trips_through_load_scenario(tmp_path: Path) -> None:
    inc = reconstruct(sorted(parse_lines(incident_lines(), "x").events, key=lambda e: e.ts))
    text = scenario_text(inc, name="synthetic", sources=["x.log"], note="A test incident.", variants=["conflict_409"])
    path = tmp_path / "synthetic.toml"
    path.write_text(text)
    sc = load_scenario(path)
    assert sc.name == "synthetic" and sc.target.processes == 2 and sc.target.variants == ("conflict_409",)
    assert sc.workload.sessions == 3
    script = sc.workload.script
    assert [s.kind for s in script].count("create") == 2  # not the ghost
    chats = [s for s in script if s.kind == "chat"]
    assert [s.at_s for s in chats] == sorted(s.at_s for s in chats)
    a2 = next(s for s in chats if s.request_id == "c-a2")
    assert (a2.session, a2.turn, a2.attempt, a2.fault, a2.expect) == ("s1", 0, 1, "spike;ms=118", "state_changed_skip")
    assert all(s.process == 1 for s in script if s.session == "s2")
    assert "A test incident." in sc.description
    outcomes = sc.checks.options["incident"]["outcomes"]
    assert outcomes[0] == "s2:transport_error" and len(outcomes) == 9 and "s1:deleted" in outcomes
    assert "# req a2: state_changed_skip 200" in text


def test_script_schema_errors_name_the_key() -> None:
    base: dict[str, Any] = {"name": "x", "workload": {"script": [{"session": "a", "kind": "create"}]}}
    parse_scenario(base)
    cases = [
        ({"session": "a", "kind": "resume"}, "workload.script[0].kind"),
        ({"session": "a", "kind": "delete", "fault": "abort"}, "workload.script[0].fault"),
        ({"session": "a", "fault": "abrt"}, "workload.script[0].fault"),
        ({"kind": "chat"}, "workload.script[0].session"),
        ({"session": "a", "process": 1}, "workload.script[0].process"),
        ({"session": "a", "at": 1}, "workload.script[0].at"),
        ({"session": "a", "kind": "delete", "abort_after_ms": 5}, "workload.script[0].abort_after_ms"),
    ]
    for step, key in cases:
        with pytest.raises(ScenarioError) as ei:
            parse_scenario({"name": "x", "workload": {"script": [step]}})
        assert ei.value.key == key, (step, ei.value)
    with pytest.raises(ScenarioError) as ei:
        parse_scenario({"name": "x", "workload": {"sessions": 3, "script": [{"session": "a"}]}})
    assert ei.value.key == "workload.sessions"


def test_cli_import_reports_skips_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "prod.log"
    log.write_text("\n".join(["boot banner", *incident_lines(), '{"ts": 5, "event": "chat_st']) + "\n")
    out = tmp_path / "inc" / "prod_incident.toml"
    assert incident_main(["import", str(log), "--session", "s1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 2: no_event 1 (first at prod.log:1), truncated 1" in printed
    assert "1 session(s), 5 chat(s), 1 delete(s)" in printed
    sc = load_scenario(out)
    assert sc.name == "prod_incident" and {s.session for s in sc.workload.script} == {"s1"}


def test_cli_import_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "prod.log"
    log.write_text("\n".join(incident_lines()) + "\n")
    out = str(tmp_path / "x.toml")
    assert incident_main(["import", str(log), "--window", "soon", "-o", out]) == 2
    assert incident_main(["import", str(tmp_path / "missing.log"), "-o", out]) == 2
    assert incident_main(["import", str(log), "--session", "nope", "-o", out]) == 2
    assert incident_main([]) == 2
    assert "no session events" in capsys.readouterr().err
    assert not Path(out).exists()


def test_partial_chats_are_dated_back_or_marked_unfinished(tmp_path: Path) -> None:
    lines = [
        ev("session_created", 0.0, session_id="s1"),
        # chat_start lost (before the excerpt): dated back by total_ms
        ev("chat_done", 0.5, req_id="z1", session_id="s1", outcome="committed", status=200, total_ms=200.0),
        # still in flight when the log ends (process killed)
        ev("chat_start", 0.6, req_id="z2", session_id="s1"),
    ]
    inc = reconstruct(sorted(parse_lines(lines, "x").events, key=lambda e: e.ts))
    z1, z2 = inc.sessions[0].requests
    assert z1.start_ts == pytest.approx(T0 + 0.3) and z2.outcome == "unfinished" and z2.turn == 1
    assert any("chat_start missing" in n for n in inc.notes)
    path = tmp_path / "partial.toml"
    path.write_text(scenario_text(inc, name="partial", sources=["x"]))
    sc = load_scenario(path)
    assert [s.expect for s in sc.workload.script if s.kind == "chat"] == ["committed", "unfinished"]
    assert sc.checks.options["incident"]["outcomes"] == ["s1:committed"]  # nothing to compare for z2


def test_cli_imports_a_text_log_with_their_names_to_the_same_scenario(tmp_path: Path) -> None:
    """The same incident as Python-logging text with another server's field names (--field) imports identically."""
    from reference_impl.logs import TextLineSink

    sink = TextLineSink()
    rename = {"req_id": "request_id", "total_ms": "latency_ms"}
    as_json, as_text = tmp_path / "prod.jsonl", tmp_path / "prod.log"
    as_json.write_text("\n".join(incident_lines()) + "\n")
    as_text.write_text(
        "\n".join(sink.format({rename.get(k, k): v for k, v in json.loads(x).items()}) for x in incident_lines()) + "\n"
    )
    assert "request_id=a1" in as_text.read_text() and '{"' not in as_text.read_text()
    a, b, c = (tmp_path / f"{n}.toml" for n in "abc")
    assert incident_main(["import", str(as_json), "-o", str(a), "--name", "inc"]) == 0
    fields = ["--field", "request_id=req_id", "--field", "latency_ms=total_ms"]
    assert incident_main(["import", str(as_text), *fields, "-o", str(b), "--name", "inc"]) == 0
    sa, sb = load_scenario(a), load_scenario(b)
    assert sa.workload.script == sb.workload.script and sa.checks.options == sb.checks.options
    # without the mapping the chats have no request id: not the same incident
    incident_main(["import", str(as_text), "-o", str(c), "--name", "inc"])
    assert not c.exists() or load_scenario(c).workload.script != sa.workload.script


def test_cli_import_bad_log_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "prod.log"
    log.write_text("\n".join(incident_lines()) + "\n")
    out = str(tmp_path / "x.toml")
    assert incident_main(["import", str(log), "--field", "request_id", "-o", out]) == 2
    assert "--field: expected NAME=VALUE" in capsys.readouterr().err
    assert incident_main(["import", str(log), "--pattern", "chat_done=(", "-o", out]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err
