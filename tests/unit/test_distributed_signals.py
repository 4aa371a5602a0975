"""``RayPool`` keeps the command's SIGTERM handler through ``ray.init`` (issue 15). No Ray needed.

``ray.init`` puts in Ray's own SIGTERM handler; ``harness mutate --ray`` killed by SIGTERM then aborted
(signal 6) with its Ray tasks and temp trees left behind instead of taking its ``exit_on_sigterm`` path.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from harness.distributed import pool


@pytest.fixture
def term_handler() -> Iterator[Any]:
    previous = signal.getsignal(signal.SIGTERM)

    def ours(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, ours)
    try:
        yield ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_handler_replaced_inside_is_put_back(term_handler: Any) -> None:
    with pool._sigterm_kept():
        signal.signal(signal.SIGTERM, lambda s, f: None)  # what ray.init does
    assert signal.getsignal(signal.SIGTERM) is term_handler


def test_a_default_handler_is_left_to_whatever_came_in() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:

        def rays(signum: int, frame: Any) -> None:
            pass

        with pool._sigterm_kept():
            signal.signal(signal.SIGTERM, rays)
        assert signal.getsignal(signal.SIGTERM) is rays
    finally:
        signal.signal(signal.SIGTERM, previous)


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, not yet reaped by its new parent
    except OSError:
        return True


def test_a_guarded_child_dies_with_a_sigkilled_parent(tmp_path: Any) -> None:
    """``ray.cancel(force=True)`` SIGKILLs the task's worker: its ``harness run`` (own session) must go too (#15)."""
    import os
    import subprocess
    import sys
    import time

    worker = tmp_path / "worker.py"
    worker.write_text(
        "import subprocess, sys, time\n"
        "from harness.mutate._driver import start_guarded\n"
        "p, _ = start_guarded([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    w = subprocess.Popen([sys.executable, str(worker)], stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout is not None
        child = int(w.stdout.readline())
        assert not _gone(child)
        w.kill()  # as ray.cancel(force=True) does to a worker: no finally, no except runs
        w.wait()
        deadline = time.monotonic() + 10.0
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the child outlived its SIGKILLed parent"
    finally:
        w.kill()
        w.wait()
        if w.stdout is not None:
            w.stdout.close()
        if "child" in locals() and not _gone(child):
            os.killpg(child, 9)
