"""Whatever a client sends, the chat route answers 200 or a 4xx JSON error, never a 500.

A 500 from the session server is reserved for a broken token history (the
prefix invariant); a malformed request that crashes the handler would make a
harness checker blame the server's protocol for a client's typo.

The hostile-input fuzz (issue 13, tests/unit/fuzz_inputs.py) adds what a
hostile client sends: NaN, lone surrogates, deep nesting, invalid UTF-8, odd
paths and header bytes, against the server (with the in-process fake behind
it) and the fake on its own: 2,000 derandomized examples here, 10^4 and more
in bench/bench_fuzz.py. No 5xx but injected faults' 502 / 503, a canary
session byte-identical afterwards, a normal 3-turn session still served.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fuzz_inputs import run_fake_fuzz, run_plan_fuzz, run_server_fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fixtures import make_rig, user

from harness.tokenizer import DEFAULT_TOKENIZER_DIR

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
roles = st.sampled_from(["user", "system", "assistant", "tool", "", 3, None])
message = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.none() | st.text(max_size=12) | json_values,
        "tool_calls": json_values | st.lists(st.fixed_dictionaries({"function": json_values}), max_size=2),
        "tool_call_id": json_values,
        "name": json_values,
    },
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"messages": st.lists(message, max_size=4) | json_values},
        optional={"stream": json_values, "model": json_values, "rid": json_values},
    ),
)


async def _post(bodies_: list[Any]) -> list[tuple[int, Any]]:
    out = []
    async with make_rig() as r:
        sid = await r.new_session()
        for body in bodies_:
            resp = await r.client.post(f"/sessions/{sid}/v1/chat/completions", content=json.dumps(body))
            out.append((resp.status_code, resp.json()))
        assert len(r.logs.events("chat_done")) == len(bodies_)
        assert (await r.client.get("/stats")).json()["inflight"] == 0
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bodies, min_size=1, max_size=4))
def test_any_json_body_is_200_or_4xx_json(batch: list[Any]) -> None:
    for status, data in asyncio.run(_post(batch)):
        assert status == 200 or 400 <= status < 500, (status, data)
        if status != 200:
            assert isinstance(data["error"]["type"], str) and isinstance(data["error"]["message"], str)


async def test_template_raise_exception_is_a_400(tmp_path: Path) -> None:
    tok_dir = tmp_path / "tok"
    shutil.copytree(DEFAULT_TOKENIZER_DIR, tok_dir)
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    guard = (
        "{%- if messages[0]['role'] == 'assistant' -%}"
        "{{ raise_exception('a conversation must not start with the assistant') }}{%- endif -%}"
    )
    cfg["chat_template"] = guard + cfg["chat_template"]
    cfg_path.write_text(json.dumps(cfg))
    async with make_rig(tokenizer=str(tok_dir)) as r:
        sid = await r.new_session()
        resp = await r.chat(sid, [{"role": "assistant", "content": "hi"}, user("x")])
        assert resp.status_code == 400
        assert "must not start with the assistant" in resp.json()["error"]["message"]
        assert (await r.chat(sid, [user("x")])).status_code == 200


@pytest.mark.slow
def test_hostile_requests_to_the_server_never_5xx_and_leave_the_canary_intact() -> None:
    result = run_server_fuzz(1200)
    assert result.examples >= 1200
    assert result.statuses.get(200, 0) > 0 and result.statuses.get(400, 0) > 0 and result.statuses.get(403, 0) > 0


@pytest.mark.slow
def test_hostile_requests_to_the_fake_never_5xx_and_stats_always_answers() -> None:
    result = run_fake_fuzz(500)
    assert result.examples >= 500 and result.statuses.get(200, 0) > 0 and result.statuses.get(400, 0) > 0


@pytest.mark.slow
def test_hostile_plans_are_400_or_a_plan_with_finite_bounded_numbers() -> None:
    result = run_plan_fuzz(300)
    assert result.examples >= 300 and result.statuses.get(200, 0) > 0 and result.statuses.get(400, 0) > 0
