"""Streamed answers are held to the OpenAI streaming rules, and a broken stream is a framing violation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_checkers_builders import RunBuilder

from harness.agents._episode import sse_completion, sse_problems
from harness.checkers import CHECKERS
from reference_impl.app import sse_body

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

ANSWER = {
    "id": "x",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
}


def test_the_reference_servers_stream_is_well_formed() -> None:
    text = sse_body(ANSWER).decode()
    assert sse_problems(text) == []
    folded = sse_completion(text)
    assert folded is not None and folded["choices"][0]["message"]["content"] == "hi"


def test_missing_terminator_malformed_chunks_and_trailing_data_are_named() -> None:
    good = sse_body(ANSWER).decode()
    no_done = good.replace("data: [DONE]\n\n", "")
    assert sse_problems(no_done) == ["missing the data: [DONE] terminator"]
    wrong_object = good.replace('"chat.completion.chunk"', '"chat.completion"')
    assert any("not 'chat.completion.chunk'" in p for p in sse_problems(wrong_object))
    no_delta = "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [{"message": {}}]}) + "\n\n"
    assert any("delta" in p for p in sse_problems(no_delta + "data: [DONE]\n\n"))
    assert any("not JSON" in p for p in sse_problems("data: {oops\n\ndata: [DONE]\n\n"))
    assert any("after the [DONE]" in p for p in sse_problems(good + good))
    assert sse_problems(": keep-alive\nevent: message\n" + good) == []


def test_http_framing_flags_a_recorded_stream_violation() -> None:
    b = RunBuilder()
    sid = b.create()
    fr = RunBuilder.framing()
    b.chat(sid, 0, framing={**fr, "sse_errors": []})
    bad = b.chat(sid, 1, framing={**fr, "sse_errors": ["missing the data: [DONE] terminator"]})
    run = b.build()
    v = CHECKERS["http_framing"].check(run)
    assert v.status == "invalid"
    assert {x.kind for x in v.violations} == {"sse_malformed"}
    assert v.ops == [e["index"] for e in run.history if e["op"] == bad]


@pytest.mark.slow
def test_a_server_whose_streams_lose_the_terminator_is_flagged_in_sim() -> None:
    from harness.scenario import load_scenario
    from harness.sim.runner import simulate, with_seed

    sc = with_seed(load_scenario(str(SCENARIOS / "delete_storm.toml")), 0)
    for target, status in ((None, "valid"), ("asgi:sse_cut_wrapper:create_app", "invalid")):
        out = simulate(sc, 0, "random", target=target, trace=False)
        assert out.data is not None
        v = CHECKERS["http_framing"].check(out.data)
        assert v.status == status, (target, v.notes)
        if status == "invalid":
            assert {x.kind for x in v.violations} == {"sse_malformed"}
