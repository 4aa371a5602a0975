"""The ``command`` target: the harness starts a server it did not ship, from a command line, and owns it.

Our reference server stands in for "your server" here, started only through
its command line (``python -m reference_impl``), its log lines only on its
stderr, which the runner captures. Small scenarios: the machine is shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from harness.rundata import RunData
from harness.runner import run_scenario
from harness.scenario import parse_scenario

pytestmark = pytest.mark.integration

REF_CMD = (
    "{python} -m reference_impl --host {host} --port {port} --backend-url {backend_url} "
    "--tokenizer {tokenizer} --heartbeat-interval 1.0"
)


def command_scenario(name: str, **target: object) -> dict[str, object]:
    return {
        "name": name,
        "seed": 5,
        "target": {"kind": "command", "cmd": REF_CMD, "processes": 2, **target},
        "backend": {
            "latency": {"model": "uniform", "min_ms": 20, "max_ms": 50},
            "rules": [{"fault": "abort", "attempt": 0, "probability": 0.3}],
        },
        "workload": {"sessions": 8, "concurrency": 8, "turns": [2, 3], "arrival_rate": 10, "think_time_s": 0.05},
        "chaos": {
            "delete_during_proxy": 0.3,
            "wrong_process_probes": 0.5,
            "kill_restart": [{"process": 1, "at_s": 0.4, "restart_after_s": 0.2}],
        },
    }


def test_command_target_runs_kills_restarts_and_captures_output(tmp_path: Path) -> None:
    sc = parse_scenario(command_scenario("cmd_run"), "cmd_run.toml")
    res = run_scenario(sc, tmp_path)
    # A correct server is never invalid. `blocking` may say unknown on a loaded box: a lock wait
    # beside another request's proxy phase is, from client timing, either a wait or a late arrival.
    not_valid = [v for v in res.verdicts if v["status"] != "valid"]
    assert res.error is None and res.status in ("valid", "unknown"), (res.error, not_valid)
    assert all(v["status"] == "unknown" and v["checker"] in ("blocking", "diagnostics") for v in not_valid), not_valid
    run_dir = tmp_path / "cmd_run"
    run = RunData.load(run_dir)
    target = run.scenario["target"]
    assert target["kind"] == "command" and target["process_control"] is True and target["faults_applied"] is True
    actions = [e["value"]["action"] for e in run.history if e["f"] == "chaos" and e["type"] == "ok"]
    assert "kill" in actions and "restart" in actions
    # each process's stdout + stderr, a restart appended to the same file
    logs = run_dir / "server-logs"
    assert sorted(p.name for p in logs.glob("server-*.log")) == ["server-0.log", "server-1.log"]
    restarted = (logs / "server-1.log").read_text()
    assert "restarted (start 2)" in restarted
    assert restarted.count('"event":"heartbeat"') + restarted.count('"event": "heartbeat"') >= 1
    # the JSON lines on stderr became the run's server logs: a chat_done from every process that answered a chat
    done = [ln for ln in run.server_logs if ln.get("event") == "chat_done"]
    answered = {int(e["server"].rsplit(":", 1)[1]) for e in run.history if e["f"] == "chat" and e["type"] == "ok"}
    sent = {int(e["server"].rsplit(":", 1)[1]) for e in run.history if e["f"] == "chat" and e["type"] == "invoke"}
    # a process also logs chat_done for a chat whose client timed out or got an error (a loaded box, the
    # kill): every process that answered logged, and only processes that were sent chats did
    assert answered and answered <= {ln["worker_port"] for ln in done} <= sent
    heartbeats = {ln["worker_port"] for ln in run.server_logs if ln.get("event") == "heartbeat"}
    assert len(heartbeats) == 2  # both processes' output was read, whatever the load did to the schedule
    assert run.backend_executions  # the fake the harness started, with the scenario's plan
    plan = json.loads((run_dir / "backend_plan.json").read_text())
    assert plan["rules"][0]["fault"] == "abort"
    for url in [*run.scenario["servers"], run.scenario["backend_url"]]:  # type: ignore[misc]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=1.0)


def test_command_env_cwd_and_a_server_that_never_gets_healthy(tmp_path: Path) -> None:
    """Placeholders fill env values too; a server that exits is an error naming it, with its output."""
    script = tmp_path / "bad_server.py"
    script.write_text(
        "import os, sys\nprint('my port is', os.environ['MY_PORT'], 'cwd', os.getcwd(), flush=True)\nsys.exit(3)\n"
    )
    raw = command_scenario("cmd_bad", cmd=f"{sys.executable} bad_server.py", processes=1, env={"MY_PORT": "{port}"})
    raw["target"] = {**raw["target"], "cwd": str(tmp_path), "startup_timeout_s": 10}  # type: ignore[dict-item]
    raw["chaos"] = {}
    res = run_scenario(parse_scenario(raw, "cmd_bad.toml"), tmp_path / "out")
    assert res.status == "error"
    assert res.error is not None and "server-0 exited during startup (exit 3)" in res.error
    out = (tmp_path / "out" / "cmd_bad" / "server-logs" / "server-0.log").read_text()
    assert "my port is" in out and str(tmp_path) in out
    port = out.split("my port is ")[1].split()[0]
    assert port.isdigit() and port not in ("0", "{port}")
