"""Server processes for a live run: start, health-wait, SIGKILL, restart, and always stop.

Every process runs in its own process group (``start_new_session``) so that a
stop kills it together with anything it spawned, and every launched group is
remembered in a module-level registry that an ``atexit`` hook sweeps: a run
interrupted by Ctrl-C, or a test that crashed, leaves no orphan listening on
a loopback port. Processes bind 127.0.0.1 only; ports come from the kernel
(bind to port 0), so parallel runs do not collide.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["ManagedProcess", "ProcessGroup", "free_port", "stop_all_registered", "wait_healthy"]

_REGISTRY: set[subprocess.Popen[bytes]] = set()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_group(p: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def _stop(p: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if p.poll() is None:
        _kill_group(p, signal.SIGTERM)
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(p, signal.SIGKILL)
            p.wait(timeout=5.0)
    else:
        _kill_group(p, signal.SIGKILL)  # children of an already-dead leader
    _REGISTRY.discard(p)


def stop_all_registered() -> None:
    for p in list(_REGISTRY):
        _stop(p, grace_s=2.0)


atexit.register(stop_all_registered)


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        out = self.log_path.with_suffix(f".{self.starts}.out")
        with out.open("wb") as fh:
            self.proc = subprocess.Popen(
                self.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        _REGISTRY.add(self.proc)

    def kill(self) -> None:
        """SIGKILL, no grace: the process dies mid-request, as in a crash or OOM."""
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5.0)
            _REGISTRY.discard(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output_tail(self, n: int = 2000) -> str:
        out = self.log_path.with_suffix(f".{self.starts}.out")
        try:
            return out.read_text(errors="replace")[-n:]
        except OSError:
            return ""


async def wait_healthy(url: str, timeout_s: float, proc: ManagedProcess | None = None) -> None:
    """Poll ``GET url/health`` until 200; fail early if the process died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as c:
        while True:
            try:
                r = await c.get(f"{url}/health")
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc is not None and not proc.alive:
                raise RuntimeError(f"{proc.name} exited during startup:\n{proc.output_tail()}")
            if loop.time() > deadline:
                tail = proc.output_tail() if proc is not None else ""
                raise RuntimeError(f"{url} not healthy after {timeout_s:g} s\n{tail}")
            await asyncio.sleep(0.05)


@dataclass
class ProcessGroup:
    """The fake backend plus N reference-server processes of one run."""

    log_dir: Path
    backend: ManagedProcess | None = None
    servers: list[ManagedProcess] = field(default_factory=list)
    startup_timeout_s: float = 20.0

    @classmethod
    def plan(
        cls,
        log_dir: Path,
        *,
        processes: int,
        seed: int,
        plan_file: Path,
        variants: Sequence[str],
        tokenizer: str | None,
        server_args: Sequence[str],
        startup_timeout_s: float = 20.0,
    ) -> ProcessGroup:
        log_dir.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        bport = free_port()
        burl = f"http://127.0.0.1:{bport}"
        tok = ["--tokenizer", tokenizer] if tokenizer else []
        bargv = [py, "-m", "harness.cli", "fake-sglang", "--host", "127.0.0.1", "--port", str(bport)]
        bargv += ["--seed", str(seed), "--plan", str(plan_file), *tok]
        backend = ManagedProcess(
            "fake-sglang",
            bargv,
            burl,
            log_dir / "fake_sglang.log",
        )
        servers = []
        for i in range(processes):
            port = free_port()
            argv = [py, "-m", "reference_impl", "--host", "127.0.0.1", "--port", str(port), "--backend-url", burl]
            argv += ["--log-file", str(log_dir / f"server-{i}.jsonl"), "--heartbeat-interval", "1.0", *tok]
            for v in variants:
                argv += ["--variant", v]
            argv += list(server_args)
            servers.append(ManagedProcess(f"server-{i}", argv, f"http://127.0.0.1:{port}", log_dir / f"server-{i}.log"))
        return cls(log_dir, backend, servers, startup_timeout_s)

    async def start(self) -> None:
        assert self.backend is not None
        self.backend.start()
        for s in self.servers:
            s.start()
        await wait_healthy(self.backend.url, self.startup_timeout_s, self.backend)
        await asyncio.gather(*(wait_healthy(s.url, self.startup_timeout_s, s) for s in self.servers))

    # ProcessControl (harness.chaos) -------------------------------------------------

    async def kill(self, index: int) -> None:
        self.servers[index].kill()

    async def restart(self, index: int) -> None:
        s = self.servers[index]
        s.start()
        await wait_healthy(s.url, self.startup_timeout_s, s)

    def stop(self) -> None:
        """Stop every process (servers first, so in-flight requests fail fast); idempotent."""
        for s in self.servers:
            s.stop()
        if self.backend is not None:
            self.backend.stop()

    def server_log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("server-*.jsonl"))
