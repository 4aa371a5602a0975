"""The per-session pass's temp files: made, marked, removed on a signal, and cleaned after a killed pass.

A :class:`~harness.checkers.stream.Spill` keeps its SQLite file in a directory of its own under the run
folder's ``.harness-tmp/``: ``stream-<pid>-<random>/`` holding an ``owner`` file (the pid and that
process's start time). A pass killed by SIGTERM or SIGINT removes it on the way out (:func:`guard`: the
handler removes every live spill's directory, then lets the signal do what it would have done); one killed
by SIGKILL cannot, and the next pass on that folder removes it (:func:`clean_stale`): only directories of
that name whose ``owner`` names a process that no longer exists (or a live pid that started at another
time: the system has given it to another process since), only the files a spill writes, and the directory
only if that left it empty. ``.harness-tmp/`` itself carries a ``made-by-harness`` file when a pass created it, so a
later pass may remove it once nothing else is in it. Nothing else there is touched.

Two processes on one folder (a ``harness check`` and a ``harness report`` at the same moment) share the area: each
holds an exclusive ``flock`` on the area directory while it creates the area, marks it, makes its own entry in it,
or checks that only the mark is left and removes it (:func:`spill_dir`, :func:`anonymous_file`,
:func:`remove_area`). Without it the last step of one (mark removed, then ``rmdir``) and the first of the other
(its directory made in the area it found) could interleave and leave the area unmarked, and so for ever.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

__all__ = [
    "AREA",
    "AREA_MARK",
    "OWNER",
    "SPILL_FILES",
    "anonymous_file",
    "clean_stale",
    "guard",
    "make_dir",
    "remove_area",
    "remove_dir",
    "spill_dir",
    "unguard",
]

AREA = ".harness-tmp"  # a run folder's own temp area
OWNER = "owner"
AREA_MARK = "made-by-harness"
SPILL_FILES = ("run.sqlite", "run.sqlite-journal", "run.sqlite-wal", "run.sqlite-shm", OWNER)
_SAME_START_S = 0.05  # two readings of one process's start time agree within this (clock-tick rounding)
_NAME = re.compile(r"stream-(\d+)-[A-Za-z0-9_]+")


def make_dir(area: Path) -> Path:
    """A new spill directory under ``area`` (which exists), with its ``owner`` file."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=f"stream-{os.getpid()}-", dir=area))
    start = start_time(os.getpid())
    (d / OWNER).write_text(f"{os.getpid()}\n" if start is None else f"{os.getpid()} {start!r}\n")
    return d


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if that cannot be told: with the pid it
    names one process, where a pid alone may have been given to another since."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # no such process, no access, no psutil: not told
        return None


@contextlib.contextmanager
def locked_area(area: Path, *, create: bool = True) -> Iterator[bool | None]:
    """Hold the exclusive lock of ``area`` (made and marked if absent and ``create``): yields whether this call
    made it (None: absent and not ``create``). Nothing in the area is made or removed by another holder meanwhile.
    An area removed between its creation (or lookup) and the lock is made again. OSError: the area cannot be
    used (not a directory, not writable)."""
    import fcntl

    for _ in range(64):
        made = False
        if create:
            try:
                os.mkdir(area)
                made = True
            except FileExistsError:
                pass
        try:
            fd = os.open(area, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if create:
                continue  # removed by its last user meanwhile: make it again
            yield None
            return
        try:
            with contextlib.suppress(OSError):  # a file system without locks: as before, unlocked
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(area))
            except FileNotFoundError:
                same = False
            if not same:  # removed (or replaced) after it was opened: not the area any more
                if not create:
                    yield None
                    return
                continue
            if made:
                (area / AREA_MARK).touch()
            yield made
            return
        finally:
            os.close(fd)  # releases the lock
    raise OSError(f"{area}: made and removed again 64 times by other processes")


def spill_dir(area: Path) -> Path:
    """A new spill directory (:func:`make_dir`) under ``area``, which is made and marked if absent; directories
    a SIGKILLed pass left there are removed first (:func:`clean_stale`)."""
    with locked_area(area) as made:
        if not made:
            clean_stale(area)  # a pass killed by SIGKILL left its directory
        return make_dir(area)


def anonymous_file(run_dir: Path) -> IO[bytes]:
    """A temp file with no name, for data too large to hold: in ``run_dir``'s ``.harness-tmp/`` (made and
    marked if absent, removed again at once if this made it: the file is unlinked as soon as it is open),
    else in the system's temp directory. Nothing is left on disk whatever ends the process; the space is
    freed when the file is closed."""
    import tempfile

    area = Path(run_dir) / AREA
    made: bool | None = False
    try:
        with locked_area(area) as made:
            return tempfile.TemporaryFile(dir=area)  # unlinked on creation (POSIX)
    except OSError:
        return tempfile.TemporaryFile()
    finally:
        if made:
            remove_area(area)


def remove_dir(d: Path) -> None:
    """Remove a spill directory: the files a spill writes, then the directory if that emptied it."""
    for name in SPILL_FILES:
        try:
            (d / name).unlink()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass


def remove_area(area: Path) -> None:
    """Remove ``.harness-tmp/`` if a pass made it (its mark) and nothing but the mark is in it."""
    try:
        with locked_area(area, create=False) as there:
            if there is None:
                return
            if sorted(p.name for p in area.iterdir()) == [AREA_MARK]:
                (area / AREA_MARK).unlink()
                os.rmdir(area)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours to signal
        return True
    return True


def clean_stale(area: Path) -> list[Path]:
    """Remove the spill directories under ``area`` whose owner process is gone (a pass killed by SIGKILL)."""
    gone: list[Path] = []
    try:
        entries = list(area.iterdir())
    except OSError:
        return gone
    for d in entries:
        m = _NAME.fullmatch(d.name)
        if m is None or not d.is_dir():
            continue
        try:
            fields = (d / OWNER).read_text().split()
            owner = int(fields[0])
            started = float(fields[1]) if len(fields) > 1 else None
        except (OSError, ValueError, IndexError):
            continue  # not marked as a spill's: not ours to judge
        if owner != int(m.group(1)) or owner == os.getpid():
            continue
        if _alive(owner):
            now = start_time(owner) if started is not None else None
            if now is None or abs(now - started) < _SAME_START_S:  # type: ignore[operator]
                continue  # its owner (or a process whose start cannot be told) lives: not stale
            # the pid is alive but started at another time: given to another process since, the owner is gone
        remove_dir(d)
        if not d.exists():
            gone.append(d)
    return gone


# --- signals --------------------------------------------------------------------------------

_LIVE: dict[int, Callable[[], None]] = {}  # id(spill) -> its close
_SAVED: dict[int, Any] = {}  # signal -> the handler it had before the first live spill
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _handler(signum: int, frame: FrameType | None) -> None:
    prev = _SAVED.get(signum, signal.SIG_DFL)
    if callable(prev):  # e.g. SIGINT's KeyboardInterrupt: the exception unwinds through the spill's close
        prev(signum, frame)
        return
    for close in list(_LIVE.values()):
        close()
    _restore()
    if prev == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # die of the signal, as without the pass


def _restore() -> None:
    for s, h in _SAVED.items():
        try:
            signal.signal(s, h)
        except (ValueError, OSError, TypeError):
            pass
    _SAVED.clear()


def guard(key: int, close: Callable[[], None]) -> None:
    """While ``close``'s spill lives, SIGTERM and SIGINT remove its files before the process dies."""
    _LIVE[key] = close
    if _SAVED or threading.current_thread() is not threading.main_thread():
        return  # installed already, or not installable (signals reach the main thread only)
    for s in SIGNALS:
        prev = signal.getsignal(s)
        if prev is None or prev == signal.SIG_IGN:  # ignored, or a handler not set from Python: left as it is
            continue
        _SAVED[s] = prev
        signal.signal(s, _handler)


def unguard(key: int) -> None:
    _LIVE.pop(key, None)
    if not _LIVE and threading.current_thread() is threading.main_thread():
        _restore()
