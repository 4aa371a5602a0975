"""Run metadata for the report: harness version, git commit, host, date, cores, and the replay command.

A run folder does not record who ran it, so the first report of a run folder
(the runner builds it right after the run) collects the metadata once and
writes ``meta.json``; every later ``harness report`` of that folder reads it
back, so re-reporting gives the same files. What the metadata is read from is
a :class:`MetaSource`: the system by default, fixed values in tests (no clock,
host or git read then). This is reporting tooling, not protocol code; the
system source is the one place here that reads the wall clock.

The replay command is rebuilt from what the run folder holds (``scenario.json``,
and ``sim.json`` for a simulation run): the scenario file, seed, variant and,
for a simulation, the strategy.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["META_FILE", "MetaSource", "clock_kind", "harness_version", "load_or_collect", "replay_command"]

META_FILE = "meta.json"
_REPO = Path(__file__).resolve().parents[2]


def harness_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("session-race-harness")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - stdlib since 3.8
        pass
    try:  # a source checkout that was never installed: pyproject says
        import tomllib

        data = tomllib.loads((_REPO / "pyproject.toml").read_text())
        return str(data["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def _git_commit() -> str | None:
    """The commit of the harness's own checkout (None for an installed wheel or without git)."""
    if not (_REPO / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MetaSource:
    """Where the metadata comes from; every field a callable, so a test can fix them all."""

    now: Callable[[], float]  # seconds since the epoch
    host: Callable[[], str]
    cores: Callable[[], int]
    commit: Callable[[], str | None]
    version: Callable[[], str] = harness_version
    python: Callable[[], str] = platform.python_version
    system: Callable[[], str] = platform.platform

    @classmethod
    def from_system(cls) -> MetaSource:
        return cls(now=time.time, host=socket.gethostname, cores=_cores, commit=_git_commit)  # seam-ok: tooling

    @classmethod
    def fixed(
        cls, *, now: float = 0.0, host: str = "testhost", cores: int = 2, commit: str | None = None
    ) -> MetaSource:
        return cls(
            now=lambda: now,
            host=lambda: host,
            cores=lambda: cores,
            commit=lambda: commit,
            version=lambda: "0.0.0",
            python=lambda: "3.x",
            system=lambda: "test",
        )

    def collect(self) -> dict[str, Any]:
        return {
            "harness_version": self.version(),
            "git_commit": self.commit(),
            "host": self.host(),
            "cores": self.cores(),
            "python": self.python(),
            "platform": self.system(),
            "date": datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def load_or_collect(run_dir: Path, source: MetaSource | None = None) -> dict[str, Any]:
    """``meta.json`` of the run folder; collected (and written) on the first report."""
    path = run_dir / META_FILE
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    data = (source or MetaSource.from_system()).collect()
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def clock_kind(scenario: Mapping[str, Any], sim: Mapping[str, Any] | None) -> str:
    """``virtual`` for a simulation run (its times are simulated), else ``wall``."""
    return "virtual" if sim or scenario.get("mode") == "sim" else "wall"


def replay_command(scenario: Mapping[str, Any], sim: Mapping[str, Any] | None, variant: str) -> str | None:
    """The command that runs this run again, rebuilt from the run folder (None without a scenario file)."""
    source = (sim or {}).get("source") or scenario.get("source")
    if not source:
        return None
    seed = (sim or {}).get("seed", scenario.get("seed"))
    target = scenario.get("target") if isinstance(scenario.get("target"), dict) else {}
    kind = str((target or {}).get("kind") or "reference")
    if sim:
        cmd = f"harness replay {shlex.quote(str(source))} --seed {seed} --strategy {sim.get('strategy', 'random')}"
        if sim.get("strategy") == "pct" and sim.get("depth") is not None:
            cmd += f" --depth {sim['depth']}"
        if variant and variant != "default":
            cmd += f" --variant {shlex.quote(variant)}"
        return cmd
    cmd = f"harness run {shlex.quote(str(source))} --seed {seed}"
    if kind == "reference":
        cmd += f" --variant {shlex.quote(variant or 'default')}"
    return cmd
