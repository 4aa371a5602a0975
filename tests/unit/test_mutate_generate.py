"""harness.mutate._generate's one-parse materialize equals cosmic-ray's own ``mutate_code``, position by position.

``materialize`` parses a module once and splices each mutated node into the
source (cosmic-ray re-parses the whole module per mutant: four minutes of CPU
to list the protocol modules). The module below holds the constructs where
the two could part: a top-level ``async def``, methods under a class, a nested
function with ``nonlocal``, decorators (their removal deletes a node),
``{**mapping}`` (the binary-operator rewrite does not compile), comparison
chains, ``not``, loops, ``except`` clauses, numbers and lazy annotations. For
every position: the same mutated source (or the same rejection), the same
snippets (so the same stable id) and the same unified diff as a whole-file
difflib.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

import cosmic_ray.plugins as plugins
from cosmic_ray.mutating import mutate_code

from harness.mutate import enumerate_positions, materialize
from harness.mutate._generate import Position

_SRC = '''from __future__ import annotations

import functools

LIMIT = 3


async def top(x: int | None, m: dict[str, int]) -> dict[str, int]:
    if x is None or x < LIMIT <= 10:
        return {**m, "a": x or 1}
    return {"b": -x, **m}


class K:
    """A class.

with a docstring line at column 0
"""

    size: int | None = None

    @functools.cache
    def f(self, n: int) -> int:
        total = 0
        for i in range(n):
            if i % 2 == 0 and not i > 5:
                continue
            total += i * 2 ** i
        return total

    @staticmethod
    @functools.lru_cache(maxsize=2)
    async def g(a: int, b: int = 1, *args: int, **kw: int) -> bool:
        def inner() -> int:
            nonlocal a
            a = a - 1
            return a >> 1
        try:
            return inner() != b is not None
        except (ValueError, KeyError):
            return False
        except Exception:
            raise


def outer(xs: list[int]) -> int:
    acc = 1
    while xs:
        acc = acc // xs.pop() | 4
        if acc >= 100:
            break
    return ~acc
'''


def _compiles(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(source, "m.py", "exec", dont_inherit=True)
        except SyntaxError:
            return False
    return True


def _snippets(a: list[str], b: list[str]) -> tuple[str, str]:
    before: list[str] = []
    after: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            before.extend(x.strip() for x in a[i1:i2])
            after.extend(x.strip() for x in b[j1:j2])
    return " / ".join(before), " / ".join(after)


def test_materialize_equals_cosmic_rays_mutate_code_position_by_position(tmp_path: Path) -> None:
    (tmp_path / "reference_impl").mkdir()
    (tmp_path / "reference_impl" / "m.py").write_text(_SRC)
    positions, _ = enumerate_positions(tmp_path, ["reference_impl/m.py"])
    rejected: list[Position] = []
    by_pos = {(m.operator, m.position.occurrence): m for m in materialize(tmp_path, positions, rejected)}
    assert len(by_pos) + len(rejected) == len(positions)
    kinds = {p.operator for p in positions}
    assert {"core/RemoveDecorator", "core/ReplaceBinaryOperator_Pow_Mul", "core/AddNot"} <= kinds
    lines = _SRC.splitlines()
    n_rejected = 0
    for p in positions:
        try:
            want = mutate_code(_SRC, plugins.get_operator(p.operator)(), p.occurrence)
        except Exception:
            want = None
        if want is None or want == _SRC or not _compiles(want):
            assert (p.operator, p.occurrence) not in by_pos, p
            n_rejected += 1
            continue
        got = by_pos[(p.operator, p.occurrence)]
        assert (
            got.source.removesuffix(
                "\nfrom cosmic_ray.exceptions import CosmicRayTestingException  # noqa: E402,F401\n"
            )
            == want
        ), p
        assert (got.before, got.after) == _snippets(lines, want.splitlines()), p
        full = difflib.unified_diff(
            lines, want.splitlines(), fromfile="a/reference_impl/m.py", tofile="b/reference_impl/m.py", lineterm=""
        )
        assert got.diff == "\n".join(full) + "\n", p
    assert n_rejected == len(rejected) > 0  # the {**m} rewrites at least
