"""The reviewed list of equivalent mutants: mutations no client of the protocol could ever observe.

A mutant is equivalent when no request sequence, fault or interleaving that
CONTEXT.md allows can tell it from the original (a rounding digit of a debug
field nobody reads, a default that every caller overrides). Such a mutant is
not a blind spot and must not count against the score, but calling a
survivor "equivalent" is also the easiest way to hide one, so every entry
names the mutant by its stable id (harness.mutate._generate), repeats the
snippet for the reviewer, and says *why* no client could observe it.

File format (``harness/mutate/equivalent.toml``)::

    [[mutant]]
    module = "reference_impl/app.py"
    id = "4243957a78e1"            # from reports/mutation/mutants.jsonl
    operator = "core/NumberReplacer"
    function = "_ms"
    before = "return round(seconds * 1000.0, 3)"
    after = "return round(seconds * 1000.0, 2)"
    reason = "..."                 # required: why no client can observe it
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_EQUIVALENT_FILE",
    "DEFAULT_OUT_OF_CONTRACT_FILE",
    "Equivalent",
    "EquivalentError",
    "load_equivalents",
]

DEFAULT_EQUIVALENT_FILE = Path(__file__).with_name("equivalent.toml")
# observable changes that CONTEXT.md does not constrain (the words of an error message): same format, `reason`
# says which promise is missing. They are still run and still count as survivors in the score; the summary
# adds a second figure without them, and names any that a checker killed (a checker judging beyond CONTEXT.md)
DEFAULT_OUT_OF_CONTRACT_FILE = Path(__file__).with_name("out_of_contract.toml")
_REQUIRED = ("module", "id", "reason")
_OPTIONAL = ("operator", "function", "before", "after", "reviewed")


class EquivalentError(ValueError):
    """A malformed equivalent list: names the file, the entry and the fix."""


@dataclass(frozen=True)
class Equivalent:
    module: str
    id: str
    reason: str
    before: str = ""
    after: str = ""


def load_equivalents(path: Path = DEFAULT_EQUIVALENT_FILE) -> dict[tuple[str, str], Equivalent]:
    """(module, id) -> entry. A missing file is an empty list."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EquivalentError(f"{path}: not valid TOML: {exc}") from None
    extra = set(data) - {"mutant"}
    if extra:
        raise EquivalentError(f"{path}: unknown top-level key(s) {sorted(extra)}; entries go in [[mutant]] tables")
    out: dict[tuple[str, str], Equivalent] = {}
    for i, entry in enumerate(data.get("mutant", [])):
        where = f"{path}: [[mutant]] #{i + 1}"
        for key in _REQUIRED:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise EquivalentError(f"{where}: '{key}' is required (a non-empty string)")
        unknown = set(entry) - set(_REQUIRED) - set(_OPTIONAL)
        if unknown:
            allowed = ", ".join((*_REQUIRED, *_OPTIONAL))
            raise EquivalentError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {allowed}")
        key2 = (entry["module"], entry["id"])
        if key2 in out:
            raise EquivalentError(f"{where}: duplicate entry for {key2[0]} {key2[1]}")
        out[key2] = Equivalent(
            entry["module"], entry["id"], entry["reason"].strip(), entry.get("before", ""), entry.get("after", "")
        )
    return out
