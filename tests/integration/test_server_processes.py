"""``python -m reference_impl --processes 2`` over real sockets: independent processes, no orphans.

Sessions live in exactly one process (a request to the wrong one gets 404),
and stopping the launcher stops every child: by SIGTERM (forwarded), and
even by SIGKILL of the launcher (each child watches its parent pid).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextmanager
def launcher(port: int, *extra: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "reference_impl", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--processes", "2", "--backend-url", _dead_url(), "--backend-timeout", "2", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().strip() for _ in range(2)]
        assert urls == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"], urls
        yield proc, urls
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    return alive


def test_sessions_live_in_one_process_and_sigterm_stops_all() -> None:
    port = _free_port_pair()
    with launcher(port) as (proc, (a, b)):
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) == 2
        with httpx.Client(timeout=10) as c:
            sid = c.post(f"{a}/sessions").json()["session_id"]
            assert c.get(f"{a}/sessions/{sid}").status_code == 200
            assert c.get(f"{b}/sessions/{sid}").status_code == 404
            wrong = c.post(
                f"{b}/sessions/{sid}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
            )
            assert wrong.status_code == 404 and wrong.json()["error"]["type"] == "SessionNotFound"
            assert c.delete(f"{b}/sessions/{sid}").status_code == 404
            down = c.post(
                f"{a}/sessions/{sid}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
            )
            assert down.status_code == 502  # right process, backend down
            pids = {c.get(f"{u}/stats").json()["pid"] for u in (a, b)}
            assert pids == set(children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert _wait_gone(children) == []


def test_children_exit_when_the_launcher_is_killed() -> None:
    port = _free_port_pair()
    with launcher(port, "--heartbeat-interval", "60") as (proc, _):
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) == 2
        proc.kill()  # no chance to forward anything
        proc.wait()
        assert _wait_gone(children) == []
