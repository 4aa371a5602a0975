"""``RayPool`` keeps the command's SIGTERM handler through ``ray.init`` (issue 15). No Ray needed.

``ray.init`` puts in Ray's own SIGTERM handler; ``harness mutate --ray`` killed by SIGTERM then aborted
(signal 6) with its Ray tasks and temp trees left behind instead of taking its ``exit_on_sigterm`` path.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from harness.distributed import pool


@pytest.fixture
def term_handler() -> Iterator[Any]:
    previous = signal.getsignal(signal.SIGTERM)

    def ours(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, ours)
    try:
        yield ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_handler_replaced_inside_is_put_back(term_handler: Any) -> None:
    with pool._sigterm_kept():
        signal.signal(signal.SIGTERM, lambda s, f: None)  # what ray.init does
    assert signal.getsignal(signal.SIGTERM) is term_handler


def test_a_default_handler_is_left_to_whatever_came_in() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:

        def rays(signum: int, frame: Any) -> None:
            pass

        with pool._sigterm_kept():
            signal.signal(signal.SIGTERM, rays)
        assert signal.getsignal(signal.SIGTERM) is rays
    finally:
        signal.signal(signal.SIGTERM, previous)
