"""exactly_once when the backend's execution log is lost mid-run (issue 13).

A backend that restarts (another ``boot_id``) or whose log is cleared by
``POST /admin/reset`` no longer holds the executions that ran before: their
acknowledged chats look executed-never. The runner reads the fake's
``/stats`` at the start and the end of the run (``probe`` ops, ``value:
"backend_stats"``); exactly_once must then say unknown with the reason, not
report the lost log as violations. A normal run keeps its verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import harness.fake_sglang as fake_pkg
from harness.checkers import CHECKERS
from harness.runner import run_inprocess
from harness.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
CHAT = "/v1/chat/completions"


class LoseLogAfter:
    """An ASGI wrapper around the fake: after ``n`` chats its log is lost (reset, or a new process)."""

    def __init__(self, inner: Any, n: int, how: str, make: Any) -> None:
        self.inner, self.n, self.how, self.make = inner, n, how, make
        self.chats = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT:
            self.chats += 1
            if self.chats == self.n:
                if self.how == "reset":
                    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.inner)) as c:
                        assert (await c.post("http://backend/admin/reset")).status_code == 200
                else:
                    self.inner = self.make(boot_id="restarted")
        await self.inner(scope, receive, send)


def run_with(monkeypatch: pytest.MonkeyPatch, how: str | None) -> Any:
    real = fake_pkg.create_app

    def make(**kw: Any) -> Any:
        app = real(**{**made, **kw})
        return app if how is None else LoseLogAfter(app, 8, how, make)

    made: dict[str, Any] = {}

    def patched(**kw: Any) -> Any:
        made.update(kw)
        return make()

    monkeypatch.setattr(fake_pkg, "create_app", patched)
    sc = load_scenario(SCENARIOS / "abort_retry_supersede.toml", {"workload.sessions": 6, "seed": 3})
    return run_inprocess(sc)


async def test_normal_run_probes_the_backend_and_keeps_its_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    out = await run_with(monkeypatch, None)
    probes = [e for e in out.data.history if e.get("value") == "backend_stats" and e["type"] == "ok"]
    assert len(probes) == 2  # the run's start and its end
    assert probes[0]["body"]["boot_id"] == probes[1]["body"]["boot_id"]
    assert probes[1]["body"]["executions"] == sum(len(v) for v in out.data.backend_executions.values()) > 0
    v = CHECKERS["exactly_once"].check(out.data)
    assert v.status == "valid", v.notes


@pytest.mark.parametrize("how", ["reset", "restart"])
async def test_log_lost_mid_run_is_unknown_not_invalid(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    out = await run_with(monkeypatch, how)
    v = CHECKERS["exactly_once"].check(out.data)
    assert v.status == "unknown", (v.status, [x.message for x in v.violations][:3])
    assert ("reset" if how == "reset" else "restarted") in v.notes
    # the loss mattered: acknowledged chats are missing from the log that survived
    missing = int(v.notes.split(" acknowledged chat(s) absent")[0].rsplit(" ", 1)[1])
    assert missing > 0, v.notes


@pytest.mark.parametrize("how", ["reset", "restart"])
async def test_log_lost_mid_run_liveness_and_fault_coverage_raise_no_false_alarm(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from harness.checkers.faults import fault_coverage

    out = await run_with(monkeypatch, how)
    v = CHECKERS["liveness"].check(out.data)
    assert v.status != "invalid", [x.message for x in v.violations][:3]
    cov = fault_coverage(out.data)
    # the aborts before the loss are gone from the log: a fault it does not show is undecided, never "not exercised"
    assert cov.not_exercised == [], cov.to_dict()
    if not cov.decided:
        assert ("reset" if how == "reset" else "restarted") in cov.reason
