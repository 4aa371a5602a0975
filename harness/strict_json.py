"""Strict JSON in, JSON that always encodes out: the parsing rules of the session server and the fake.

Why strict: Python's ``json.loads`` accepts what JSON does not (``NaN``,
``Infinity``, ``-Infinity``, ``1e999`` which becomes ``inf``) and what UTF-8
cannot hold (a lone surrogate such as ``"\\ud800"``). A server that stores
such a body answers 200 once and then 500 on every ``GET`` of the session
for ever (``json.dumps(allow_nan=False)`` and ``.encode("utf-8")`` both
refuse it): the episode's training data becomes unreadable. Deep nesting is
the other trap: ``json.loads`` recurses and raises ``RecursionError``. So a
body is checked *before* anything is stored, and rejected with a reason:

- ``not_utf8``: the bytes are not strict UTF-8 (this also refuses surrogates
  encoded as bytes, which ``json.loads(bytes)`` would let through);
- ``too_deep``: arrays / objects nested deeper than ``max_depth``;
- ``invalid_json``, ``non_finite``, ``lone_surrogate`` (in any string or key).

Cost: the C parser runs first (its own recursion guard turns a nest past
Python's limit into ``too_deep``); the depth check then runs on *valid* JSON
only, at C speed (strings stripped by a regex, brackets counted with
``itertools.accumulate``). On invalid JSON the string regex is quadratic (a
run of ``\\"`` with no closing quote: 32 kB took ~50 s), which is why it never
sees one. The string walk for surrogates runs only when the raw text holds a
``\\uD800``-``\\uDFFF`` escape, the only way a lone surrogate can survive
strict UTF-8 decoding.

``dumps_safe`` is the other half: whatever a handler holds, it encodes to
valid JSON bytes (a strict attempt first; otherwise surrogates are escaped
and non-finite numbers become ``null``), so a read endpoint never fails on
its own data.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from itertools import accumulate
from typing import Any

__all__ = ["BodyTooLarge", "JsonInputError", "dumps_safe", "loads_strict", "max_depth"]


class JsonInputError(ValueError):
    """A body that must not be accepted; ``reason`` is a short machine name, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BodyTooLarge(ValueError):
    """A body larger than the limit (a 413); raised while reading, before the rest arrives."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than the limit of {limit} bytes")
        self.limit = limit


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# bytes -> signed steps: "[" and "{" open (+1), "]" and "}" close (-1), everything else deleted
_KEEP = b"[]{}"
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def max_depth(raw: bytes) -> int:
    """Deepest array / object nesting of a *valid* JSON text (strings ignored); linear time on valid JSON only."""
    brackets = _STRING.sub(b"", raw).translate(None, _DELETE)
    if not brackets:
        return 0
    return max(accumulate(array("b", brackets.translate(_STEPS))))


def _no_constant(name: str) -> Any:
    raise JsonInputError("non_finite", f"non-finite number {name} is not JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise JsonInputError("non_finite", f"non-finite number {text[:40]} (it overflows a double)")
    return v


def _has_surrogate(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_surrogate(obj: Any) -> str | None:
    """The JSON path of the first string or key holding a lone surrogate, or None."""
    stack: list[tuple[Any, str]] = [(obj, "$")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if _has_surrogate(node):
                return where
        elif isinstance(node, dict):
            for k, v in node.items():
                if _has_surrogate(k):
                    return f"{where} (a key)"
                stack.append((v, f"{where}.{k}"))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
    return None


def loads_strict(raw: bytes, *, max_depth_limit: int, allow_non_finite: bool = False) -> Any:
    """Parse a request body, or raise JsonInputError naming the reason.

    ``allow_non_finite`` lets NaN / Infinity through for a caller that checks every
    number itself and can then name the key (the fake's fault plans).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonInputError("not_utf8", f"request body is not valid JSON: not UTF-8 ({exc})") from None
    try:
        if allow_non_finite:
            data = json.loads(text)
        else:
            data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except JsonInputError:
        raise
    except RecursionError:
        raise JsonInputError("too_deep", f"JSON nests too deep to parse; the limit is {max_depth_limit}") from None
    except ValueError as exc:
        raise JsonInputError("invalid_json", f"request body is not valid JSON: {exc}") from None
    depth = max_depth(raw)
    if depth > max_depth_limit:
        raise JsonInputError(
            "too_deep", f"JSON nests {depth} levels deep; the limit is {max_depth_limit} (arrays and objects)"
        )
    if _SURROGATE_ESCAPE.search(raw) is not None:
        where = _find_surrogate(data)
        if where is not None:
            raise JsonInputError(
                "lone_surrogate", f"{where}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character"
            )
    return data


def _sanitize(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitize(v) for v in obj]
    return obj


_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_ESCAPED = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


def dumps_safe(obj: Any) -> bytes:
    """Compact JSON bytes that always decode: strict if possible, else escaped and with non-finite as null."""
    try:
        return _STRICT(obj).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return _ESCAPED(_sanitize(obj)).encode("ascii")
