"""`harness demo` is what `make run` showed first; keep it working end to end."""

from __future__ import annotations

from harness.demo import main


def test_demo_conversation_passes(capsys: object) -> None:
    assert main(["--seed", "3"]) == 0
