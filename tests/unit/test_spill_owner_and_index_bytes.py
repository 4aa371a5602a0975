"""Two small accounting fixes (issue 13): a spill directory whose owner pid now names another process is
stale; LogIndex.nbytes() counts the table its odd-shaped strings (16-digit caller ids) are coded into. <1 s."""

from __future__ import annotations

import os
from pathlib import Path

from harness.checkers import spill_area
from harness.checkers.stream_index import LogIndex


def test_a_live_pid_that_started_at_another_time_is_not_the_owner(tmp_path: Path) -> None:
    other = os.getppid()  # a live process that is not this one
    start = spill_area.start_time(other)
    assert start is not None
    mine = spill_area.make_dir(tmp_path)
    pid, started = (mine / spill_area.OWNER).read_text().split()
    assert int(pid) == os.getpid() and abs(float(started) - (spill_area.start_time(os.getpid()) or 0)) < 0.05
    owned = tmp_path / f"stream-{other}-owned"
    reused = tmp_path / f"stream-{other}-reused"
    old = tmp_path / f"stream-{other}-old"  # an owner file of before: the pid alone, alive: kept
    for d, text in ((owned, f"{other} {start!r}\n"), (reused, f"{other} {start - 3600.0!r}\n"), (old, f"{other}\n")):
        d.mkdir()
        (d / spill_area.OWNER).write_text(text)
    assert spill_area.clean_stale(tmp_path) == [reused]
    assert owned.is_dir() and old.is_dir() and mine.is_dir() and not reused.exists()


def test_log_index_nbytes_counts_the_code_table_of_16_digit_caller_ids() -> None:
    def lines(n: int) -> list[dict[str, object]]:
        return [
            {"event": "chat_start", "req_id": f"{k:08x}", "caller_request_id": f"{k:016x}", "ts": 1.0 + k}
            | {"pid": 1, "worker_port": 8101, "inflight_now": 1}
            for k in range(n)
        ]

    small, large = LogIndex(lines(10)), LogIndex(lines(2010))
    # the columns take 66 bytes an id; each 16-digit id is also an entry of the IdTable (8 bytes of value, 4 of
    # slot at most 60% full: 12 bytes an id or more), no longer a str, a dict entry and an int code (~150 bytes)
    per_id = (large.nbytes() - small.nbytes()) / 2000
    assert 66 + 12 <= per_id < 66 + 40
