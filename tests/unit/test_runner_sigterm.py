"""SIGTERM to ``harness run`` is never lost (issue 13).

The handler used to raise KeyboardInterrupt from whatever frame ran; inside a weakref callback (asyncio's task
WeakSet, the checkers' memo) Python prints "Exception ignored" and drops it, and the run went on to check and
report. Each test here makes the signal land inside a weakref callback, in plain code and on a running loop.

The re-raise must leave SIGALRM alone: it is pytest-timeout's (and anyone's), with its pending timer. It used to
take SIGALRM over for the whole run, swallow alarms meant for the previous handler, and cancel the previous
timer on restore, so every in-process ``run_main`` test lost its timeout guard.
"""

from __future__ import annotations

import asyncio
import signal
import time
import weakref
from typing import Any

import pytest

from harness.runner.cli import _Interrupt, _sigterm_as_interrupt

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


class _Alarms:
    """A SIGALRM handler of our own for the test (pytest-timeout's handler and timer are put back after)."""

    def __init__(self) -> None:
        self.got: list[int] = []

    def __enter__(self) -> _Alarms:
        self._handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self._timer = signal.setitimer(signal.ITIMER_REAL, 0)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._handler)
        signal.setitimer(signal.ITIMER_REAL, *self._timer)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        self.got.append(signum)


def test_restore_leaves_a_pending_alarm_and_its_handler() -> None:
    with _Alarms() as alarms:
        signal.setitimer(signal.ITIMER_REAL, 600)  # someone's timer (pytest-timeout's, say)
        restore = _sigterm_as_interrupt()
        restore()
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert remaining > 0  # not cancelled
        assert signal.getsignal(signal.SIGALRM) == alarms._on_alarm
        assert alarms.got == []


def test_an_alarm_during_a_run_still_reaches_the_previous_handler() -> None:
    with _Alarms() as alarms:
        restore = _sigterm_as_interrupt()
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            deadline = time.monotonic() + 30  # a bound, not a timing assert: the alarm comes within ms
            while not alarms.got and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            restore()
        assert alarms.got == [signal.SIGALRM]


def test_a_redelivery_still_due_at_restore_is_never_sent() -> None:
    """A dropped interrupt the run outran: restore cancels its redelivery, so no stray SIGTERM reaches the
    previous handler (the default one would kill the process); ``pending`` tells ``_run`` it was interrupted."""
    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        interrupt = _Interrupt()
        restore = interrupt.install()
        try:
            _term_inside_a_weakref_callback()  # dropped; a redelivery is now due
            timer = interrupt._timer
        finally:
            restore()
        assert timer is not None and interrupt.pending
        timer.join(30)  # had it not been cancelled it would have fired by now
        time.sleep(0.05)  # and its signal's handler run (it runs at the next bytecode or wakes this sleep)
        assert got == []
    finally:
        signal.signal(signal.SIGTERM, previous)
