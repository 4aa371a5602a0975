"""live_gc: the collector's settings during a live run, and put back after it (#15)."""

from __future__ import annotations

import gc

from harness.runner._drive import LIVE_GC_THRESHOLD0, live_gc


def test_live_gc_freezes_and_restores_nested() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with live_gc():
        assert gc.get_threshold()[0] == max(before[0], LIVE_GC_THRESHOLD0)
        assert gc.get_freeze_count() > frozen
        with live_gc():  # an overlapping run: the outer one restores
            pass
        assert gc.get_threshold()[0] == max(before[0], LIVE_GC_THRESHOLD0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
