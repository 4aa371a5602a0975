"""``harness run --server-cmd`` / ``--url``: the CLI for a server the harness did not ship.

Bad flags fail before anything starts (exit 2, one line naming the flag and
the fix); a deployment that is already running gets each scenario's fault
plan pushed to its fake, or the run says up front that it cannot and records
``faults_applied: false``; chaos that needs process control is reported
unknown, not silently passed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from harness.runner._procs import free_port
from harness.runner.cli import main as run_main

pytestmark = pytest.mark.integration

OK_CMD = "{python} -m reference_impl --port {port} --backend-url {backend_url}"

ABORTS = (
    'name = "aborts"\nseed = 2\n[backend]\nrules = [{ fault = "abort", attempt = 0 }]\n'
    "[workload]\nsessions = 3\nturns = 2\n"
)
KILLS = (
    'name = "kills"\nseed = 2\n[workload]\nsessions = 2\nturns = 2\n'
    "[[chaos.kill_restart]]\nprocess = 0\nat_s = 0.1\nrestart_after_s = 0.1\n"
)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--processes", "2"], "--processes: only goes with --server-cmd"),
        (["--backend-url", "http://127.0.0.1:1"], "--backend-url: only goes with --url"),
        (["--server-cmd", OK_CMD, "--url", "http://127.0.0.1:1"], "not both"),
        (["--server-cmd", "srv --port 8000"], "put {port} in cmd"),
        (["--server-cmd", "srv --port {prot}"], "did you mean '{port}'"),
        (["--server-cmd", "srv 'unclosed {port}"], "quotes"),
        (["--server-cmd", OK_CMD, "--processes", "0"], "--processes: must be 1..64"),
        (["--server-cmd", OK_CMD, "--variant", "lock_restore"], "cannot switch your server's variant"),
        (["--server-cmd", OK_CMD, "--mode", "sim"], "live mode only"),
        (["--server-cmd", OK_CMD, "--backend-url", "http://127.0.0.1:1"], "only goes with --url"),
        (["--url", "ftp://x"], "not an http(s) URL"),
        (["--url", "http://127.0.0.1:1", "--processes", "2"], "one process per --url"),
        (["multi_backend_race", "--server-cmd", OK_CMD, "--processes", "1"], "--server-cmd with 1 process(es)"),
    ],
)
def test_bad_target_flags_exit_2_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expect: str
) -> None:
    before = set(psutil.Process().children(recursive=True))
    names = [] if args[0].startswith("-") else [args.pop(0)]
    assert run_main([*(names or ["abort_retry_supersede"]), "--out", str(tmp_path / "o"), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    assert set(psutil.Process().children(recursive=True)) <= before


def test_url_that_does_not_answer_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert run_main(["abort_retry_supersede", "--out", str(tmp_path), "--quiet", "--url", dead]) == 2
    assert f"cannot reach {dead}/health" in capsys.readouterr().err


def test_list_says_which_scenarios_need_process_control(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--list", "process_kill_restart", "abort_retry_supersede"]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith(" ")}
    assert "process control" in rows["process_kill_restart"]
    assert "process control" not in rows["abort_retry_supersede"]


def test_url_target_gets_the_fault_plan_pushed_to_its_fake(
    reference_server: str, fake_sglang: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = tmp_path / "aborts.toml"
    scen.write_text(ABORTS)
    out = tmp_path / "o"
    code = run_main([str(scen), "--out", str(out), "--quiet", "--url", reference_server, "--backend-url", fake_sglang])
    assert code == 0
    assert "cannot be applied" not in capsys.readouterr().err
    run_dir = out / "aborts"
    target = json.loads((run_dir / "scenario.json").read_text())["target"]
    assert target["faults_applied"] is True and target["process_control"] is False
    history = [json.loads(ln) for ln in (run_dir / "history.jsonl").read_text().splitlines()]
    assert any(e.get("aborted") for e in history if e["type"] == "ok" and e["f"] == "chat")  # the plan fired
    sessions = {e["session"] for e in history if e.get("session")}
    execs = json.loads((run_dir / "backend_executions.json").read_text())
    assert execs and set(execs) <= sessions  # the deployment's fake served other runs too: only ours kept
    plan = httpx.get(f"{fake_sglang}/admin/plan", timeout=5).json()
    assert plan["rules"] == []  # the deployment is left without this scenario's faults


def test_url_target_without_backend_says_so_and_marks_faults_unapplied(
    reference_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "aborts.toml").write_text(ABORTS)
    (tmp_path / "kills.toml").write_text(KILLS)
    out = tmp_path / "o"
    files = [str(tmp_path / "aborts.toml"), str(tmp_path / "kills.toml")]
    code = run_main([*files, "--out", str(out), "--quiet", "--url", reference_server])
    assert code == 0  # unknown is not a failure without --strict
    cap = capsys.readouterr()
    up_front = cap.err.split("\n")[:2]
    assert any("no --backend-url" in ln and "cannot be applied" in ln for ln in up_front), cap.err
    assert any("kills" in ln and "reported unknown" in ln for ln in up_front), cap.err
    assert json.loads((out / "aborts" / "scenario.json").read_text())["target"]["faults_applied"] is False
    verdicts = {v["checker"]: v for v in json.loads((out / "kills" / "verdicts.json").read_text())}
    assert verdicts["process_control"]["status"] == "unknown"
    assert "did not start" in verdicts["process_control"]["notes"]
    assert "kills" in cap.out and "unknown" in cap.out


def test_replay_line_repeats_the_command_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that never gets healthy is an error; its replay line names the same command, not a port."""
    script = tmp_path / "exits.py"
    script.write_text("import sys\nprint('no such model', file=sys.stderr)\nsys.exit(4)\n")
    cmd = f"{sys.executable} {script} --port {{port}}"
    scen = tmp_path / "tiny.toml"
    scen.write_text('name = "tiny"\n[workload]\nsessions = 1\nturns = 1\n')
    code = run_main([str(scen), "--out", str(tmp_path / "o"), "--quiet", "--server-cmd", cmd, "--processes", "1"])
    assert code == 1
    out = capsys.readouterr().out
    assert "exited during startup (exit 4)" in out and "no such model" in out
    replay = next(ln for ln in out.splitlines() if "replay:" in ln)
    assert f"--server-cmd '{cmd}' --processes 1" in replay and "--variant" not in replay
