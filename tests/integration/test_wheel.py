"""A package people install: the wheel carries the scenario library, incidents, baselines and tokenizers (issue 14).

Builds the wheel, installs it (no dependencies: they come from the test's own
environment through a path file, never from a source checkout) into a fresh
venv, and runs ``harness --version``, ``harness run --list`` and one scenario
from a folder that has no scenarios/ of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_installs_and_runs_the_library(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("session_race_harness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in (
        "harness/_library/scenarios/abort_retry_supersede.toml",
        "harness/_library/scenarios/incidents/dup_retry_race.toml",
        "harness/_library/scenarios/incidents/dup_retry_race.log.jsonl",
        "harness/_library/baselines/sim/mixed_production/history.jsonl",
        "harness/tokenizer/data/reasoning/tokenizer.json",
        "harness/tokenizer/data/chatml/tokenizer_config.json",
    ):
        assert must in names, must

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path).returncode == 0
    py = venv / "bin" / "python"
    site = Path(
        _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    )
    # dependencies from this environment (a plain path entry: its editable-install hook is not run)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], tmp_path)
    if inst.returncode != 0:  # an older pip without --python: unpack the wheel into site-packages ourselves
        zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = _run([str(py), "-c", "import harness; print(harness.__file__)"], elsewhere, env)
    assert str(site) in where.stdout, where.stdout + where.stderr  # the installed copy, not the checkout

    version = _run([str(py), "-m", "harness.cli", "--version"], elsewhere, env)
    assert version.returncode == 0 and version.stdout.startswith("harness "), version.stderr
    listing = _run([str(py), "-m", "harness.cli", "run", "--list"], elsewhere, env)
    assert listing.returncode == 0, listing.stderr
    for name in ("abort_retry_supersede", "delete_during_proxy", "mixed_production"):
        assert name in listing.stdout
    one = _run(
        [str(py), "-m", "harness.cli", "run", "abort_retry_supersede", "--mode", "sim", "--out", "out", "--quiet"],
        elsewhere,
        env,
    )
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert (elsewhere / "out" / "abort_retry_supersede" / "verdicts.json").is_file()
