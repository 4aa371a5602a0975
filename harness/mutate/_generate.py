"""Mutant generation on cosmic-ray's operators, with ids that survive line shifts.

What is cosmic-ray's and what is ours. cosmic-ray (pinned in the
``[mutation]`` extra) parses a module with parso, enumerates every position
its core operators can mutate (``Operator.mutation_positions`` over
``cosmic_ray.ast.ast_nodes``) and produces the mutated source of one
(operator, occurrence) (``cosmic_ray.mutating.mutate_code``). Its runner is not
used: it rewrites the module on disk in place and judges a mutant by a test
command's exit code, while we must never edit the repository's files and judge
by checker verdicts (harness.mutate._driver runs that kill test).

Ours: the operator set (every core operator that takes no arguments), the
skipping of mutations inside type annotations (every protocol module has
``from __future__ import annotations``: an annotation is a string that is
never evaluated, so changing ``str | None`` to ``str + None`` changes no
behaviour at all; counting those as mutants would pad the score), and a
stable id. cosmic-ray's ``occurrence`` is an index over the whole module, so
any edit above a line renumbers every mutant below it; the id here is a hash
of (module, operator, enclosing function, the changed source lines before and
after), plus a counter only when that tuple repeats in one module. An entry of
``equivalent.toml`` keeps matching while other people edit the file.
"""

from __future__ import annotations

import difflib
import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PROTOCOL_MODULES", "Mutant", "Position", "enumerate_positions", "materialize", "operator_names"]

PROTOCOL_MODULES = (
    "reference_impl/app.py",
    "reference_impl/tito.py",
    "reference_impl/sessions.py",
    "reference_impl/proxy.py",
)

# appended to a mutated module that names cosmic-ray's marker exception (ExceptionReplacer), after the diff is taken
_MARKER_IMPORT = "\nfrom cosmic_ray.exceptions import CosmicRayTestingException  # noqa: E402,F401\n"


@dataclass(frozen=True)
class Position:
    """One place one operator can mutate: cosmic-ray's (module, operator, occurrence), plus where it is."""

    module: str  # repo-relative posix path
    operator: str  # cosmic-ray name, e.g. "core/NumberReplacer"
    occurrence: int  # cosmic-ray's index over the module for this operator
    line: int
    function: str  # the enclosing def/class ("<module>" at top level)


@dataclass(frozen=True)
class Mutant:
    """A materialized mutation: its stable id, the snippet it changes, the diff and the mutated source."""

    id: str
    position: Position
    before: str  # the changed original lines, stripped and joined with " / "
    after: str
    diff: str
    source: str  # the whole mutated module (ready to write into an isolated tree)

    @property
    def module(self) -> str:
        return self.position.module

    @property
    def operator(self) -> str:
        return self.position.operator

    def describe(self) -> dict[str, Any]:
        p = self.position
        return {
            "id": self.id,
            "module": p.module,
            "operator": p.operator,
            "occurrence": p.occurrence,
            "function": p.function,
            "line": p.line,
            "before": self.before,
            "after": self.after,
        }


@cache
def _operators() -> tuple[tuple[str, Any], ...]:
    import cosmic_ray.plugins as plugins

    out = []
    for name in plugins.operator_names():
        cls = plugins.get_operator(name)
        if cls.arguments():  # VariableReplacer / VariableInserter need per-project configuration
            continue
        out.append((name, cls()))
    return tuple(out)


def operator_names() -> list[str]:
    return [n for n, _ in _operators()]


def _in_annotation(node: Any) -> bool:
    """True when ``node`` sits inside a parameter, return or variable annotation (never evaluated here)."""
    child, parent = node, node.parent
    while parent is not None:
        if parent.type == "param" and getattr(parent, "annotation", None) is child:
            return True
        if parent.type in ("funcdef", "async_funcdef") and getattr(parent, "annotation", None) is child:
            return True
        if parent.type == "annassign" and len(parent.children) > 1 and parent.children[1] is child:
            return True
        if parent.type == "tfpdef" and len(parent.children) > 2 and parent.children[2] is child:
            return True
        child, parent = parent, parent.parent
    return False


def _definition(node: Any) -> str:
    """Qualified name of the enclosing defs and classes (cosmic-ray's ASTQuery gives only the innermost)."""
    names: list[str] = []
    obj = node.parent
    while obj is not None:
        if obj.type in ("funcdef", "classdef"):
            names.append(obj.name.value)
        obj = obj.parent
    return ".".join(reversed(names)) or "<module>"


def _has_future_annotations(source: str) -> bool:
    return "from __future__ import annotations" in source


def enumerate_positions(root: Path, modules: Sequence[str]) -> tuple[list[Position], int]:
    """Every mutable position of ``modules`` (paths relative to ``root``), in a fixed order.

    Returns the positions and the number skipped because they sit in an annotation.
    """
    from cosmic_ray.ast import ast_nodes, get_ast

    positions: list[Position] = []
    skipped = 0
    for module in modules:
        source = (root / module).read_text(encoding="utf-8")
        lazy_annotations = _has_future_annotations(source)
        tree = get_ast(source)
        nodes = list(ast_nodes(tree))
        for name, op in _operators():
            occurrence = 0
            for node in nodes:
                for (line, _col), _end in op.mutation_positions(node):
                    if lazy_annotations and _in_annotation(node):
                        skipped += 1
                    else:
                        positions.append(Position(module, name, occurrence, line, _definition(node)))
                    occurrence += 1
    return positions, skipped


def _snippets(original: str, mutated: str) -> tuple[str, str]:
    a, b = original.splitlines(), mutated.splitlines()
    before: list[str] = []
    after: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            before.extend(x.strip() for x in a[i1:i2])
            after.extend(x.strip() for x in b[j1:j2])
    return " / ".join(before), " / ".join(after)


def _diff(original: str, mutated: str, module: str) -> str:
    lines = difflib.unified_diff(
        original.splitlines(), mutated.splitlines(), fromfile=f"a/{module}", tofile=f"b/{module}", lineterm=""
    )
    return "\n".join(lines) + "\n"


def _compiles(source: str, name: str) -> bool:
    with warnings.catch_warnings():  # `x is "literal"` warns; under -W error the warning would reject the mutant
        warnings.simplefilter("ignore")
        try:
            compile(source, name, "exec", dont_inherit=True)
        except SyntaxError:
            return False
    return True


def _base_id(module: str, operator: str, function: str, before: str, after: str) -> str:
    key = "\x1f".join((module, operator, function, before, after))
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def materialize(root: Path, positions: Iterable[Position], rejected: list[Position] | None = None) -> list[Mutant]:
    """Mutated source, snippet, diff and stable id of each position (cosmic-ray's ``mutate_code``).

    A position whose mutation is a no-op (cosmic-ray returns the same code),
    raises inside cosmic-ray (its walk continues into the node it just
    replaced and some operators then fail on it), or does not compile
    (cosmic-ray's binary-operator replacement also rewrites the ``**`` of
    ``{**mapping}`` unpacking, giving ``{%mapping}``) is not a
    mutant: it is dropped, and appended to ``rejected`` when given. Counting a
    syntax error as "killed by a crash" would inflate the score. Ids that
    repeat in one module get ``-2``, ``-3``... in source order.
    """
    import cosmic_ray.plugins as plugins
    from cosmic_ray.mutating import mutate_code

    sources: dict[str, str] = {}
    out: list[Mutant] = []
    seen: dict[str, int] = {}
    for p in sorted(positions, key=lambda q: (q.module, q.line, q.operator, q.occurrence)):
        original = sources.get(p.module)
        if original is None:
            original = sources[p.module] = (root / p.module).read_text(encoding="utf-8")
        try:
            mutated = mutate_code(original, plugins.get_operator(p.operator)(), p.occurrence)
        except Exception:  # cosmic-ray's walk trips over some of its own rewrites (AttributeError): no mutant
            mutated = None
        if mutated is None or mutated == original or not _compiles(mutated, p.module):
            if rejected is not None:
                rejected.append(p)
            continue
        before, after = _snippets(original, mutated)
        base = _base_id(p.module, p.operator, p.function, before, after)
        n = seen[base] = seen.get(base, 0) + 1
        mid = base if n == 1 else f"{base}-{n}"
        if "CosmicRayTestingException" in mutated and "CosmicRayTestingException" not in original:
            source = mutated + _MARKER_IMPORT
        else:
            source = mutated
        out.append(Mutant(mid, p, before, after, _diff(original, mutated, p.module), source))
    return out
