"""Seeded random episodes against the fake SGLang: the TITO state stays exact whatever the agent does.

An agent extends the conversation, answers tool calls, retries its last turn
(rollback of one step), re-runs a tool call with a different result, and
sees aborts it retries. After every request the session must satisfy the
invariants the checkers rely on: committed records == num_assistant, at most
one provisional and only at the tail, the stored tokens equal the canonical
tokenization of the stored messages (up to the template's trailing newline),
and every committed record's input_ids is a prefix of the stored tokens.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from server_fixtures import SYSTEM, Rig, make_rig, user

from harness.fake_sglang import create_app as create_fake


async def check_invariants(r: Rig, sid: str) -> dict[str, Any]:
    st = await r.state(sid)
    meta, recs = st["metadata"], st["records"]
    kinds = [x["kind"] for x in recs]
    assert kinds.count("provisional") <= 1 and "provisional" not in kinds[:-1]
    assert kinds.count("committed") == meta["num_assistant"] == len(meta["checkpoints"])
    assert meta["token_mismatch"] is None, meta["token_mismatch"]
    tokens = meta["token_ids"]
    for rec in recs:
        if rec["kind"] == "committed":
            ids = rec["request"]["input_ids"]
            assert tokens[: len(ids)] == ids
    if meta["checkpoints"]:
        assert meta["checkpoints"][-1] == len(tokens)
    return st


@pytest.mark.parametrize("seed", range(4))
async def test_random_episode_keeps_tito_invariants(seed: int) -> None:
    rng = random.Random(seed)
    async with make_rig(backend_app=create_fake(seed=seed)) as r:
        sid = await r.new_session()
        msgs: list[dict[str, Any]] = [SYSTEM, user(f"task {seed}")]
        prev: list[dict[str, Any]] | None = None  # the request of the last committed turn
        for step in range(14):
            action = rng.choice(["extend", "extend", "tool", "retry", "abort"]) if prev else "extend"
            headers = {"x-turn": str(step), "x-attempt": "0", "x-request-id": f"s{step}"}
            if action == "retry" and prev is not None:
                request = prev if rng.random() < 0.5 else [*prev[:-1], {**prev[-1], "content": f"variant {step}"}]
                headers["x-attempt"] = "1"
            else:
                request = msgs
            if action == "tool":
                headers["x-fake-fault"] = "tool_calls"
            if action == "abort":
                headers["x-fake-fault"] = "abort"
            resp = await r.chat(sid, request, headers=headers)
            assert resp.status_code == 200, resp.text
            await check_invariants(r, sid)
            if resp.headers.get("x-sglang-aborted") == "1":
                ok = await r.chat(sid, request, headers={**headers, "x-attempt": "9", "x-fake-fault": "none"})
                assert ok.status_code == 200 and "x-sglang-aborted" not in ok.headers
                resp = ok
                await check_invariants(r, sid)
            answer = resp.json()["choices"][0]["message"]
            prev = request
            msgs = [*request, answer]
            if answer.get("tool_calls"):
                msgs += [
                    {"role": "tool", "tool_call_id": tc.get("id", ""), "content": "ok"} for tc in answer["tool_calls"]
                ]
            else:
                msgs.append(user(f"next {step}"))
        st = await check_invariants(r, sid)
        assert st["metadata"]["num_assistant"] >= 3
