"""reference_impl.app.parse_answer on output_token_logprobs entries that are not [logprob, token_id] pairs.

CONTEXT.md: a malformed backend answer is a 502. Object entries (another engine's shape) raised KeyError, a 500;
a fractional or string token id was silently cut to an int and stored as a token the model never produced. <1 s.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from reference_impl.app import BadGateway, parse_answer


def _answer(entries: list[Any]) -> bytes:
    meta = {"output_token_logprobs": entries, "completion_tokens": len(entries), "prompt_tokens": 3}
    choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    return json.dumps({"choices": [{**choice, "meta_info": meta}]}).encode()


def test_pairs_give_their_token_ids() -> None:
    assert parse_answer(_answer([[-0.1, 5], [-0.2, 7, "x"]])).completion_ids == [5, 7]


@pytest.mark.parametrize(
    "entries",
    [
        [{"logprob": -0.1, "token_id": 5}],
        [[-0.1, 5.9]],
        [[-0.1, "5"]],
        ["a5"],
        [[-0.1, True]],
        [[-0.1]],
        [None],
    ],
    ids=["object", "fractional", "string_id", "string_entry", "bool", "short", "null"],
)
def test_other_entries_are_a_bad_gateway(entries: list[Any]) -> None:
    with pytest.raises(BadGateway):
        parse_answer(_answer(entries))
