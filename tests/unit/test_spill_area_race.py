"""A report's temp file and a check's spill entering one run folder's ``.harness-tmp/`` at the same moment."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from harness.checkers import spill_area
from harness.checkers.spill_area import AREA, AREA_MARK
from harness.checkers.stream import Spill


def test_an_area_entered_while_its_last_user_removes_it_is_not_left_unmarked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    area = tmp_path / AREA
    real_rmdir = os.rmdir
    other: dict[str, Any] = {}

    def check_pass() -> None:  # the other process: `harness check` on the same folder
        sp = Spill(tmp_path)
        other["marked"] = (area / AREA_MARK).exists()
        sp.close()

    def racing_rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        # the report's temp file is open, the area's mark is gone, its rmdir is next: the check's pass starts now
        if Path(path) == area and "thread" not in other:
            other["thread"] = t = threading.Thread(target=check_pass)
            t.start()
            t.join(0.3)  # (it waits for the area's lock until this removal is done)
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", racing_rmdir)
    spill_area.anonymous_file(tmp_path).close()  # the report's lean_run makes and removes the area
    other["thread"].join(10)
    assert other["marked"], "the check's pass worked in an area nobody has marked as the harness's"
    assert not area.exists(), f"left behind: {sorted(p.name for p in area.iterdir())}"


def test_an_area_the_user_made_is_used_and_left(tmp_path: Path) -> None:
    area = tmp_path / AREA
    area.mkdir()
    spill_area.anonymous_file(tmp_path).close()
    d = spill_area.spill_dir(area)
    assert d.parent == area and not (area / AREA_MARK).exists()
    spill_area.remove_dir(d)
    spill_area.remove_area(area)
    assert area.is_dir() and list(area.iterdir()) == []
