"""GET bodies kept in history.jsonl (RunData.load's lazy bodies): same verdicts, same bytes, bounded decoding.

A large history keeps its collect GET bodies (whole session states) in the file
and decodes one when a checker asks; these tests force that mode on small runs
(``lazy_bodies=True``, every GET line eligible) and compare it with the eager load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import clean_run, random_clean_run

from harness import rundata
from harness.checkers import check_all, ops
from harness.checkers.ops import Snapshot, pair_ops, snapshots
from harness.rundata import RunData, StoredBody, body_of


@pytest.fixture
def every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rundata, "LAZY_LINE_BYTES", 0)


def _verdicts(run: RunData) -> str:
    return json.dumps([v.to_dict() for v in check_all(run)], sort_keys=True)


def _big_run(sessions: int) -> RunData:
    b = clean_run()
    for i in range(sessions):
        sid = b.create()
        b.episode(sid, 2 + i % 3)
        b.collect_and_delete(sid)
    return b.build()


@pytest.mark.parametrize("share", [False, True], ids=["small", "shared"])
def test_lazy_load_gives_the_same_verdicts_and_writes_the_same_bytes(
    tmp_path: Path, every_line: None, share: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if share:  # as a large run: the checkers share one Links and one set of snapshots
        monkeypatch.setattr(ops, "SHARE_LINKS_EVENTS", 0)
    runs = [clean_run().build(), *(random_clean_run(seed).build() for seed in range(2))]
    bad = clean_run().build()  # one committed record dropped from a collected body: some checker must say so
    g = next(e for e in bad.history if e.get("f") == "get" and isinstance(e.get("body"), dict))
    g["body"]["records"] = g["body"]["records"][:-1]
    for k, run in enumerate([*runs, bad]):
        d = tmp_path / f"r{k}"
        run.save(d)
        eager, lazy = RunData.load(d, lazy_bodies=False), RunData.load(d, lazy_bodies=True)
        stored = [e for e in lazy.history if isinstance(e.get("body"), StoredBody)]
        assert stored and all(e["f"] == "get" for e in stored)
        assert [body_of(e) for e in lazy.history] == [e.get("body") for e in eager.history]
        assert _verdicts(lazy) == _verdicts(eager)
        before = (d / "history.jsonl").read_bytes()
        lazy.save(d)  # into its own folder: the stored bodies are read from the file being replaced
        assert (d / "history.jsonl").read_bytes() == before
    assert '"invalid"' in _verdicts(RunData.load(tmp_path / f"r{len(runs)}", lazy_bodies=True))


def test_a_walk_over_every_snapshot_holds_a_bounded_number_of_states(tmp_path: Path, every_line: None) -> None:
    run = _big_run(3 * Snapshot.KEEP_RECORDS)
    run.save(tmp_path)
    lazy = RunData.load(tmp_path, lazy_bodies=True)
    snaps, _ = snapshots(lazy, pair_ops(lazy.history))
    collected = [s for s in snaps.values() if isinstance(s.stored, StoredBody)]
    assert len(collected) > 2 * Snapshot.KEEP_RECORDS
    seen: list[Any] = [len(s.records) for s in collected]  # every state decoded and normalized once
    assert sum(seen) > 0
    holding = [s for s in collected if s._records is not None]
    assert len(holding) <= Snapshot.KEEP_RECORDS
    first = collected[0].stored
    assert isinstance(first, StoredBody)
    assert len(first.source.recent) <= StoredBody.KEEP
    assert len(first.source.holding) <= Snapshot.KEEP_RECORDS
    eager = RunData.load(tmp_path, lazy_bodies=False)
    esnaps, _ = snapshots(eager, pair_ops(eager.history))
    assert {sid: s.records for sid, s in snaps.items()} == {sid: s.records for sid, s in esnaps.items()}


def test_a_small_history_is_loaded_as_before(tmp_path: Path) -> None:
    clean_run().build().save(tmp_path)
    run = RunData.load(tmp_path)
    assert not any(isinstance(e.get("body"), StoredBody) for e in run.history)


def test_a_stored_body_that_cannot_be_read_back_is_an_unknown_with_the_reason(tmp_path: Path, every_line: None) -> None:
    """A corrupt stored body is the run folder's problem: the checkers that read it say unknown and why,
    nothing raises out of check_all (the file is changed in place after the load, as a disk error would)."""
    run = _big_run(3)
    run.save(tmp_path)
    lazy = RunData.load(tmp_path, lazy_bodies=True)
    stored = [e["body"] for e in lazy.history if isinstance(e.get("body"), StoredBody)]
    assert stored
    with (tmp_path / "history.jsonl").open("r+b") as fh:  # the same file the descriptor reads
        for b in stored:
            fh.seek(b.offset + b.length // 2)
            fh.write(b"\x00garbage{{")
    verdicts = check_all(lazy)
    unreadable = [v for v in verdicts if "run data unreadable" in v.notes]
    assert unreadable, [v.to_dict() for v in verdicts]
    for v in unreadable:
        assert v.status == "unknown" and "history.jsonl: byte" in v.notes and "cannot be read back" in v.notes
    assert not any("checker crashed" in v.notes for v in verdicts)


def test_nothing_of_a_checked_run_outlives_it(
    tmp_path: Path, every_line: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkers' memo (pairing, Links, snapshots) and the decoded-body caches live on the run's own
    objects: once the run is dropped, it is freed and its history file's descriptor is closed."""
    import gc
    import os
    import weakref

    monkeypatch.setattr(ops, "SHARE_LINKS_EVENTS", 0)  # as a large run: Links and snapshots shared (memoized)
    _big_run(4).save(tmp_path)
    run = RunData.load(tmp_path, lazy_bodies=True)
    check_all(run)
    fd = next(e["body"] for e in run.history if isinstance(e.get("body"), StoredBody)).source.fd
    ref = weakref.ref(run)
    del run
    gc.collect()
    assert ref() is None
    with pytest.raises(OSError):
        os.fstat(fd)
