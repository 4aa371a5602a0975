"""Slow uploads (``agent.upload_chunks``, harness.agents.Upload): a body that is still on its way has not arrived.

CONTEXT.md: Phase 1 re-checks ``closing`` under the lock and parses the body; a DELETE sets ``closing``
first. So a chat whose last body piece went after a DELETE of its session was answered 204 cannot be served
(no_resurrection). The fuzz's huge chat bodies also go slowly; on our reference server bad_input judges how
much of a refused body was read (docs/reference_server.md "Limits"). Sim runs are small (~2-4 s each).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from test_checkers_builders import RunBuilder
from test_checkers_rules import kinds, run_one

import reference_impl.app as server_app
from harness.agents import Upload
from harness.scenario import load_scenario
from harness.sim.runner import check, simulate, with_seed
from reference_impl.config import ServerConfig

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_upload_splits_the_body_and_records_when_the_last_piece_went() -> None:
    now = [0.0]
    up = Upload.split(b"0123456789", 4, 0.3, lambda: now[0])
    assert up.chunks == [b"012", b"345", b"678", b"9"] and up.size == 10
    assert up.gap_s == pytest.approx(0.1)
    assert up.headers({"x-request-id": "r", "Content-Length": "3"})["content-length"] == "10"
    assert "content-length" not in up.headers(None, declared=False)

    async def take(n: int) -> list[bytes]:
        got: list[bytes] = []
        async for c in up.stream():
            got.append(c)
            now[0] += 1.0
            if len(got) == n:
                break
        return got

    assert asyncio.run(take(2)) == [b"012", b"345"]
    assert up.facts() == {"upload_sent": 2, "upload_done": None, "upload_reader": "server"}
    up.sent = 0
    asyncio.run(take(4))
    assert up.facts()["upload_sent"] == 4 and up.facts()["upload_done"] == 5.0


def _uploading_chat_and_delete(done_after: float) -> Any:
    b = RunBuilder()
    sid = b.create()
    t = b.tick()
    # invoked before the DELETE, answered 200 after it; its body's last piece went at t + done_after
    b.chat(sid, 0, outcome="closing_skip", t0=t, t1=t + 1.0, upload_sent=4, upload_done=t + done_after)
    b.t = t + 0.5
    b.delete(sid)  # invoked at t + 0.51, its 204 seen at t + 0.52
    return b.build()


def test_a_chat_still_uploading_when_the_delete_was_answered_must_not_be_served() -> None:
    v = run_one(_uploading_chat_and_delete(0.8), "no_resurrection")
    assert kinds(v) == {"resurrected"}, v
    assert "still being sent" in v.violations[0].message
    # its body complete before the DELETE: concurrent, may win the lock first (not judged)
    assert run_one(_uploading_chat_and_delete(0.2), "no_resurrection").status == "valid"


def _slow_upload_run(sessions: int = 8) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    sc = load_scenario(SCENARIOS / "slow_upload.toml")
    sc = with_seed(dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=sessions)), 0)
    out = simulate(sc, 0, "random", trace=False)
    assert out.error is None and out.data is not None, out.error
    return out.data.history, {v["checker"]: v for v in check(out)}


def test_slow_upload_races_deletes_and_the_correct_server_passes() -> None:
    history, verdicts = _slow_upload_run()
    assert [k for k, v in verdicts.items() if v["status"] == "invalid"] == []
    done = [e for e in history if e.get("type") != "invoke" and e.get("upload_done") is not None]
    assert done and all(e["upload_reader"] == "server" for e in done)
    # the race the scenario is for: a chat whose body was still going when its session's DELETE got 204
    deletes = [e for e in history if e.get("f") == "delete" and e.get("status") == 204]
    raced = [
        e
        for e in done
        if e.get("status") == 404
        and any(d["session"] == e["session"] and d["time"] < e["upload_done"] for d in deletes)
    ]
    assert raced


def _no_phase1_recheck(orig: Any) -> Any:
    """The mutant ef3ad39ffac6's server: ``_chat`` (arrival and Phase 1) ignores ``closing``; Phase 3 does not."""

    def has(self: Any, variant: str) -> bool:
        if variant == "no_closing_recheck":
            return sys._getframe(1).f_code.co_name == "_chat"
        return bool(orig(self, variant))

    return has


def test_a_server_without_the_phase1_recheck_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ServerConfig, "has", _no_phase1_recheck(ServerConfig.has))
    _, verdicts = _slow_upload_run()
    assert verdicts["no_resurrection"]["status"] == "invalid", verdicts["no_resurrection"]
    assert "still being sent" in str(verdicts["no_resurrection"])


def _fuzz_run() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    sc = load_scenario(SCENARIOS / "malformed_requests.toml")
    sc = with_seed(dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=1, fuzz=2)), 0)
    out = simulate(sc, 0, "random", trace=False)
    assert out.error is None and out.data is not None, out.error
    return out.data.history, {v["checker"]: v for v in check(out)}


def test_the_reference_server_refuses_a_huge_slow_body_without_reading_past_its_limit() -> None:
    history, verdicts = _fuzz_run()
    assert [k for k, v in verdicts.items() if v["status"] == "invalid"] == []
    slow = {e["op"]: e for e in history if e.get("type") == "invoke" and e.get("upload_chunks")}
    answers = {e["op"]: e for e in history if e.get("type") != "invoke" and e.get("op") in slow}
    got = {slow[op]["upload_declared"]: (a["status"], a["upload_sent"]) for op, a in answers.items()}
    # declared 8 MiB: refused before a piece was read; chunked: the 4 pieces of 1 MiB that pass 4 MiB, no more
    assert got == {True: (413, 0), False: (413, 4)}


def _reads_declared_bodies(orig: Any) -> Any:
    """The mutant a0a9b83ecb57's ``read_body``: a declared length past the limit is read up to it first."""

    async def read_body(self: Any, request: Any) -> bytes:
        limit, parts, size = self.config.max_body_bytes, [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise server_app.BodyTooLarge(limit)
            parts.append(chunk)
        return b"".join(parts)

    return read_body


def test_a_server_that_reads_a_declared_oversized_body_is_flagged_on_the_reference_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        server_app.SessionServer, "read_body", _reads_declared_bodies(server_app.SessionServer.read_body)
    )
    _, verdicts = _fuzz_run()
    assert verdicts["bad_input"]["status"] == "invalid", verdicts["bad_input"]
    assert "read_before_refusal" in str(verdicts["bad_input"])


def test_shrink_tries_the_bodies_at_once() -> None:
    from harness.sim.shrink import _candidates

    d = {"workload": {"sessions": 2}, "agent": {"upload_chunks": 4, "upload_ms": [60, 240]}}
    got = {label: cand for label, cand, _ in _candidates(d, "random", 3)}
    assert got["agent.upload_chunks 4 -> 1"]["agent"] == {"upload_chunks": 1}  # a valid scenario: no upload_ms


def test_a_slow_upload_knob_without_the_slow_upload_is_refused(tmp_path: Path) -> None:
    from harness.scenario import ScenarioError

    for extra in ("upload_ms = [100, 500]", "upload_probability = 0.5"):
        p = tmp_path / "s.toml"
        p.write_text(f'name = "s"\n[agent]\n{extra}\n', encoding="utf-8")
        with pytest.raises(ScenarioError, match="upload_chunks > 1"):
            load_scenario(p)
