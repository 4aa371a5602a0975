"""The server's own account of requests: a logged 5xx of a chat nobody got an answer to is explained like an
answered one (no_unexpected_5xx), and the final /stats ``reqs_total`` counts at least the chats the process
logged and answered before the snapshot (log_consistency). Both judge our reference server only."""

from __future__ import annotations

from typing import Any

from harness.checkers.errors import NoUnexpected5xx
from harness.checkers.logs import LogConsistency
from tests.unit.test_checkers_builders import S0, RunBuilder, port


def _abandoned(status: int, *, fault: str | None = "hang", reference: bool = True) -> RunBuilder:
    """One committed turn, then a chat whose client timed out while the server still ran it; the server's
    chat_done for it says ``status`` (499 on a correct reference server: its client left)."""
    b = RunBuilder()
    if reference:
        b.scenario["target"]["kind"] = "reference"
    sid = b.create(S0)
    b.chat(sid, 0)
    b.chat(sid, 1, status=status, outcome="internal_error", type="info", fault=fault)
    ev = b.events[-1]
    del ev["status"]  # the client got no status: it gave up
    ev["error"] = "timeout after 0.6 s"
    return b


def _kinds(checker: Any, b: RunBuilder) -> tuple[str, list[str]]:
    v = checker.check(b.build())
    return v.status, [x.kind for x in v.violations]


def test_a_cancelled_chat_logged_499_is_valid() -> None:
    assert _kinds(NoUnexpected5xx(), _abandoned(499)) == ("valid", [])


def test_a_cancelled_chat_logged_500_on_a_hanging_backend_is_a_violation() -> None:
    status, kinds = _kinds(NoUnexpected5xx(), _abandoned(500))
    assert status == "invalid"
    assert kinds == ["logged_status_500"]


def test_a_logged_502_of_an_abandoned_chat_is_explained_by_its_backend_fault() -> None:
    assert _kinds(NoUnexpected5xx(), _abandoned(502))[0] == "valid"


def test_another_servers_log_of_an_abandoned_chat_is_not_judged() -> None:
    assert _kinds(NoUnexpected5xx(), _abandoned(500, reference=False)) == ("valid", [])


def _counted(reqs_total: int, *, reference: bool = True) -> RunBuilder:
    b = RunBuilder()
    if reference:
        b.scenario["target"]["kind"] = "reference"
    sid = b.create(S0)
    b.episode(sid, 3)
    b.stats(S0, pid=100 + port(S0) % 100, reqs_total=reqs_total, turns_completed=3)
    return b


def test_reqs_total_that_counts_every_chat_is_valid() -> None:
    assert _kinds(LogConsistency(), _counted(3)) == ("valid", [])
    assert _kinds(LogConsistency(), _counted(7)) == ("valid", [])  # it may count more than chats


def test_reqs_total_below_the_chats_answered_is_a_violation() -> None:
    assert _kinds(LogConsistency(), _counted(0)) == ("invalid", ["reqs_total_short"])
    assert _kinds(LogConsistency(), _counted(2)) == ("invalid", ["reqs_total_short"])


def test_reqs_total_of_another_server_is_not_judged() -> None:
    assert _kinds(LogConsistency(), _counted(0, reference=False)) == ("valid", [])
