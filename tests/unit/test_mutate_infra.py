"""A server that could not bind in a live suite is the harness's failure, not a mutant kill (#15). No Ray, no runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.mutate import _driver
from harness.mutate._driver import MutantResult, _infra_failure, _judge_live

BIND = "RuntimeError: server-1 exited during startup (exit 1):\n  OSError: [Errno 98] Address already in use\n"


def _error(out: Path, run: str, text: str) -> None:
    (out / run).mkdir(parents=True)
    (out / run / "error.txt").write_text(text)


def test_bind_failure_is_found_and_not_judged_a_kill(tmp_path: Path) -> None:
    _error(tmp_path, "abort_retries_exhausted", "RuntimeError: fake exited during startup (exit 3): ImportError\n")
    assert _infra_failure(tmp_path) is None  # a tree that cannot start is the tree's own failure
    _error(tmp_path, "delete_during_proxy", BIND)
    infra = _infra_failure(tmp_path)
    assert infra is not None and infra["kind"] == "bind" and infra["run"] == "delete_during_proxy"
    r = MutantResult(mutant=None, status="survived")  # type: ignore[arg-type]
    _judge_live(r, {"rc": 1, "invalid": {}, "seconds": 3.0, "infra": infra})
    assert r.status == "infra_error" and "Address already in use" in (r.reason or "")
    r2 = MutantResult(mutant=None, status="survived")  # type: ignore[arg-type]
    _judge_live(r2, {"rc": 1, "invalid": {}, "seconds": 3.0})
    assert r2.status == "killed"  # the same exit without the sign: as before


@pytest.mark.parametrize(
    ("first", "second", "status"),
    [("bind", None, "survived"), ("bind", "bind", "infra_error"), ("listen", "listen", "killed")],
)
def test_live_test_retries_once_on_fresh_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, second: str | None, status: str
) -> None:
    calls: list[int] = []

    def fake_suite(root: Path, tree: Path, work: Path, timeout_s: float, suite: Any) -> dict[str, Any]:
        kind = first if not calls else second
        calls.append(1)
        if kind is None:
            return {"rc": 0, "invalid": {}, "seconds": 1.0}
        return {"rc": 1, "invalid": {}, "seconds": 1.0, "infra": {"kind": kind, "run": "x", "line": kind}}

    monkeypatch.setattr(_driver, "_make_tree", lambda root, work, mutant: work / "tree")
    monkeypatch.setattr(_driver, "_live_suite", fake_suite)
    res = _driver.live_test(tmp_path, None, tmp_path / "w", 10.0)
    assert len(calls) == 2 and res["retried_after"] == first
    r = MutantResult(mutant=None, status="survived")  # type: ignore[arg-type]
    if res["rc"] != 0:
        _judge_live(r, res)
    assert r.status == status
