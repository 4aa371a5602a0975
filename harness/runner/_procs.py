"""Server processes for a live run: start, health-wait, SIGKILL, restart, and always stop.

No orphans, however the runner ends. Three layers, because each one alone
has a hole:

- every process runs in its own process group (``start_new_session``), so a
  stop kills it together with anything it spawned, and every launched group
  is remembered in a registry that an ``atexit`` hook sweeps (Ctrl-C, SIGTERM,
  a test that crashed);
- on Linux every direct child gets the parent-death signal
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` before ``exec``), so the kernel kills
  it when the runner dies, even by SIGKILL, which runs no Python at all;
- a watchdog process (``_watchdog.py``, its own session) holds the read end of
  a pipe from the runner and the list of live groups; when the runner dies the
  pipe closes and the watchdog kills whatever groups remain: grandchildren,
  and everything on platforms without ``prctl``.

Processes bind 127.0.0.1 only; ports come from the kernel (bind to port 0),
so parallel runs do not collide.

Two kinds of server processes: our reference server (its JSON log lines go
to ``--log-file``) and a ``command`` target, the user's own server started
from a command template (docs/your_server.md) whose stdout and stderr are
captured, appended across restarts, into ``server-logs/server-{index}.log``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

__all__ = [
    "ManagedProcess",
    "ProcessGroup",
    "fill_placeholders",
    "free_port",
    "stop_all_registered",
    "wait_healthy",
]

_REGISTRY: set[subprocess.Popen[bytes]] = set()
_PR_SET_PDEATHSIG = 1
_WATCHDOG_SCRIPT = Path(__file__).with_name("_watchdog.py")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return fn


_PRCTL = _load_prctl()  # loaded before any fork: the child only calls it


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- hygiene


class _Watchdog:
    """The runner's side of the watchdog pipe; started with the first child, one per runner process."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner_pid = 0

    def _pipe(self) -> IO[bytes] | None:
        if self.proc is not None and self.owner_pid == os.getpid() and self.proc.poll() is None:
            return self.proc.stdin
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(_WATCHDOG_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not in the runner's group: a signal to that group must not reach it
            )
        except OSError:
            self.proc = None
            return None
        self.owner_pid = os.getpid()
        return self.proc.stdin

    def send(self, line: str) -> None:
        pipe = self._pipe()
        if pipe is None:
            return
        with contextlib.suppress(OSError, ValueError):
            pipe.write(f"{line}\n".encode())
            pipe.flush()

    def close(self) -> None:
        """End of the runner: the watchdog sees end of file, kills what is still registered, exits."""
        if self.proc is None or self.owner_pid != os.getpid():
            return
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)
        self.proc = None


_WATCHDOG = _Watchdog()


def _child_preexec(parent_pid: int, pdeathsig: bool) -> Callable[[], None]:
    """Runs in the child between fork and exec: die with the parent (Linux), or at once if it already died."""

    def setup() -> None:
        if pdeathsig and _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def _popen(
    argv: Sequence[str], out: IO[bytes], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    # The parent-death signal fires when the *thread* that forked exits; only the main thread lives as long as
    # the runner, so a child started from another thread relies on the process group and the watchdog.
    pdeathsig = threading.current_thread() is threading.main_thread()
    p = subprocess.Popen(
        list(argv),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_child_preexec(os.getpid(), pdeathsig),  # only prctl and getppid run there
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    _REGISTRY.add(p)
    _WATCHDOG.send(f"+{p.pid}")
    return p


def _forget(p: subprocess.Popen[bytes]) -> None:
    if p in _REGISTRY:
        _REGISTRY.discard(p)
        _WATCHDOG.send(f"-{p.pid}")


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
    _kill_group(p, signal.SIGKILL)  # whatever the leader left behind in its group
    _forget(p)


def stop_all_registered() -> None:
    for p in list(_REGISTRY):
        _stop(p, grace_s=2.0)
    _WATCHDOG.close()


atexit.register(stop_all_registered)


# ---------------------------------------------------------------- one process


@dataclass
class ManagedProcess:
    """One child process. ``capture`` set: output appended to that one file across restarts (command target);
    unset: each start writes ``<log_path stem>.<n>.out``."""

    name: str
    argv: list[str]
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    capture: Path | None = None
    env: Mapping[str, str] | None = None  # the full environment (None: inherit)
    cwd: str | None = None
    health_path: str = "/health"

    def _out_path(self) -> Path:
        return self.capture if self.capture is not None else self.log_path.with_suffix(f".{self.starts}.out")

    def start(self) -> None:
        self.starts += 1
        out = self._out_path()
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("ab" if self.capture is not None else "wb") as fh:
            if self.capture is not None and self.starts > 1:
                fh.write(f"--- harness: {self.name} restarted (start {self.starts}) ---\n".encode())
                fh.flush()
            try:
                self.proc = _popen(self.argv, fh, env=self.env, cwd=self.cwd)
            except OSError as exc:  # no such program, not executable, no such cwd
                raise RuntimeError(f"{self.name}: cannot start {self.argv[0]!r}: {exc.strerror or exc}") from None

    def kill(self) -> None:
        """SIGKILL, no grace: the process dies mid-request, as in a crash or OOM."""
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5.0)
            _forget(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output_tail(self, n: int = 2000) -> str:
        try:
            return self._out_path().read_text(errors="replace")[-n:]
        except OSError:
            return ""


async def wait_healthy(url: str, timeout_s: float, proc: ManagedProcess | None = None, path: str = "") -> None:
    """Poll ``GET url + path`` (default the process's health path, else ``/health``) until 200.

    Fails early, with the process's last output, if it exits during startup.
    """
    path = path or (proc.health_path if proc is not None else "/health")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as c:
        while True:
            try:
                r = await c.get(f"{url}{path}")
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc is not None and not proc.alive:
                code = proc.proc.returncode if proc.proc is not None else None
                raise RuntimeError(f"{proc.name} exited during startup (exit {code}):\n{proc.output_tail()}")
            if loop.time() > deadline:
                tail = proc.output_tail() if proc is not None else ""
                raise RuntimeError(f"{url}{path} not healthy after {timeout_s:g} s\n{tail}")
            await asyncio.sleep(0.05)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` for every known name; any other brace text (JSON, say) is left alone."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# ---------------------------------------------------------------- a run's processes


@dataclass
class ProcessGroup:
    """The fake backend plus N server processes of one run (ours, or the user's command)."""

    log_dir: Path
    backend: ManagedProcess | None = None
    servers: list[ManagedProcess] = field(default_factory=list)
    startup_timeout_s: float = 20.0
    log_files: list[Path] = field(default_factory=list)  # where the servers' log lines end up

    @staticmethod
    def _backend(log_dir: Path, seed: int, plan_file: Path, tokenizer: str | None) -> ManagedProcess:
        bport = free_port()
        tok = ["--tokenizer", tokenizer] if tokenizer else []
        bargv = [sys.executable, "-m", "harness.cli", "fake-sglang", "--host", "127.0.0.1", "--port", str(bport)]
        bargv += ["--seed", str(seed), "--plan", str(plan_file), *tok]
        return ManagedProcess("fake-sglang", bargv, f"http://127.0.0.1:{bport}", log_dir / "fake_sglang.log")

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
        """Our reference server: N processes, JSON log lines to ``log_dir/server-{i}.jsonl``."""
        log_dir.mkdir(parents=True, exist_ok=True)
        backend = cls._backend(log_dir, seed, plan_file, tokenizer)
        tok = ["--tokenizer", tokenizer] if tokenizer else []
        servers = []
        for i in range(processes):
            port = free_port()
            argv = [sys.executable, "-m", "reference_impl", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--backend-url", backend.url]
            argv += ["--log-file", str(log_dir / f"server-{i}.jsonl"), "--heartbeat-interval", "1.0", *tok]
            for v in variants:
                argv += ["--variant", v]
            argv += list(server_args)
            servers.append(ManagedProcess(f"server-{i}", argv, f"http://127.0.0.1:{port}", log_dir / f"server-{i}.log"))
        files = [log_dir / f"server-{i}.jsonl" for i in range(processes)]
        return cls(log_dir, backend, servers, startup_timeout_s, files)

    @classmethod
    def command(
        cls,
        run_dir: Path,
        *,
        cmd: Sequence[str],
        processes: int,
        seed: int,
        plan_file: Path,
        tokenizer: str | None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        health_path: str = "/health",
        startup_timeout_s: float = 30.0,
    ) -> ProcessGroup:
        """The user's server: ``cmd`` with its placeholders filled, once per process, against our fake.

        Output (stdout + stderr) of process i goes to ``run_dir/server-logs/server-{i}.log``; ``{log_file}``
        names ``server-logs/server-{i}.file.log`` for servers that write their log to a file instead.
        """
        from harness.tokenizer import resolve_tokenizer

        log_dir = run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        out_dir = run_dir / "server-logs"
        out_dir.mkdir(parents=True, exist_ok=True)
        backend = cls._backend(log_dir, seed, plan_file, tokenizer)
        tok = str(resolve_tokenizer(tokenizer).resolve())  # {tokenizer} is a folder: a user's server knows no names
        servers: list[ManagedProcess] = []
        files: list[Path] = []
        for i in range(processes):
            port = free_port()
            capture = out_dir / f"server-{i}.log"
            own_log = out_dir / f"server-{i}.file.log"
            values = {
                "port": str(port),
                "host": "127.0.0.1",
                "backend_url": backend.url,
                "tokenizer": tok,
                "index": str(i),
                "log_file": str(own_log.resolve()),
                "python": sys.executable,
            }
            argv = [fill_placeholders(a, values) for a in cmd]
            full_env = {**os.environ, **{k: fill_placeholders(v, values) for k, v in (env or {}).items()}}
            servers.append(
                ManagedProcess(
                    f"server-{i}",
                    argv,
                    f"http://127.0.0.1:{port}",
                    capture,
                    capture=capture,
                    env=full_env,
                    cwd=cwd,
                    health_path=health_path,
                )
            )
            files += [capture, own_log]
        return cls(log_dir, backend, servers, startup_timeout_s, files)

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
        return [f for f in self.log_files if f.exists()]
