"""The per-session pass's temp files under ``<run>/.harness-tmp/`` do not outlive it: a pass killed by SIGTERM or
SIGINT removes them on the way out (and still dies of the signal); one killed by SIGKILL leaves them, and the next
pass on that folder removes them (its directory is named and marked as a spill's, its owner is gone); nothing
else there is touched. ~3 s: three child processes that open a spill and wait to be signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_checkers_builders import clean_run

from harness.checkers.spill_area import AREA_MARK, OWNER
from harness.checkers.stream import TMP_DIR, check_streaming

CHILD = """
import sys, time
from pathlib import Path
from harness.checkers.stream import Spill
with Spill(Path(sys.argv[1])) as sp:
    print(sp.dir, flush=True)
    time.sleep(60)
"""


def _spill_child(run: Path) -> tuple[subprocess.Popen[str], Path]:
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    d = Path(p.stdout.readline().strip())
    assert d.parent == run / TMP_DIR and (d / "run.sqlite").is_file()
    assert (d / OWNER).read_text().split()[0] == str(p.pid)  # the pid, then its start time
    return p, d


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_removes_the_pass_temp_files(tmp_path: Path, sig: signal.Signals) -> None:
    clean_run().build().save(tmp_path)
    p, _ = _spill_child(tmp_path)
    p.send_signal(sig)
    code = p.wait(timeout=30)
    assert p.stdout is not None
    p.stdout.close()
    assert code == -sig  # it still dies of the signal
    assert not (tmp_path / TMP_DIR).exists()


def test_a_later_pass_removes_what_a_killed_pass_left_and_only_that(tmp_path: Path) -> None:
    clean_run().build().save(tmp_path)
    p, left = _spill_child(tmp_path)
    p.kill()
    p.wait(timeout=30)
    assert p.stdout is not None
    p.stdout.close()
    area = tmp_path / TMP_DIR
    assert left.is_dir() and (area / AREA_MARK).exists()
    alive = area / f"stream-{os.getpid()}-live"  # a live process's (this one): not stale
    alive.mkdir()
    (alive / OWNER).write_text(f"{os.getpid()}\n")
    foreign = area / f"stream-{p.pid}-theirs"  # named like one, no owner file: not ours to judge
    foreign.mkdir()
    got = check_streaming(tmp_path, ["ownership"])
    assert got.streamed == ["ownership"]
    assert not left.exists() and alive.is_dir() and foreign.is_dir()
    alive.joinpath(OWNER).unlink()
    alive.rmdir()
    foreign.rmdir()
    check_streaming(tmp_path, ["ownership"])
    assert not area.exists()  # a pass made it, and nothing else is in it any more
