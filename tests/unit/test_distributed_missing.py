"""``--ray`` without Ray installed: exit 2 with the install hint, never a traceback (issue 15). No Ray needed."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from harness.distributed import pool
from harness.sim.cli import explore_main


def test_explore_ray_without_ray_exits_two_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.import_module

    def no_ray(name: str, *a: Any) -> Any:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a)

    monkeypatch.setattr(pool.importlib, "import_module", no_ray)
    assert pool.ray_available() is False
    assert explore_main(["abort_retries_exhausted", "--seeds", "1", "--ray"]) == 2
    assert "pip install 'session-race-harness[ray]'" in capsys.readouterr().err
