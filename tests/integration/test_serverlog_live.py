"""Text logs from real server processes: captured command output, and ``--server-log`` of a running deployment.

Our reference server with ``--log-format text`` stands in for a production
server that logs through Python ``logging``. Small workloads: the machine is shared.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.checkers.__main__ import main as check_main
from harness.pytest_plugin import _start
from harness.rundata import RunData
from harness.runner import run_scenario
from harness.runner._procs import ManagedProcess, free_port
from harness.scenario import parse_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT_CMD = (
    "{python} -m reference_impl --host {host} --port {port} --backend-url {backend_url} "
    "--tokenizer {tokenizer} --heartbeat-interval 1.0 --log-format text"
)
WORKLOAD = {"sessions": 4, "concurrency": 4, "turns": 2, "arrival_rate": 20}


def verdicts(run_dir: Path) -> dict[str, str]:
    import json

    return {v["checker"]: v["status"] for v in json.loads((run_dir / "verdicts.json").read_text())}


def test_command_target_text_output_becomes_server_logs(tmp_path: Path) -> None:
    sc = parse_scenario(
        {"name": "text_cmd", "seed": 3, "target": {"kind": "command", "cmd": TEXT_CMD}, "workload": WORKLOAD},
        "text_cmd.toml",
    )
    res = run_scenario(sc, tmp_path, report=False)
    not_valid = [v for v in res.verdicts if v["status"] != "valid"]
    # diagnostics: a command target's max_trim_tokens is not known to the harness (unknown by design)
    assert res.error is None and all(v["checker"] == "diagnostics" and v["status"] == "unknown" for v in not_valid), (
        res.error,
        not_valid,
    )
    captured = (tmp_path / "text_cmd" / "server-logs" / "server-0.log").read_text()
    assert " INFO reference_impl pid=" in captured and '{"ts"' not in captured  # text, not JSON
    run = RunData.load(tmp_path / "text_cmd")
    done = [ln for ln in run.server_logs if ln["event"] == "chat_done"]
    assert len(done) >= 8 and all(isinstance(ln["total_ms"], float) and "read_body_ms" in ln for ln in done)
    assert verdicts(tmp_path / "text_cmd")["log_consistency"] == "valid"


@pytest.fixture(scope="module")
def text_server(fake_sglang: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A deployment the harness did not start: one reference server logging text to a file."""
    d = tmp_path_factory.mktemp("text_server")
    port, log = free_port(), d / "server.log"
    argv = [sys.executable, "-m", "reference_impl", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-url", fake_sglang, "--log-file", str(log), "--log-format", "text", "--heartbeat-interval", "1"]
    proc = ManagedProcess("text-server", argv, f"http://127.0.0.1:{port}", d / "out.log")
    _start(proc)
    try:
        yield proc.url, log
    finally:
        proc.stop()


def test_server_log_of_a_running_deployment_on_run_and_check(
    text_server: tuple[str, Path], fake_sglang: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, log = text_server
    target = {"kind": "urls", "urls": [url], "backend_url": fake_sglang}
    data = {"name": "ext", "seed": 4, "target": target, "workload": WORKLOAD}
    first = run_scenario(parse_scenario(data, "ext.toml"), tmp_path / "a", report=False)
    # without its logs the log checks cannot decide
    assert verdicts(first.run_dir)["log_consistency"] == "unknown"
    assert not RunData.load(first.run_dir).server_logs
    # harness check RUN --server-log: the file also holds earlier traffic; only this run's sessions count
    assert check_main([str(first.run_dir), "--server-log", str(log), "--checker", "log_consistency"]) == 0
    # harness run --server-log: only what the file gains during the run
    second = run_scenario(parse_scenario(data, "ext.toml"), tmp_path / "b", report=False, server_logs=[log])
    assert verdicts(second.run_dir)["log_consistency"] == "valid", second.verdicts
    run = RunData.load(second.run_dir)
    sessions = {ln.get("session_id") for ln in run.server_logs} - {None}
    assert sessions == set(run.owners) and len(sessions) == WORKLOAD["sessions"]
    assert any("--server-log: " in n for n in second.notes)
    # re-checked once the file holds both runs: the first run's lines only
    capsys.readouterr()
    assert check_main([str(first.run_dir), "--server-log", str(log), "--checker", "log_consistency"]) == 0
    said = capsys.readouterr().err
    used = int(said.split(" used")[0].rsplit(" ", 1)[1])
    kept = int(said.split(" line(s) of this run")[0].rsplit(" ", 1)[1])
    assert 0 < kept < used, said
