"""``--ray`` without Ray installed: exit 2 with the install hint, never a traceback (issue 15). No Ray needed."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from harness.distributed import pool
from harness.sim.cli import explore_main

HINT = "pip install 'session-race-harness[ray]'"


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import ray`` fails as on a machine without the extra."""
    real = importlib.import_module

    def import_module(name: str, *a: Any) -> Any:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a)

    monkeypatch.setattr(pool.importlib, "import_module", import_module)


@pytest.mark.usefixtures("no_ray")
def test_explore_ray_without_ray_exits_two_with_the_install_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert pool.ray_available() is False
    assert explore_main(["abort_retries_exhausted", "--seeds", "1", "--ray"]) == 2
    assert HINT in capsys.readouterr().err


@pytest.mark.usefixtures("no_ray")
def test_run_and_mutate_with_ray_without_ray_exit_two_with_the_install_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from harness.mutate.cli import main as mutate_main
    from harness.runner.cli import main as run_main

    assert run_main(["abort_retries_exhausted", "--ray", "--out", str(tmp_path / "run")]) == 2
    assert HINT in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # no server was started
    assert run_main(["abort_retries_exhausted", "--ray", "--mode", "sim", "--out", str(tmp_path / "sim")]) == 2
    assert "not with --mode sim" in capsys.readouterr().err
    assert run_main(["abort_retries_exhausted", "--agents-per-node", "2", "--out", str(tmp_path / "k")]) == 2
    assert "--agents-per-node needs --ray" in capsys.readouterr().err
    assert mutate_main(["--ray", "--sample", "1", "--out", str(tmp_path / "mutate")]) == 2
    assert HINT in capsys.readouterr().err
