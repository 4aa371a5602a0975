"""diagnostics: GET's ``metadata.token_mismatch`` (our extra) agrees with the state it sits in.

The right value comes from the reference server's own code (``Tito.mismatch``), so the checker and the
server can only agree by both following the contract (docs/reference_server.md); every shipped family.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from harness.checkers import CHECKERS, check_all
from harness.checkers.ops import REFERENCE_MAX_TRIM
from harness.checkers.stream import check_streaming
from harness.rundata import RunData
from harness.tokenizer import load_tokenizer
from reference_impl.config import ServerConfig
from reference_impl.tito import Tito, normalize_messages

MINE = ["diagnostics"]  # compared per session here (tests/unit/test_checkers_stream.py leaves it to this file)
FAMILIES = ("chatml", "reasoning", "tools", "headers", "trail")
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "name a colour"},
    {"role": "assistant", "content": "blue, like the sea at noon"},
    {"role": "user", "content": "and another one please"},
    {"role": "assistant", "content": "green as the grass in the spring"},
]


def _run(tokenizer: str, states: dict[str, dict[str, Any]], kind: str = "reference") -> RunData:
    return RunData(scenario={"target": {"tokenizer": tokenizer, "kind": kind}}, history=[], final_states=states)


def _state(messages: list[Any], ids: list[int], mismatch: Any) -> dict[str, Any]:
    meta = {"token_ids": ids, "num_assistant": 2, "messages": messages, "token_mismatch": mismatch}
    return {"session_id": "s", "records": [], "metadata": meta}


def _check(run: RunData) -> tuple[str, set[str]]:
    v = CHECKERS["diagnostics"].check(run)
    return v.status, {x.kind for x in v.violations}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_reference_diagnostic_is_valid_and_a_wrong_one_is_flagged(family: str) -> None:
    tito = Tito(load_tokenizer(family))
    msgs = normalize_messages(MESSAGES)
    canonical = tito.encode(tito.render(msgs, generation_prompt=False))
    changed = list(canonical)
    changed[len(changed) // 2] = changed[len(changed) // 2 - 1]  # a token in the middle differs
    cases = {"trimmed": canonical[:-1], "changed": changed, "longer": [*canonical, canonical[0]]}
    for ids in cases.values():
        assert _check(_run(family, {"s": _state(msgs, ids, tito.mismatch(msgs, ids))}))[0] == "valid"
    report = tito.mismatch(msgs, changed)
    assert report is not None
    for field, wrong in (
        ("canonical_tokens", canonical[report["index"] : report["index"] + 9]),  # 9 of them, not 8
        ("actual_tokens", changed[report["index"] : report["index"] + 7]),
        ("actual_text", tito.decode(changed[report["index"] : report["index"] + 7])),
        ("index", report["index"] + 1),
    ):
        bad = {**report, field: wrong}
        assert _check(_run(family, {"s": _state(msgs, changed, bad)})) == ("invalid", {"mismatch_wrong"}), field
    assert _check(_run(family, {"s": _state(msgs, changed, None)})) == ("invalid", {"mismatch_not_reported"})
    assert _check(_run(family, {"s": _state(msgs, canonical, report)})) == ("invalid", {"mismatch_spurious"})


def test_max_trim_tokens_is_judged_only_when_the_run_knows_it() -> None:
    tito = Tito(load_tokenizer("chatml"))
    msgs = normalize_messages(MESSAGES)
    canonical = tito.encode(tito.render(msgs, generation_prompt=False))
    short = canonical[: -REFERENCE_MAX_TRIM - 1]  # one token more than the reference tolerates
    report = tito.mismatch(msgs, short)
    assert report is not None
    assert _check(_run("chatml", {"s": _state(msgs, short, None)})) == ("invalid", {"mismatch_not_reported"})
    # another server (URLs): its max_trim_tokens is unknown, so a null there is neither right nor wrong
    assert _check(_run("chatml", {"s": _state(msgs, short, None)}, kind="urls")) == ("unknown", set())
    assert _check(_run("chatml", {"s": _state(msgs, short, report)}, kind="urls")) == ("valid", set())
    user_app = _run("chatml", {"s": _state(msgs, short, None)})  # a sim --target: a user's app, not ours
    user_app.scenario["sim"] = {"seed": 0, "target": "asgi:their.app:create_app"}
    assert _check(user_app) == ("unknown", set())
    bad = {**report, "actual_len": 0}
    assert _check(_run("chatml", {"s": _state(msgs, short, bad)}, kind="urls")) == ("invalid", {"mismatch_wrong"})
    # the trim a reference run assumes is the reference server's own default
    assert ServerConfig(backend_url="http://127.0.0.1:1").max_trim_tokens == REFERENCE_MAX_TRIM


def test_no_key_no_messages_and_the_error_form() -> None:
    tito = Tito(load_tokenizer("chatml"))
    msgs = normalize_messages(MESSAGES)
    ids = tito.encode(tito.render(msgs, generation_prompt=False))
    absent = _state(msgs, ids, None)
    del absent["metadata"]["token_mismatch"]
    v = CHECKERS["diagnostics"].check(_run("chatml", {"s": absent}))
    assert v.status == "unknown" and "extras" in v.notes
    no_msgs = copy.deepcopy(_state(msgs, ids, None))
    del no_msgs["metadata"]["messages"]
    v = CHECKERS["diagnostics"].check(_run("chatml", {"s": no_msgs}))
    assert v.status == "unknown" and "messages" in v.notes
    err = _state(msgs, ids[:3], {"error": "token_mismatch could not be computed: ValueError()"})
    assert _check(_run("chatml", {"s": err})) == ("valid", set())


@pytest.mark.parametrize("groups", [1, 1_000_003], ids=["one_group", "group_per_session"])
def test_the_per_session_pass_gives_the_whole_run_verdict(tmp_path: Path, groups: int) -> None:
    tito = Tito(load_tokenizer("reasoning"))
    msgs = normalize_messages(MESSAGES)
    canonical = tito.encode(tito.render(msgs, generation_prompt=False))
    changed = [*canonical[:5], canonical[6], *canonical[5:]]
    report = tito.mismatch(msgs, changed)
    assert report is not None
    states = {f"s{i}": _state(msgs, changed, report) for i in range(4)}
    states["s2"] = _state(msgs, changed, {**report, "canonical_tokens": report["canonical_tokens"][:7]})
    run = _run("reasoning", states)
    run.save(tmp_path / "run")
    whole = check_all(RunData.load(tmp_path / "run"), MINE)
    got = check_streaming(tmp_path / "run", MINE, groups=groups)
    assert got.streamed == MINE and not got.whole, got.why_whole
    assert [json.dumps(v.to_dict(), sort_keys=True) for v in got.verdicts] == [
        json.dumps(v.to_dict(), sort_keys=True) for v in whole
    ]
    assert whole[0].status == "invalid" and whole[0].sessions == ["s2"]
