"""The shared parsing rules (harness/strict_json.py): what is refused, with which reason, and what always encodes."""

from __future__ import annotations

import json

import pytest

from harness.strict_json import JsonInputError, dumps_safe, loads_strict, max_depth


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": NaN}', "non_finite"),
        (b'{"a": [1, -Infinity]}', "non_finite"),
        (b'{"a": 1e400}', "non_finite"),
        (b'{"a": "\\ud800"}', "lone_surrogate"),
        (b'{"\\udfff": 1}', "lone_surrogate"),
        (b'{"a": "\xed\xa0\x80"}', "not_utf8"),
        (b"\xff", "not_utf8"),
        (b"[" * 50 + b"]" * 50, "too_deep"),
        (b"[" * 200_000, "too_deep"),
        (b'{"a": ', "invalid_json"),
    ],
)
def test_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonInputError) as info:
        loads_strict(raw, max_depth_limit=16)
    assert info.value.reason == reason


def test_accepted_values_round_trip() -> None:
    raw = b'{"a": "\\ud83d\\ude00 \\\\ud800", "b": [1.5, 2, null], "c": {"d": [[]]}}'
    data = loads_strict(raw, max_depth_limit=4)
    assert data == {"a": "\U0001f600 \\ud800", "b": [1.5, 2, None], "c": {"d": [[]]}}
    assert json.loads(dumps_safe(data)) == data
    assert loads_strict(b'{"a": NaN}', max_depth_limit=4, allow_non_finite=True)["a"] != 0


def test_depth_ignores_brackets_inside_strings() -> None:
    assert max_depth(b'{"a": "[[[[[[", "b": [{"c": "]]]]}"}]}') == 3
    assert max_depth(b'"x"') == 0


def test_unterminated_escaped_quotes_are_refused_in_linear_time() -> None:
    """A run of escaped quotes with no closing quote made the depth regex quadratic (32 kB: ~50 s)."""
    raw = b'{"x": "' + b'\\"' * 400_000
    with pytest.raises(JsonInputError) as info:
        loads_strict(raw, max_depth_limit=64)
    assert info.value.reason == "invalid_json"


def test_dumps_safe_always_encodes() -> None:
    assert dumps_safe({"a": "é"}) == '{"a":"é"}'.encode()
    odd = json.loads(dumps_safe({"a": float("nan"), "b": ["\ud800", float("-inf")], "c": (1, 2)}))
    assert odd == {"a": None, "b": ["\ud800", None], "c": [1, 2]}
