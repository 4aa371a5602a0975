"""Run folders: a run replaces only what the harness wrote, and never reaches outside --out (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runfolder import MARKER, RunFolderError, is_run_folder, prepare_run_dir


def test_a_new_run_folder_carries_the_marker(tmp_path: Path) -> None:
    d = prepare_run_dir(tmp_path / "out", "abort_retry_supersede@default")
    assert d == tmp_path / "out" / "abort_retry_supersede@default"
    assert is_run_folder(d)


def test_an_earlier_run_folder_is_replaced(tmp_path: Path) -> None:
    d = prepare_run_dir(tmp_path, "s")
    (d / "history.jsonl").write_text("old\n")
    d2 = prepare_run_dir(tmp_path, "s")
    assert d2 == d and not (d / "history.jsonl").exists() and (d / MARKER).exists()


def test_a_folder_the_harness_did_not_write_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "s"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(RunFolderError, match="not written by the harness"):
        prepare_run_dir(tmp_path, "s")
    assert (mine / "thesis.tex").read_text() == "precious"


def test_a_file_of_that_name_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("precious")
    with pytest.raises(RunFolderError):
        prepare_run_dir(tmp_path, "s")
    assert (tmp_path / "s").read_text() == "precious"


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/etc", ".git", ""])
def test_unsafe_names_never_touch_anything(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "beside.txt").write_text("keep")
    with pytest.raises(RunFolderError):
        prepare_run_dir(out, name)
    assert (tmp_path / "beside.txt").read_text() == "keep"
    assert list(out.iterdir()) == []


def test_a_symlinked_run_folder_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / MARKER).write_text("")
    (target / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "s").symlink_to(target)
    with pytest.raises(RunFolderError):
        prepare_run_dir(out, "s")
    assert (target / "keep.txt").exists()


def test_harness_run_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    from harness.runner.cli import main

    scen = tmp_path / "tiny.toml"
    scen.write_text('name = "tiny"\n[workload]\nsessions = 1\nturns = 1\n')
    out = tmp_path / "out"
    (out / "tiny").mkdir(parents=True)
    (out / "tiny" / "notes.txt").write_text("mine")
    assert main([str(scen), "--mode", "sim", "--out", str(out), "--quiet"]) == 2
    assert (out / "tiny" / "notes.txt").read_text() == "mine"
    # a run folder the harness wrote is replaced by the next run
    (out / "tiny" / "notes.txt").unlink()
    (out / "tiny").rmdir()
    assert main([str(scen), "--mode", "sim", "--out", str(out), "--quiet"]) == 0
    assert main([str(scen), "--mode", "sim", "--out", str(out), "--quiet"]) == 0
    assert is_run_folder(out / "tiny")
