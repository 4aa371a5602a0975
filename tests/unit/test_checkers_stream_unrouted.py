"""Backend executions under no routing key (the fake's "-") in the per-session pass.

An execution is put in the part of the chat whose x-request-id it carries, else in its routing key's. A
pass-through request (``/sessions/{id}/{path}``) is no chat, and the server may forward it with no routing
key, so its execution went to the group of "-", and its part judged its 502 without the fault that explains
it; and a key whose executions are in several parts ("-": other sessions' chats forwarded with no key) was
ordered by where the key starts in each part instead of in the run. Builder runs, about a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_checkers_builders import clean_run
from test_checkers_rules import sessions

from harness.checkers import check_all
from harness.checkers.stream import check_streaming
from harness.rundata import RunData

NAMES = ["no_unexpected_5xx", "provisional", "exactly_once"]


def _run() -> RunData:
    b = clean_run()
    a, c, d = sessions(b)
    for sid, status in ((a, 502), (c, 502), (d, 200)):  # pass-through requests, the backend's fault behind each 502
        path, rid = f"/sessions/{sid}/generate", f"pt-{sid}"
        op = b.invoke("passthrough", session=sid, method="POST", path=path, request_id=rid)
        b.complete(op, "ok" if status == 200 else "fail", status=status)
    run = b.build()
    unkeyed: list[dict[str, Any]] = []
    for sid in (a, c, d):
        unkeyed.append({"rid": f"x-{sid}", "request_id": f"pt-{sid}", "fault": "reset", "outcome": "aborted"})
    # chats of every session answered a plain 200 that the backend logs as aborted, forwarded with no key
    plain = [e for e in run.history if e.get("f") == "chat" and e.get("type") == "ok" and e.get("status") == 200]
    plain = [e for e in plain if e.get("finish_reason") != "abort" and "x-sglang-aborted" not in e.get("headers", {})]
    by_session: dict[str, dict[str, Any]] = {}
    for e in plain:
        by_session.setdefault(str(e["session"]), e)
    assert len(by_session) >= 2
    for sid in sorted(by_session) * 2:  # interleaved: a, c, a, c
        rid = by_session[sid]["request_id"]
        unkeyed.append({"rid": f"y-{rid}-{len(unkeyed)}", "request_id": rid, "finish_reason": "abort"})
    run.backend_executions["-"] = unkeyed
    return run


def _js(verdicts: list[Any]) -> list[str]:
    return [json.dumps(v.to_dict(), sort_keys=True) for v in verdicts]


def test_unrouted_executions_are_judged_as_on_the_whole_run(tmp_path: Path) -> None:
    d = tmp_path / "run"
    _run().save(d)
    whole = check_all(RunData.load(d), NAMES)
    # the pass-through 502s are explained by their executions' faults; the unmarked aborts are found
    assert "2 explained" in whole[0].notes and whole[0].status == "valid", whole[0].notes
    assert [v.kind for v in whole[1].violations].count("abort_unmarked") >= 4
    for groups in (1_000_003, 7):
        got = check_streaming(d, NAMES, groups=groups)
        assert got.streamed == NAMES, got.why_whole
        assert _js(got.verdicts) == _js(whole)
