"""A test that runs ``harness run`` in-process keeps its pytest-timeout guard (the reviewer's repro).

pytest-timeout's signal method is a SIGALRM handler and an ``ITIMER_REAL`` timer. ``_Interrupt`` (harness run's
SIGTERM handling) used to take SIGALRM over and, on restore, cancel the timer: a test that installed and restored
it, then hung, was never timed out. Here a child pytest runs such a test with ``@pytest.mark.timeout(2)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="pytest-timeout's signal method is POSIX"),
]

ROOT = Path(__file__).resolve().parents[2]

CHILD_TEST = """
import time
import pytest
from harness.runner.cli import _Interrupt

@pytest.mark.timeout(2)
def test_after_harness_run():
    restore = _Interrupt().install()   # what harness.runner.cli._run does around a run
    time.sleep(0.1)
    restore()
    time.sleep(20)   # pytest-timeout must end this at 2 s
"""


def test_a_test_around_install_and_restore_is_still_timed_out(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(CHILD_TEST)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "timeout", "test_hang.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # failed (by the timeout), not passed after its 20 s
    assert "Timeout (>2.0s) from pytest-timeout" in out, out
