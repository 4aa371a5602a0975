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
import __future__

import copy
import difflib
import hashlib
import re
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


class _Module:
    """One module parsed once: source, lines, node list and, per operator, its positions in cosmic-ray's order."""

    def __init__(self, source: str) -> None:
        from cosmic_ray.ast import ast_nodes, get_ast

        self.source = source
        self.lines = source.splitlines()
        self.tree = get_ast(source)
        self.nodes = list(ast_nodes(self.tree))
        self.lazy_annotations = _has_future_annotations(source)
        self._line_starts = [0]
        for line in source.splitlines(keepends=True):
            self._line_starts.append(self._line_starts[-1] + len(line))
        self._tables: dict[str, list[tuple[Any, int, int]]] = {}

    def table(self, name: str, op: Any) -> list[tuple[Any, int, int]]:
        """(node, index among the node's positions, line) per occurrence: cosmic-ray's count over the module."""
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = [
                (node, index, line)
                for node in self.nodes
                for index, ((line, _col), _end) in enumerate(op.mutation_positions(node))
            ]
        return t

    def offset(self, pos: tuple[int, int]) -> int:
        line, col = pos
        if line - 1 >= len(self._line_starts):
            return len(self.source)
        return self._line_starts[line - 1] + col

    def span(self, node: Any) -> tuple[int, int]:
        """Offsets of ``node``'s code in the source, its prefix (leading whitespace, comments) included."""
        prev = node.get_first_leaf().get_previous_leaf()
        return (self.offset(prev.end_pos) if prev is not None else 0), self.offset(node.end_pos)


_PARSED: dict[str, _Module] = {}  # source text -> parsed module (enumerate_positions, then materialize)


def _parsed(source: str) -> _Module:
    mod = _PARSED.get(source)
    if mod is None:
        if len(_PARSED) >= 16:
            _PARSED.clear()
        mod = _PARSED[source] = _Module(source)
    return mod


def enumerate_positions(root: Path, modules: Sequence[str]) -> tuple[list[Position], int]:
    """Every mutable position of ``modules`` (paths relative to ``root``), in a fixed order.

    Returns the positions and the number skipped because they sit in an annotation.
    """
    positions: list[Position] = []
    skipped = 0
    for module in modules:
        mod = _parsed((root / module).read_text(encoding="utf-8"))
        for name, op in _operators():
            for occurrence, (node, _index, line) in enumerate(mod.table(name, op)):
                if mod.lazy_annotations and _in_annotation(node):
                    skipped += 1
                else:
                    positions.append(Position(module, name, occurrence, line, _definition(node)))
    return positions, skipped


def _trim(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """Lengths of the common leading and trailing runs of lines of ``a`` and ``b`` (not overlapping)."""
    n = min(len(a), len(b))
    head = 0
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return head, tail


def _snippets(a: Sequence[str], b: Sequence[str]) -> tuple[str, str]:
    """The changed lines of the original ``a`` and the mutant ``b`` (stripped, joined with " / ")."""
    head, tail = _trim(a, b)
    a, b = a[head : len(a) - tail], b[head : len(b) - tail]
    before: list[str] = []
    after: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            before.extend(x.strip() for x in a[i1:i2])
            after.extend(x.strip() for x in b[j1:j2])
    return " / ".join(before), " / ".join(after)


_HUNK = re.compile(r"^@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@")


def _diff(a: Sequence[str], b: Sequence[str], module: str) -> str:
    """``difflib.unified_diff`` of the two line lists, computed on the changed window only (3 lines of context)."""
    head, tail = _trim(a, b)
    lo = max(0, head - 3)
    keep = max(0, tail - 3)
    lines = difflib.unified_diff(
        a[lo : len(a) - keep], b[lo : len(b) - keep], fromfile=f"a/{module}", tofile=f"b/{module}", lineterm=""
    )

    def shift(m: re.Match[str]) -> str:
        return f"@@ -{int(m[1]) + lo}{m[2]} +{int(m[3]) + lo}{m[4]} @@"

    return "\n".join(_HUNK.sub(shift, x) if x.startswith("@@") else x for x in lines) + "\n"


def _compiles(source: str, name: str, flags: int = 0) -> bool:
    with warnings.catch_warnings():  # `x is "literal"` warns; under -W error the warning would reject the mutant
        warnings.simplefilter("ignore")
        try:
            compile(source, name, "exec", flags=flags, dont_inherit=True)
        except SyntaxError:
            return False
    return True


def _base_id(module: str, operator: str, function: str, before: str, after: str) -> str:
    key = "\x1f".join((module, operator, function, before, after))
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _walk_visits(op: Any, node: Any) -> None:
    """What cosmic-ray's walk does below the node it just replaced: ask the operator for positions again."""
    for _ in op.mutation_positions(node):
        pass
    for child in getattr(node, "children", ()):
        _walk_visits(op, child)


def _mutate_fast(mod: _Module, name: str, op: Any, occurrence: int) -> tuple[str, str] | None:
    """cosmic-ray's ``mutate_code`` for one occurrence, without re-parsing and re-printing the whole module.

    cosmic-ray parses the module, walks every node, applies the operator at
    the ``occurrence``-th position (in place, on the node or its children) and
    prints the whole tree again: one parse per mutant, 0.4 s for app.py, four
    minutes of CPU for the 1,400 mutants of a listing. Here the module is
    parsed once; the node of the occurrence is deep-copied on its own (its
    parent link kept, so the operators' parent checks see what they see in the
    tree), mutated exactly as cosmic-ray's visitor does (the node's remaining
    positions are still enumerated, then its new subtree is walked: the
    rewrites cosmic-ray trips over raise here too), and its printed code
    replaces the node's span of the original source. The parsed tree is never
    changed. Returns (mutated module, mutated top-level statement) for the
    compile check, or None when the span does not match the source (the
    caller then falls back to cosmic-ray).
    """
    table = mod.table(name, op)
    if not 0 <= occurrence < len(table):
        return None
    node, index, _line = table[occurrence]
    start, end = mod.span(node)
    if mod.source[start:end] != node.get_code():
        return None
    top_start, top_end, wrap = _compile_unit(mod, node)
    parent = node.parent
    node.parent = None
    try:
        clone = copy.deepcopy(node)
    finally:
        node.parent = parent
    clone.parent = parent
    replaced: Any = clone
    for i, _ in enumerate(op.mutation_positions(clone)):
        if i == index:
            replaced = op.mutate(clone, i)
    code = ""
    if replaced is not None:
        _walk_visits(op, replaced)
        code = replaced.get_code()
    mutated = mod.source[:start] + code + mod.source[end:]
    statement = wrap + mod.source[top_start:start] + code + mod.source[end:top_end]
    return mutated, statement


def _compile_unit(mod: _Module, node: Any) -> tuple[int, int, str]:
    """The smallest piece of the module whose compiling decides whether a mutation of ``node`` compiles.

    The rest of the module is the original, which compiles; a syntax or
    compile error of the mutant lies in the code block that holds the node.
    That is the outermost ``def`` around it (whole lines, so an ``async``
    keyword comes along; an indented method is compiled under ``if 1:``),
    else (module or class level, a decorator) the top-level statement.
    Returns (start, end, header to put before it).
    """
    outer = None
    top = node
    while top.parent is not None and top.parent is not mod.tree:
        if top.type == "funcdef":
            outer = top
        top = top.parent
    if top.type == "funcdef":
        outer = top
    if outer is not None:
        start = mod.offset((outer.start_pos[0], 0))
        end = mod.offset(outer.end_pos)
        text = mod.source[start : mod.offset(outer.start_pos)]
        if text.strip() in ("", "async"):
            return start, end, ("if 1:\n" if text[:1].isspace() else "")
    start, end = mod.span(top)
    return start, end, ""


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

    Each module is parsed once (``_mutate_fast``), and only the mutated
    top-level statement is compiled (the rest of the module is the original,
    which compiles); tests/unit/test_mutate.py checks the result equals
    cosmic-ray's own ``mutate_code`` plus a whole-module compile.
    """
    import cosmic_ray.plugins as plugins
    from cosmic_ray.mutating import mutate_code

    ops: dict[str, Any] = {}
    out: list[Mutant] = []
    seen: dict[str, int] = {}
    for p in sorted(positions, key=lambda q: (q.module, q.line, q.operator, q.occurrence)):
        mod = _parsed((root / p.module).read_text(encoding="utf-8"))
        original = mod.source
        flags = __future__.annotations.compiler_flag if mod.lazy_annotations else 0
        op = ops.get(p.operator)
        if op is None:
            op = ops[p.operator] = plugins.get_operator(p.operator)()
        mutated: str | None
        try:
            fast = _mutate_fast(mod, p.operator, op, p.occurrence)
            if fast is not None:
                mutated, statement = fast
                ok = mutated != original and _compiles(statement, p.module, flags)
            else:  # never seen on the protocol modules: cosmic-ray's own (slow) path
                mutated = mutate_code(original, plugins.get_operator(p.operator)(), p.occurrence)
                ok = mutated is not None and mutated != original and _compiles(mutated, p.module)
        except Exception:  # cosmic-ray's walk trips over some of its own rewrites (AttributeError): no mutant
            mutated, ok = None, False
        if mutated is None or not ok:
            if rejected is not None:
                rejected.append(p)
            continue
        b = mutated.splitlines()
        before, after = _snippets(mod.lines, b)
        base = _base_id(p.module, p.operator, p.function, before, after)
        n = seen[base] = seen.get(base, 0) + 1
        mid = base if n == 1 else f"{base}-{n}"
        if "CosmicRayTestingException" in mutated and "CosmicRayTestingException" not in original:
            source = mutated + _MARKER_IMPORT
        else:
            source = mutated
        out.append(Mutant(mid, p, before, after, _diff(mod.lines, b, p.module), source))
    return out
