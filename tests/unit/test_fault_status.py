"""fault_status: the one parser of a fault name's HTTP status, shared by http_framing and exactly_once."""

from __future__ import annotations

import pytest

from harness.checkers.ops import fault_status


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("http_503", 503),
        ("status_412", 412),
        ("http_401", 401),
        ("http_", None),
        ("http_5x3", None),
        ("reset", None),
        ("retokenized_prompt", None),
        (None, None),
        (503, None),
        ("HTTP_503", None),
    ],
)
def test_fault_status(name: object, code: int | None) -> None:
    assert fault_status(name) == code
