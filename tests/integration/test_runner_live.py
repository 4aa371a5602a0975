"""Live mode end to end: real processes on loopback ports, the CLI, the pytest plugin; no orphans.

Small scenarios only (a few seconds each): the machine is shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness.rundata import RUN_FILES, RunData
from harness.runner import run_scenario
from harness.runner.cli import main as run_main
from harness.scenario import load_scenario, parse_scenario

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def harness_children() -> list[psutil.Process]:
    """Processes of ours still alive: fake SGLang or reference servers started by this test process."""
    me = os.getpid()
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if ("fake-sglang" in cmd or "reference_impl" in cmd) and str(me) not in cmd:
                env_parent = p.parents()
                if any(pp.pid == me for pp in env_parent):
                    out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def ports_in(scenario: dict[str, object]) -> list[str]:
    servers = scenario.get("servers")
    assert isinstance(servers, list)
    return [str(s) for s in servers] + [str(scenario["backend_url"])]


def assert_all_down(urls: list[str]) -> None:
    for u in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{u}/health", timeout=1.0)


def test_small_scenario_end_to_end(tmp_path: Path) -> None:
    sc = parse_scenario(
        {
            "name": "live_small",
            "seed": 3,
            "target": {"processes": 2},
            "backend": {
                "latency": {"model": "uniform", "min_ms": 20, "max_ms": 60},
                "rules": [{"fault": "abort", "attempt": 0, "probability": 0.3}],
            },
            "workload": {"sessions": 6, "concurrency": 6, "turns": [2, 3], "arrival_rate": 30},
            "agent": {"client": {"httpx": 1, "openai": 1, "aiohttp": 1}},
            "chaos": {"delete_during_proxy": 0.3, "wrong_process_probes": 0.5},
        },
        "live_small.toml",
    )
    res = run_scenario(sc, tmp_path)
    assert res.status == "valid", (res.error, [v for v in res.verdicts if v["status"] != "valid"])
    run_dir = tmp_path / "live_small"
    for name in RUN_FILES.values():
        assert (run_dir / name).exists(), name
    run = RunData.load(run_dir)
    assert run.server_logs and any(ln.get("event") == "chat_done" for ln in run.server_logs)
    assert run.backend_executions
    assert len(run.owners) == 6 and set(run.owners.values()) <= set(run.scenario["servers"])  # type: ignore[arg-type]
    assert {e["client"] for e in run.history if e["type"] == "invoke" and e["f"] == "chat"} == {
        "httpx->h1",  # client = "httpx" over sockets: the agents' own HTTP/1.1 client (harness/agents/_h1.py)
        "openai",
        "aiohttp",
    }
    assert_all_down(ports_in(run.scenario))
    assert not harness_children()


def test_kill_restart_and_outage(tmp_path: Path) -> None:
    sc = parse_scenario(
        {
            "name": "live_chaos",
            "seed": 4,
            "target": {"processes": 2},
            "backend": {"latency": {"model": "uniform", "min_ms": 20, "max_ms": 40}},
            "workload": {"sessions": 8, "concurrency": 8, "turns": [3, 4], "arrival_rate": 8, "think_time_s": 0.1},
            "chaos": {
                "kill_restart": [{"process": 1, "at_s": 0.5, "restart_after_s": 0.2}],
                "backend_outage": [{"at_s": 0.3, "duration_s": 0.3, "fault": "http_503"}],
            },
        },
        "live_chaos.toml",
    )
    res = run_scenario(sc, tmp_path)
    assert res.status != "error", res.error
    run = RunData.load(tmp_path / "live_chaos")
    actions = [e["value"]["action"] for e in run.history if e["f"] == "chaos" and e["type"] == "ok"]
    assert {"kill", "restart", "backend_outage_start", "backend_outage_end"} <= set(actions)
    assert_all_down(ports_in(run.scenario))


def test_cli_exit_codes_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[chaos]\ndelete_durng_proxy = 0.5\n")
    assert run_main([str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "chaos.delete_durng_proxy" in err and "did you mean" in err and "Traceback" not in err

    good = tmp_path / "tiny.toml"
    good.write_text('seed = 1\n[workload]\nsessions = 2\nturns = 1\n[target]\nvariants = ["auto_create"]\n')
    assert run_main([str(good), "--out", str(tmp_path / "o"), "--quiet", "--variant", "default"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "valid" in out
    assert (tmp_path / "o" / "tiny" / "verdicts.json").exists()

    slo = tmp_path / "slo.toml"
    slo.write_text("[workload]\nsessions = 2\nturns = 1\n[slo]\np99_total_ms = 0.001\n")
    assert run_main([str(slo), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "SLO total_ms" in capsys.readouterr().out


@pytest.mark.slow
def test_known_bad_variant_flagged_via_cli(tmp_path: Path) -> None:
    code = run_main(
        [
            str(ROOT / "scenarios" / "delete_during_proxy.toml"),
            "--variant",
            "auto_create",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 1
    verdicts = json.loads((tmp_path / "delete_during_proxy" / "verdicts.json").read_text())
    assert {v["checker"] for v in verdicts if v["status"] == "invalid"} & {"no_resurrection", "ownership"}


def test_ctrl_c_leaves_no_orphans(tmp_path: Path) -> None:
    scen = tmp_path / "long.toml"
    scen.write_text(
        'name = "long"\n[target]\nprocesses = 2\n[backend]\nlatency = { model = "fixed", ms = 200 }\n'
        "[workload]\nsessions = 200\nconcurrency = 4\nturns = 5\nduration_s = 60\n"
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scen), "--out", str(tmp_path / "o"), "--quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    kids: list[psutil.Process] = []
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= 3 and (tmp_path / "o" / "long" / "logs" / "server-1.jsonl").exists():
            break
        time.sleep(0.2)
    assert len(kids) >= 3, "runner did not start its processes"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    log.close()
    _, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert "interrupted" in (tmp_path / "run.log").read_text()


@pytest.mark.slow
def test_pytest_plugin_collects_and_runs_a_scenario(tmp_path: Path) -> None:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "plug.toml").write_text(
        'seed = 2\n[workload]\nsessions = 2\nturns = 1\n[target]\ncompare = ["default", "lock_restore"]\n'
    )
    (tmp_path / "test_uses_fixtures.py").write_text(
        "import httpx\n\n"
        "def test_servers(reference_server, fake_sglang):\n"
        "    assert httpx.get(reference_server + '/health').status_code == 200\n"
        "    assert httpx.get(fake_sglang + '/health').status_code == 200\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--run-scenarios",
            "--scenario-out",
            str(tmp_path / "out"),
            str(d),
            str(tmp_path / "test_uses_fixtures.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 passed" in r.stdout
    assert (tmp_path / "out" / "plug@lock_restore" / "verdicts.json").exists()


def test_library_default_suite_is_marked() -> None:
    defaults = [p.stem for p in sorted((ROOT / "scenarios").glob("*.toml")) if load_scenario(p).default]
    assert "delete_during_proxy" in defaults and "mixed_production" not in defaults


def test_urls_target_runs_against_external_servers(reference_server: str, fake_sglang: str, tmp_path: Path) -> None:
    """A user's own deployment: nothing is started or stopped; the backend's /stats is still read."""
    sc = parse_scenario(
        {
            "name": "external",
            "target": {"kind": "urls", "urls": [reference_server], "backend_url": fake_sglang},
            "workload": {"sessions": 3, "turns": 2},
        },
        "external.toml",
    )
    res = run_scenario(sc, tmp_path)
    assert res.status in ("valid", "unknown"), [v for v in res.verdicts if v["status"] == "invalid"]
    run = RunData.load(tmp_path / "external")
    assert run.backend_executions and not run.server_logs
    assert httpx.get(f"{reference_server}/health", timeout=5).status_code == 200  # left running
