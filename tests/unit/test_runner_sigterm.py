"""SIGTERM to ``harness run`` is never lost (issue 13).

The handler used to raise KeyboardInterrupt from whatever frame ran; inside a weakref callback (asyncio's task
WeakSet, the checkers' memo) Python prints "Exception ignored" and drops it, and the run went on to check and
report. Each test here makes the signal land inside a weakref callback, in plain code and on a running loop.
"""

from __future__ import annotations

import asyncio
import signal
import time
import weakref
from typing import Any

import pytest

from harness.runner.cli import _sigterm_as_interrupt

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX signals"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),  # the drop is the point
]


class _Obj:
    pass


def _term_inside_a_weakref_callback() -> None:
    """A SIGTERM whose handler runs while a weakref callback runs (Python drops what it raises there)."""

    def callback(_: Any) -> None:
        signal.raise_signal(signal.SIGTERM)
        for _i in range(10_000):  # the Python-level handler runs at one of these bytecodes
            pass

    obj = _Obj()
    ref = weakref.ref(obj, callback)
    del obj  # the callback runs here
    assert ref() is None


def test_a_sigterm_in_a_weakref_callback_of_plain_code_still_interrupts() -> None:
    restore = _sigterm_as_interrupt()
    interrupted = False
    try:
        _term_inside_a_weakref_callback()
        deadline = time.monotonic() + 10  # a bound, not a timing assert: the re-raise comes within ms
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        restore()
    assert interrupted


def test_a_sigterm_in_a_weakref_callback_on_the_loop_is_raised_by_the_loop() -> None:
    stopped: list[str] = []

    async def main() -> None:
        try:
            asyncio.get_running_loop().call_soon(_term_inside_a_weakref_callback)
            await asyncio.sleep(10)
            stopped.append("slept through")
        finally:
            stopped.append("finally")  # cleanup (the processes' stop) runs

    restore = _sigterm_as_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        restore()
    assert stopped == ["finally"]


def test_restore_puts_the_previous_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)
    import sys

    hook = sys.unraisablehook
    _sigterm_as_interrupt()()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)) == before
    assert sys.unraisablehook is hook
