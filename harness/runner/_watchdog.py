"""The orphan watchdog: kills the runner's process groups when the runner itself dies.

Why a separate process: a runner killed with SIGKILL runs no ``finally``, no
``atexit``, no signal handler, so it cannot stop what it started. The Linux
parent-death signal (``PR_SET_PDEATHSIG``, set on every direct child) covers
the direct children, but not what they spawned (a server that forks workers,
a shell wrapper) and not platforms without ``prctl``. So the runner also
starts this small process, in its own session, and tells it on a pipe which
process groups it owns (``+PGID`` / ``-PGID`` lines). When the pipe reaches
end of file (the kernel closes it when the runner dies, however it died) the
watchdog sends SIGTERM to every group still registered, SIGKILL to what is
left after a short grace, and exits. A runner that stops its groups itself
unregisters them first, so the watchdog then has nothing to do.

Run as a plain script (``python _watchdog.py``), not as ``-m harness...``, so
it starts in milliseconds and imports nothing of the project.
"""

from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["main"]

GRACE_S = 2.0


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a recycled id that is not ours any more
        return False
    return True


def _signal(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_groups(groups: set[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, wait up to ``grace_s`` for them to go, SIGKILL the rest."""
    for g in groups:
        _signal(g, signal.SIGTERM)
    deadline = time.monotonic() + grace_s  # seam-ok: a standalone process, not protocol code
    while any(_alive(g) for g in groups) and time.monotonic() < deadline:  # seam-ok: see above
        time.sleep(0.05)
    for g in groups:
        if _alive(g):
            _signal(g, signal.SIGKILL)


def main() -> int:
    groups: set[int] = set()
    me = os.getpgid(0)
    for line in sys.stdin:
        line = line.strip()
        if len(line) < 2 or line[0] not in "+-" or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if pgid <= 1 or pgid == me:
            continue
        if line[0] == "+":
            groups.add(pgid)
        else:
            groups.discard(pgid)
    kill_groups(groups)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the runner is not for us: we wait for the pipe
    sys.exit(main())
