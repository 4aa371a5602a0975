"""Children die with the harness, however it dies (issue 13: process hygiene).

A SIGKILLed ``harness run`` runs no Python: no ``finally``, no ``atexit``. What
must still hold: the kernel's parent-death signal takes the direct children
(fake SGLang, server processes), and the watchdog takes what they spawned
(here a ``sleep`` that a shell wrapper leaves behind in the server's group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness.runner import _procs
from harness.runner._procs import ManagedProcess

pytestmark = pytest.mark.integration

WATCHDOG = Path(_procs.__file__).with_name("_watchdog.py")


def listening_ports(procs: list[psutil.Process]) -> set[int]:
    ports = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    ports.add(c.laddr.port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ports


def test_sigkill_of_harness_run_leaves_nothing_alive_or_listening(tmp_path: Path) -> None:
    scen = tmp_path / "long.toml"
    scen.write_text(
        'name = "long"\n[target]\nkind = "command"\nprocesses = 2\n'
        'cmd = ["sh", "-c", "sleep 300 & exec {python} -m reference_impl --port {port} --backend-url {backend_url}"]\n'
        '[backend]\nlatency = { model = "fixed", ms = 200 }\n'
        "[workload]\nsessions = 200\nconcurrency = 4\nturns = 5\nduration_s = 60\n"
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scen), "--out", str(tmp_path / "o"), "--quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        server_logs = tmp_path / "o" / "long" / "server-logs"
        deadline = time.monotonic() + 90
        kids: list[psutil.Process] = []
        while time.monotonic() < deadline and proc.poll() is None:
            kids = psutil.Process(proc.pid).children(recursive=True)
            started = all(
                '"event":"chat_start"' in (server_logs / f"server-{i}.log").read_text(errors="replace")
                if (server_logs / f"server-{i}.log").exists()
                else False
                for i in range(2)
            )
            if started:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        kids = psutil.Process(proc.pid).children(recursive=True)
        names = [" ".join(k.cmdline()) for k in kids]
        assert sum(n == "sleep 300" for n in names) == 2, names  # the grandchildren only the watchdog knows of
        assert any("_watchdog.py" in n for n in names), names
        ports = listening_ports(kids)
        assert len(ports) == 3, (ports, names)  # the fake and two servers
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
    _, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, [p.cmdline() for p in alive]
    for port in ports:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_carry_the_parent_death_signal(tmp_path: Path) -> None:
    code = (
        "import ctypes, signal\n"
        "libc = ctypes.CDLL(None)\n"
        "v = ctypes.c_int(0)\n"
        "libc.prctl(2, ctypes.byref(v), 0, 0, 0)\n"  # PR_GET_PDEATHSIG
        "print('pdeathsig', v.value, flush=True)\n"
    )
    p = ManagedProcess("probe", [sys.executable, "-c", code], "", tmp_path / "probe.log", capture=tmp_path / "o.log")
    p.start()
    assert p.proc is not None
    p.proc.wait(timeout=30)
    p.stop()
    assert f"pdeathsig {int(signal.SIGKILL)}" in (tmp_path / "o.log").read_text()


def start_watchdog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WATCHDOG)], stdin=subprocess.PIPE, start_new_session=True)


def test_watchdog_kills_registered_groups_when_its_pipe_closes() -> None:
    dog = start_watchdog()
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    kept = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert dog.stdin is not None
        dog.stdin.write(f"+{victim.pid}\n+{kept.pid}\n-{kept.pid}\nnonsense\n+1\n".encode())
        dog.stdin.close()  # what the kernel does when the runner dies
        assert victim.wait(timeout=20) == -signal.SIGTERM
        assert dog.wait(timeout=20) == 0
        assert kept.poll() is None  # unregistered: stopped by its owner, not the watchdog
    finally:
        for p in (victim, kept, dog):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def test_watchdog_escalates_to_sigkill() -> None:
    dog = start_watchdog()
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print(1, flush=True)\ntime.sleep(300)\n",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == b"1"  # SIGTERM is ignored now
        assert dog.stdin is not None
        dog.stdin.write(f"+{stubborn.pid}\n".encode())
        dog.stdin.close()
        assert stubborn.wait(timeout=20) == -signal.SIGKILL
        assert dog.wait(timeout=20) == 0
    finally:
        for p in (stubborn, dog):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        stubborn.stdout.close()  # type: ignore[union-attr]
