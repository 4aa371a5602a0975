"""The sim commands as a user runs them: ``harness run --mode sim``, ``explore --target``, ``replay``.

Subprocesses (the real entry point, argument parsing, exit codes), but no
sockets: simulation never opens one, which is the point.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str, cwd: Path = ROOT, hash_seed: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = hash_seed  # str/bytes hashing, hence set order, differs between processes
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=240, env=env
    )


def my_server(
    backend_url: str, backend_transport: Any, log_sink: Any, ids: Any, clock: Any, executor: Any, pid: int, **_: Any
) -> Any:
    """A user's session server factory, as ``--target asgi:module:factory`` calls it (here: ours, auto_create)."""
    from reference_impl import ServerConfig, create_app

    return create_app(
        ServerConfig(backend_url=backend_url, variants=frozenset({"auto_create"})),
        clock=clock,
        ids=ids,
        executor=executor,
        backend_transport=backend_transport,
        log_sink=log_sink,
        pid=pid,
    )


@pytest.mark.integration
def test_run_mode_sim_twice_gives_the_same_digest(tmp_path: Path) -> None:
    """Two processes with different string-hash seeds: the replay guarantee holds across processes."""
    outs = []
    for i in range(2):
        out = str(tmp_path / str(i))
        r = harness("run", "multi_backend_race", "--mode", "sim", "--seed", "3", "--out", out, hash_seed=str(i + 1))
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(re.search(r"history digest (\w+)", r.stdout))
    assert outs[0] and outs[1] and outs[0].group(1) == outs[1].group(1)
    assert (tmp_path / "0" / "multi_backend_race" / "trace.txt").exists()
    assert (tmp_path / "0" / "report.md").exists(), "the suite report, as in live mode"


@pytest.mark.integration
def test_explore_a_user_target_finds_and_replays(tmp_path: Path) -> None:
    target = "asgi:tests.integration.test_sim_commands:my_server"  # imported by the subprocess from the repo root
    r = harness(
        "explore", "delete_during_proxy", "--seeds", "4", "--jobs", "1", "--target", target,
        "--out", str(tmp_path), "--found-dir", str(tmp_path / "found"),
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no_resurrection: invalid" in r.stdout
    replay = re.search(r"replay: (harness replay .+)", r.stdout)
    assert replay and f"--target {target}" in replay.group(1)
    digest = re.search(r"digest: history (\w+)", r.stdout)
    assert digest
    args = replay.group(1).split()[1:]
    again = harness(*args, "--out", str(tmp_path / "again"), "--no-report")
    assert again.returncode == 1
    assert f"history digest {digest.group(1)}" in again.stdout
    found = next((tmp_path / "found").glob("*.toml"))
    rerun = re.search(r"run it: harness (run .+)", r.stdout)
    assert rerun and str(found) in rerun.group(1)
    assert harness(*rerun.group(1).split(), "--out", str(tmp_path / "found_run"), "--quiet").returncode == 1
