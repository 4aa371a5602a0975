"""Run folders: the harness replaces only what it wrote itself.

Why: a run writes ``OUT/<scenario name>``, and an earlier run of the same
scenario must not mix its logs into the new one, so the old folder is removed
first. That removal is the one place where a harness command deletes files,
and a careless scenario name (``..``, ``.``, ``a/b``) or a ``--out`` that
points at a user's own folder would turn it into data loss. So:

- a run folder's name is a *safe name*: letters, digits, ``-``, ``_``, ``.``,
  ``+``, ``@``, not starting with a dot, no separators;
- every run folder carries a marker file (``MARKER``), written when the folder
  is created; an existing folder is replaced only if it carries the marker,
  otherwise the run refuses (bad input, exit 2) and names the folder;
- the folder must resolve inside ``--out``: nothing outside it is touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["MARKER", "RunFolderError", "check_run_dir", "check_safe_name", "is_run_folder", "prepare_run_dir"]

MARKER = ".harness-run"
_MARKER_TEXT = "This folder was written by `harness`; a new run of the same scenario replaces it.\n"
_SAFE_EXTRA = set("-_.+@")


class RunFolderError(ValueError):
    """A run folder the harness must not create or replace (bad input, exit 2)."""


def check_safe_name(name: str) -> str | None:
    """``None`` when ``name`` can name a run folder, else why not."""
    if not name or len(name) > 200:
        return "must be 1-200 characters"
    if name.startswith("."):
        return "must not start with '.' (no '.', '..' or hidden folders)"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in _SAFE_EXTRA))})
    if bad:
        return f"may use only letters, digits and '-', '_', '.', '+', '@' (not {''.join(bad)!r})"
    return None


def is_run_folder(path: Path) -> bool:
    return (path / MARKER).is_file()


def check_run_dir(out_dir: Path, name: str) -> Path:
    """Where ``out_dir/name`` would go, or :class:`RunFolderError` if the harness may not write it.

    The error comes (nothing deleted) when ``name`` is not a safe name, when the
    folder would resolve outside ``out_dir``, or when a folder of that name
    exists without the harness's marker. Commands call this for every run
    before the first one starts, so bad input stops them before any work.
    """
    why = check_safe_name(name)
    if why is not None:
        raise RunFolderError(f"run folder name {name!r} {why}")
    out = Path(out_dir)
    run_dir = out / name
    root = out.resolve()
    resolved = run_dir.resolve()
    if resolved.parent != root:
        raise RunFolderError(f"run folder {run_dir} resolves to {resolved}, outside --out {root}")
    if run_dir.is_symlink():
        raise RunFolderError(f"{run_dir} is a symbolic link; the harness does not replace it (remove it yourself)")
    if run_dir.exists() and not (run_dir.is_dir() and is_run_folder(run_dir)):
        raise RunFolderError(
            f"{run_dir} exists and was not written by the harness (no {MARKER} marker): "
            "move it away or choose another --out"
        )
    return run_dir


def prepare_run_dir(out_dir: Path, name: str) -> Path:
    """Create ``out_dir/name`` afresh, replacing an earlier run folder of the harness only (see check_run_dir)."""
    run_dir = check_run_dir(out_dir, name)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / MARKER).write_text(_MARKER_TEXT)
    return run_dir
