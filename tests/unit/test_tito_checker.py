"""token_state sees a re-tokenized history, and holds servers to the one-step rollback rule.

Built runs (test_checkers_builders.RunBuilder): only records' ``input_ids`` and
completion ids are changed, the protocol's view of what the model saw.
"""

from __future__ import annotations

import copy
from typing import Any

from test_checkers_builders import RunBuilder

from harness.checkers import CHECKERS
from harness.rundata import RunData


def _kinds(run: RunData) -> set[str]:
    return {v.kind for v in CHECKERS["token_state"].check(run).violations}


def _state(run: RunData, sid: str) -> dict[str, Any]:
    st = run.final_states[sid]
    assert st is not None
    return st


def _completion(rec: dict[str, Any]) -> list[int]:
    return [int(p[1]) for p in rec["response"]["choices"][0]["meta_info"]["output_token_logprobs"]]


def _resync(st: dict[str, Any]) -> None:
    """Metadata as a server that stored its re-tokenized prompts would report it (consistent with its records)."""
    last = st["records"][-1]
    st["metadata"]["token_ids"] = last["request"]["input_ids"] + _completion(last)
    st["metadata"]["checkpoints"] = [len(r["request"]["input_ids"]) + len(_completion(r)) for r in st["records"]]


def test_a_prompt_that_rewrites_an_earlier_completion_is_retokenized() -> None:
    b = RunBuilder()
    sid = b.create()
    b.episode(sid, 3)
    run = b.build()
    st = _state(run, sid)
    first, second, third = st["records"]
    # the server re-rendered turn 0's answer (say, dropped its think block): the model's tokens are gone
    at = len(first["request"]["input_ids"])
    for rec in (second, third):
        rec["request"]["input_ids"][at] += 1000
    _resync(st)
    assert _kinds(run) == {"retokenized"}
    message = next(v.message for v in CHECKERS["token_state"].check(run).violations)
    assert "re-tokenized" in message and "checkpoint 1 of" in message


def test_a_prompt_that_changes_template_text_is_a_broken_prefix() -> None:
    b = RunBuilder()
    sid = b.create()
    b.episode(sid, 2)
    run = b.build()
    st = _state(run, sid)
    st["records"][1]["request"]["input_ids"][0] += 1  # inside the first prompt, not a completion
    _resync(st)
    assert _kinds(run) == {"prefix_broken"}


def test_one_step_rollbacks_are_valid_a_two_step_rollback_is_not() -> None:
    ok = RunBuilder()
    sid = ok.create()
    ok.episode(sid, 2)
    ok.chat(sid, 1, 1, back=1)
    ok.chat(sid, 1, 2, back=1)
    assert _kinds(ok.build()) == set()
    b = RunBuilder()
    sid = b.create()
    b.episode(sid, 3)
    run = b.build()
    st = _state(run, sid)
    # turn 1 again on top of turn 0's checkpoint, after turn 2 committed: two assistant steps discarded
    again = copy.deepcopy(st["records"][1])
    again["attempt"] = 1
    again["response"]["choices"][0]["meta_info"]["output_token_logprobs"][0][1] += 1
    st["records"].append(again)
    _resync(st)
    assert "prefix_broken" in _kinds(run)


def test_stored_tokens_with_template_text_after_the_last_completion() -> None:
    b = RunBuilder()
    sid = b.create()
    b.episode(sid, 2)
    run = b.build()
    _state(run, sid)["metadata"]["token_ids"].append(7)  # the template's closing newline, never generated
    (v,) = CHECKERS["token_state"].check(run).violations
    assert v.kind == "token_ids_mismatch" and "end differently" in v.message
