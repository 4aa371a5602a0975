"""Agents against the real reference server and fake SGLang, in process (ASGI transports, no sockets).

The same ``drive`` the live runner uses, with a ``RouteByHost`` transport in
place of sockets: every behaviour of the agents (abort retries, the litellm
remap, tool-call rollbacks, timeouts, hedged duplicates, chaos) is exercised
against the real protocol, and the checkers judge the result.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.agents import Reply, framing_facts
from harness.rundata import RunData
from harness.runner import run_inprocess
from harness.scenario import ScenarioError, parse_scenario


async def run_inproc(spec: dict[str, Any], *variants: str, processes: int = 1) -> RunData:
    spec = {"seed": 5, **spec, "target": {"processes": processes, "variants": list(variants), **spec.get("target", {})}}
    # Real time in process: a loaded machine must not turn a cold first request into a client timeout
    # (an ``info`` with no answer); the one test about timeouts sets its own bound.
    spec["agent"] = {"timeout_s": 120.0, **spec.get("agent", {})}
    out = await run_inprocess(parse_scenario(spec, "inproc.toml"))
    assert not out.workload.errors, out.workload.errors
    return out.data


def ops(run: RunData, f: str, type_: str | None = None) -> list[dict[str, Any]]:
    return [e for e in run.history if e["f"] == f and e["type"] != "invoke" and (type_ is None or e["type"] == type_)]


def verdicts(run: RunData) -> dict[str, str]:
    from harness.checkers import check_all

    return {v.checker: v.status for v in check_all(run)}


def assert_all_valid(run: RunData) -> None:
    v = verdicts(run)
    assert all(s == "valid" for s in v.values()), {c: s for c, s in v.items() if s != "valid"}


async def test_happy_episode_create_turns_collect_delete() -> None:
    run = await run_inproc({"workload": {"sessions": 2, "turns": 3}})
    assert len(ops(run, "create", "ok")) == 2
    chats = ops(run, "chat", "ok")
    assert len(chats) == 6 and all(c["status"] == 200 and not c["aborted"] for c in chats)
    assert all(c["content_sha"] and c["completion_tokens"] for c in chats)
    collected = ops(run, "get", "ok")
    assert [len(c["body"]["records"]) for c in collected] == [3, 3]
    assert [d["status"] for d in ops(run, "delete")] == [204, 204]
    invokes = [e for e in run.history if e["type"] == "invoke" and e["f"] == "chat"]
    assert {(e["turn"], e["attempt"]) for e in invokes} == {(0, 0), (1, 0), (2, 0)}
    assert len({e["request_id"] for e in invokes}) == 6
    assert all(re.fullmatch(r"[0-9a-f]{16}", e["request_id"]) for e in invokes)  # 64 bits: no collisions at 10^5
    assert set(run.final_states.values()) == {None}  # deleted at episode end
    assert_all_valid(run)


async def test_abort_retry_supersedes_provisional() -> None:
    run = await run_inproc(
        {"backend": {"rules": [{"fault": "abort", "attempt": 0, "turn": 1}]}, "workload": {"sessions": 2, "turns": 3}}
    )
    aborted = [c for c in ops(run, "chat", "ok") if c["aborted"]]
    assert len(aborted) == 2 and all(c["headers"].get("x-sglang-aborted") == "1" for c in aborted)
    retries = [c for c in ops(run, "chat", "ok") if c["turn"] == 1 and c["attempt"] == 1]
    assert len(retries) == 2 and not any(c["aborted"] for c in retries)
    for g in ops(run, "get", "ok"):
        assert [r["kind"] for r in g["body"]["records"]] == ["committed"] * 3
    assert_all_valid(run)


async def test_abort_retries_exhausted_leave_provisional_at_tail() -> None:
    run = await run_inproc(
        {
            "backend": {"rules": [{"fault": "abort", "turn": 1}]},
            "workload": {"sessions": 1, "turns": 3},
            "agent": {"max_retries": 2},
        }
    )
    turn1 = [c for c in ops(run, "chat") if c["turn"] == 1]
    assert [c["attempt"] for c in turn1] == [0, 1, 2] and all(c["aborted"] for c in turn1)
    assert not [c for c in ops(run, "chat") if c["turn"] == 2]
    (g,) = ops(run, "get", "ok")
    assert [r["kind"] for r in g["body"]["records"]] == ["committed", "provisional"]
    assert_all_valid(run)


async def test_litellm_mode_sees_stop_and_relies_on_header() -> None:
    run = await run_inproc(
        {
            "backend": {"rules": [{"fault": "abort", "attempt": 0, "turn": 0}]},
            "workload": {"sessions": 1, "turns": 2},
            "agent": {"client": "openai", "litellm_remap": True},
        }
    )
    first = next(c for c in ops(run, "chat") if c["turn"] == 0 and c["attempt"] == 0)
    assert first["finish_reason"] == "stop" and first["aborted"] is True
    assert [c["attempt"] for c in ops(run, "chat") if c["turn"] == 0] == [0, 1]
    assert_all_valid(run)


async def test_commit_aborted_variant_fools_a_litellm_agent_and_is_flagged() -> None:
    run = await run_inproc(
        {
            "backend": {"rules": [{"fault": "abort", "attempt": 0, "turn": 0}]},
            "workload": {"sessions": 1, "turns": 2},
            "agent": {"litellm_remap": True},
        },
        "commit_aborted",
    )
    assert not any(c["aborted"] for c in ops(run, "chat"))  # no header: the agent cannot tell
    assert "invalid" in verdicts(run).values()


async def test_tool_retry_rolls_back_and_first_turn_redo() -> None:
    run = await run_inproc(
        {
            "workload": {
                "sessions": 3,
                "turns": 4,
                "tool_call_probability": 1.0,
                "tool_retry_probability": 1.0,
                "first_turn_retry_probability": 1.0,
            },
        }
    )
    chats = ops(run, "chat", "ok")
    assert any(c["tool_calls"] for c in chats)
    redo0 = [c for c in chats if c["turn"] == 0 and c["attempt"] > 0]
    assert len(redo0) == 3, "every session redid turn 0"
    assert any(c["turn"] > 0 and c["attempt"] > 0 for c in chats), "a tool step was redone"
    assert not [c for c in ops(run, "chat") if c["status"] not in (200, None)]
    assert_all_valid(run)


async def test_timeout_is_unknown_and_retried() -> None:
    run = await run_inproc(
        {
            "backend": {"rules": [{"fault": "hang", "params": {"seconds": 1.0}, "attempt": 0, "turn": 0}]},
            "workload": {"sessions": 1, "turns": 1},
            "agent": {"timeout_s": 0.1, "timeout_retries": 1},
        }
    )
    first, second = ops(run, "chat")
    assert first["type"] == "info" and "timeout" in first["error"]
    assert second["type"] == "ok" and second["attempt"] == 1


async def test_delete_during_proxy_and_no_resurrection() -> None:
    run = await run_inproc(
        {
            "backend": {"latency": {"model": "fixed", "ms": 60}},
            "workload": {"sessions": 2, "turns": 3},
            "chaos": {"delete_during_proxy": 1.0, "delete_delay_ms": [5, 10]},
        }
    )
    chaos = [e for e in run.history if e["f"] == "chaos" and e["type"] == "ok"]
    assert {e["value"]["action"] for e in chaos} == {"delete_during_proxy"}
    nemesis_deletes = [d for d in ops(run, "delete") if d["process"] == "nemesis"]
    assert [d["status"] for d in nemesis_deletes] == [204, 204]
    assert set(run.final_states.values()) == {None}
    assert_all_valid(run)


async def test_auto_create_variant_resurrects_and_is_flagged() -> None:
    run = await run_inproc(
        {
            "backend": {"latency": {"model": "fixed", "ms": 40}},
            "workload": {"sessions": 2, "turns": 3},
            "chaos": {"delete_during_proxy": 1.0, "delete_delay_ms": [5, 10]},
        },
        "auto_create",
    )
    assert verdicts(run)["no_resurrection"] == "invalid"


async def test_duplicates_are_reconciled_with_the_stored_answer() -> None:
    run = await run_inproc(
        {
            "backend": {"latency": {"model": "uniform", "min_ms": 20, "max_ms": 60}},
            "workload": {"sessions": 3, "turns": 3},
            "chaos": {"duplicate_inflight": 1.0},
        }
    )
    assert len([e for e in ops(run, "get") if e.get("body") is not None]) >= 3
    assert len(ops(run, "chat", "ok")) == 18
    assert_all_valid(run)


async def test_wrong_process_probes_get_404() -> None:
    run = await run_inproc(
        {"workload": {"sessions": 4, "turns": 2}, "chaos": {"wrong_process_probes": 1.0}}, processes=2
    )
    probes = [p for p in ops(run, "probe") if p["value"] == "wrong_process"]
    assert len(probes) == 8 and {p["status"] for p in probes} == {404}
    assert {p["server"] for p in probes} == {"http://server0", "http://server1"}
    assert_all_valid(run)


async def test_auto_create_on_wrong_process_is_flagged() -> None:
    run = await run_inproc(
        {"workload": {"sessions": 4, "turns": 2}, "chaos": {"wrong_process_probes": 1.0}}, "auto_create", processes=2
    )
    assert verdicts(run)["ownership"] == "invalid"


async def test_disconnect_then_delete() -> None:
    run = await run_inproc(
        {
            "backend": {"latency": {"model": "fixed", "ms": 80}},
            "workload": {"sessions": 2, "turns": 2},
            "chaos": {"disconnect": 1.0, "disconnect_after_ms": [5, 10]},
        }
    )
    dropped = ops(run, "chat", "info")
    assert len(dropped) == 2 and all("disconnected" in c["error"] for c in dropped)
    assert [d["reason"] for d in run.history if d["f"] == "delete" and d["type"] == "invoke"] == [
        "after_disconnect",
        "after_disconnect",
    ]


@pytest.mark.parametrize("kind", ["openai", "aiohttp"])
async def test_other_clients_in_process(kind: str) -> None:
    run = await run_inproc({"workload": {"sessions": 2, "turns": 2}, "agent": {"client": kind}})
    assert len(ops(run, "chat", "ok")) == 4
    expected = "openai" if kind == "openai" else "aiohttp->httpx"
    assert {e["client"] for e in run.history if e["type"] == "invoke" and e["f"] == "chat"} == {expected}
    assert_all_valid(run)


def test_framing_facts_count_duplicates_and_length() -> None:
    r = Reply(200, [("server", "a"), ("server", "b"), ("content-length", "5"), ("x-req-id", "r")], None, "hello", 5)
    facts = framing_facts(r)
    assert facts["headers"]["server"] == ["a", "b"] and facts["headers"]["x-req-id"] == "r"
    assert facts["framing"] == {
        "header_counts": {"server": 2, "content-length": 1, "x-req-id": 1},
        "content_length": 5,
        "body_bytes": 5,
    }


async def test_streamed_answers_are_folded_and_committed() -> None:
    run = await run_inproc(
        {
            "workload": {"sessions": 2, "turns": 3, "tool_call_probability": 0.5},
            "agent": {"stream_probability": 1.0, "client": "aiohttp"},
        }
    )
    invokes = [e for e in run.history if e["type"] == "invoke" and e["f"] == "chat"]
    assert invokes and all(e["stream"] for e in invokes)
    assert len(ops(run, "chat", "ok")) == 6
    assert_all_valid(run)


def test_sse_completion_folds_chunks() -> None:
    from harness.agents import sse_completion

    text = (
        'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi", '
        '"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, '
        '"finish_reason": "tool_calls"}], "usage": {"completion_tokens": 3}}\n\ndata: [DONE]\n\n'
    )
    done = sse_completion(text)
    assert done is not None
    msg = done["choices"][0]["message"]
    assert msg["content"] == "hi" and msg["tool_calls"][0] == {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    assert done["choices"][0]["finish_reason"] == "tool_calls" and done["usage"]["completion_tokens"] == 3
    assert sse_completion("not sse") is None


async def test_duration_bound_cuts_sessions_and_closes_every_op() -> None:
    run = await run_inproc(
        {
            "backend": {"latency": {"model": "fixed", "ms": 100}},
            "workload": {"sessions": 4, "concurrency": 2, "turns": 10, "duration_s": 0.35},
        }
    )
    opened = {e["op"] for e in run.history if e["type"] == "invoke"}
    closed = {e["op"] for e in run.history if e["type"] != "invoke"}
    assert opened == closed, "every invoke has exactly one completion"
    cut = [e for e in run.history if e["type"] == "info" and "run ended" in str(e.get("error"))]
    assert cut, "the bound cancelled in-flight requests as unknown outcomes"
    assert max(e["time"] for e in run.history if e["f"] == "chat") < 2.0


def test_committed_choice_picks_our_answer_that_a_record_holds() -> None:
    from harness.agents import committed_choice

    a = {"role": "assistant", "content": "first copy"}
    b = {"role": "assistant", "content": "second copy"}

    def rec(content: str, finish: str = "stop") -> dict[str, Any]:
        msg = {"role": "assistant", "content": content}
        return {"response": {"choices": [{"message": msg, "finish_reason": finish}]}}

    assert committed_choice([rec("older turn"), rec("second copy")], [a, b]) is b
    assert committed_choice([rec("first copy"), rec("second copy", "abort")], [a, b]) is a  # a provisional is no answer
    assert committed_choice([rec("someone else's")], [a, b]) is None  # never adopts what is not ours
    assert committed_choice(None, [a, b]) is None


async def test_chat_template_kwargs_are_sent_where_the_scenario_asks_and_the_turns_commit() -> None:
    """enable_thinking=False on the reasoning family: the server renders with it, the model answers, all valid."""
    run = await run_inproc(
        {
            "target": {"tokenizer": "reasoning"},
            "workload": {"sessions": 2, "turns": 3},
            "agent": {"chat_template_kwargs": {"enable_thinking": False}, "client": {"httpx": 1, "openai": 1}},
        }
    )
    invokes = [e for e in run.history if e["type"] == "invoke" and e["f"] == "chat"]
    assert invokes and all(e["template_kwargs"] == {"enable_thinking": False} for e in invokes)
    assert len(ops(run, "chat", "ok")) == 6
    records = [r for e in ops(run, "get", "ok") for r in (e.get("body") or {}).get("records", [])]
    assert records and all(r["request"]["chat_template_kwargs"] == {"enable_thinking": False} for r in records)
    v = verdicts(run)
    # diagnostics: whether the canonical rendering applies the session's chat_template_kwargs is unspecified
    assert v.pop("diagnostics") == "unknown" and all(s == "valid" for s in v.values()), v


def test_chat_template_kwargs_must_be_identifiers_with_scalar_values() -> None:
    with pytest.raises(ScenarioError, match=r"agent\.chat_template_kwargs\.enable_thinking.*boolean, number or string"):
        parse_scenario({"agent": {"chat_template_kwargs": {"enable_thinking": [1]}}}, "x.toml")
    with pytest.raises(ScenarioError, match="identifier"):
        parse_scenario({"agent": {"chat_template_kwargs": {"not-a-name": True}}}, "x.toml")
    sc = parse_scenario({"agent": {"chat_template_kwargs": {"enable_thinking": False}}}, "x.toml")
    assert sc.agent.chat_template_kwargs == {"enable_thinking": False} and sc.agent.template_kwargs_probability == 1.0
