"""``kill -TERM`` of a ``harness run`` child is never lost, even when it lands inside a weakref callback.

The child's checking phase (after the run folder is saved) runs a weakref callback that waits for the signal,
as asyncio's task WeakSet or the checkers' memo do at random; the test sends SIGTERM then. Before the fix Python
dropped the KeyboardInterrupt raised there ("Exception ignored in ...") and the run went on to check and report
as if nothing had been asked; now it ends as interrupted (130) and leaves a folder ``harness check`` judges.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.checkers.__main__ import main as check_main
from harness.rundata import RUN_FILES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
name = "term_me"
[workload]
sessions = 6
concurrency = 3
turns = 2
"""

CHILD = """
import os, sys, time, weakref
import harness.verdict as verdict
marker, real = sys.argv.pop(1), verdict.check_folder

def check_folder(*args, **kw):
    class Obj:
        pass

    def callback(_):
        open(marker, "w").close()  # the test sends SIGTERM now; its handler runs in this loop
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pass

    obj = Obj()
    ref = weakref.ref(obj, callback)
    del obj
    return real(*args, **kw)

verdict.check_folder = check_folder
from harness.cli import main
sys.argv[0] = "harness"
raise SystemExit(main())
"""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX signals")
def test_sigterm_inside_a_weakref_callback_ends_the_run_with_a_checkable_folder(tmp_path: Path) -> None:
    scen = tmp_path / "term_me.toml"
    scen.write_text(SCENARIO)
    out, marker = tmp_path / "out", tmp_path / "in_callback"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marker), "run", str(scen), "--out", str(out), "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=30)[0].decode()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output  # interrupted, not a run that went on to its verdict
    run_dir = out / "term_me"
    assert not (run_dir / RUN_FILES["verdicts"]).exists(), output  # the check was cut
    assert check_main([str(run_dir), "--json"]) in (0, 1), output  # the saved folder reads and is judged
