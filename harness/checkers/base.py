"""Verdicts, the checker protocol, composition and the registry.

After Jepsen: a checker is a pure function from what a run left behind (a
:class:`~harness.rundata.RunData`) to a :class:`Verdict` that is ``valid``,
``invalid`` or ``unknown``. ``unknown`` is not a soft pass: it says the data
needed to decide was not there (an external target without server logs, a
history without the fields a rule needs), so a report can never mistake
"nothing was checked" for "nothing was wrong". Verdicts compose: invalid beats
unknown beats valid.

A checker that raises is turned into an ``unknown`` verdict that carries the
error, so one buggy checker cannot hide the others' findings; a stored GET body
that cannot be read back (:class:`~harness.rundata.UnreadableBody`) is an
``unknown`` saying the run data is unreadable, with where and why.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from harness.rundata import History, RunData, UnreadableBody

__all__ = [
    "CHECKERS",
    "Checker",
    "Status",
    "Verdict",
    "Violation",
    "check_all",
    "compose",
    "register",
]

Status = Literal["valid", "invalid", "unknown"]
_RANK: dict[str, int] = {"valid": 0, "unknown": 1, "invalid": 2}


@dataclass(frozen=True)
class Violation:
    """One broken promise: what, which history events (indices), which session."""

    message: str
    ops: list[int] = field(default_factory=list)
    session: str | None = None
    kind: str = ""  # short machine-readable class, e.g. "resurrected", "status_500"

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "ops": list(self.ops), "session": self.session, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Violation:
        return cls(
            message=str(d.get("message", "")),
            ops=[int(i) for i in d.get("ops", [])],
            session=d.get("session"),
            kind=str(d.get("kind", "")),
        )


@dataclass(frozen=True)
class Verdict:
    checker: str
    status: Status
    violations: list[Violation] = field(default_factory=list)
    notes: str = ""

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    @property
    def ops(self) -> list[int]:
        """Every history index named by a violation, sorted, once."""
        return sorted({i for v in self.violations for i in v.ops})

    @property
    def sessions(self) -> list[str]:
        return sorted({v.session for v in self.violations if v.session is not None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "checker": self.checker,
            "status": self.status,
            "violations": [v.to_dict() for v in self.violations],
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        status = d.get("status", "unknown")
        if status not in _RANK:
            status = "unknown"
        return cls(
            checker=str(d.get("checker", "")),
            status=status,
            violations=[Violation.from_dict(v) for v in d.get("violations", [])],
            notes=str(d.get("notes", "")),
        )


def verdict(checker: str, violations: Sequence[Violation], *, unknown: Sequence[str] = (), notes: str = "") -> Verdict:
    """The usual ending of a checker: invalid if anything broke, else unknown if
    something could not be decided, else valid. ``unknown`` lists the reasons."""
    parts = [notes] if notes else []
    parts.extend(unknown)
    text = "; ".join(p for p in parts if p)
    if violations:
        return Verdict(checker, "invalid", list(violations), text)
    if unknown:
        return Verdict(checker, "unknown", [], text)
    return Verdict(checker, "valid", [], text)


@runtime_checkable
class Checker(Protocol):
    name: str

    def check(self, run: RunData) -> Verdict: ...


class Noop:
    """Checks nothing and says so: valid, with a note."""

    name = "noop"

    def check(self, run: RunData) -> Verdict:
        return Verdict(self.name, "valid", [], "noop checker: nothing checked")


def compose(verdicts: Iterable[Verdict], name: str = "composed") -> Verdict:
    """One verdict from many: invalid beats unknown beats valid.

    Violations are kept (each message prefixed by its checker); notes name the
    checkers that were unknown, so the reason survives composition.
    """
    vs = list(verdicts)
    status: Status = "valid"
    for v in vs:
        if _RANK[v.status] > _RANK[status]:
            status = v.status
    violations = [
        Violation(f"[{v.checker}] {x.message}", list(x.ops), x.session, x.kind) for v in vs for x in v.violations
    ]
    notes = "; ".join(f"{v.checker}: {v.status}" + (f" ({v.notes})" if v.notes else "") for v in vs if not v.valid)
    return Verdict(name, status, violations, notes)


# name -> checker instance; filled by harness.checkers.__init__ in a fixed order.
CHECKERS: dict[str, Checker] = {}


def register(checker: Checker) -> Checker:
    if checker.name in CHECKERS:
        raise ValueError(f"checker {checker.name!r} registered twice")
    CHECKERS[checker.name] = checker
    return checker


def run_checker(checker: Checker, run: RunData) -> Verdict:
    """Run one checker; a crash becomes an honest ``unknown`` carrying the error."""
    try:
        return checker.check(run)
    except UnreadableBody as exc:  # the run folder's problem, reported as such (not a checker crash)
        return Verdict(checker.name, "unknown", [], f"run data unreadable: {exc}")
    except Exception as exc:  # a checker bug must not hide the other verdicts
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Verdict(checker.name, "unknown", [], f"checker crashed: {tb}")


def check_all(run: RunData, names: Iterable[str] | None = None) -> list[Verdict]:
    """Run the named checkers (all registered ones when ``names`` is None), in order.

    An unknown name raises ``ValueError`` listing the allowed names.
    """
    if names is None:
        selected = list(CHECKERS)
    else:
        selected = list(dict.fromkeys(names))
        bad = [n for n in selected if n not in CHECKERS]
        if bad:
            raise ValueError(f"unknown checker(s) {bad}; allowed: {sorted(CHECKERS)}")
    if not isinstance(run.history, History):  # a run built in memory: its checkers share one pairing too
        run = replace(run, history=History(run.history))
    from harness.checkers.stream import shared_whole  # (stream imports this module)

    with shared_whole():  # ...and one LogIndex (Part.whole's lookups)
        return [run_checker(CHECKERS[n], run) for n in selected]
