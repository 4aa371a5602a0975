"""The kill test, as it runs inside one isolated child process per mutant.

Stage 1 (sim): the library scenarios in simulation, each case a (scenario,
variant, seed), run by :func:`harness.sim.explore.run_seed` exactly as
``harness explore`` runs a seed. A case kills the mutant when any checker says
``invalid`` or the run errors (a crash, a deadlock, an exception at import).
The driver passes only cases on which the unmutated server was valid, so a
kill is a difference the checkers saw, never a pre-existing alarm.

Isolation: the child puts the mutant's tree (a copy of ``reference_impl/``
with one module rewritten) first on ``sys.path``, drops any ``reference_impl``
module it inherited, imports the package again and checks that it came from
the tree; it never touches the repository's files. Every finished case is
appended to a JSON-lines file at once, so when the driver kills a child that
ran out of time, the report still says which case it was in.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Case", "child_main", "run_cases"]


@dataclass(frozen=True)
class Case:
    """One simulated run of the kill test."""

    path: str  # scenario file
    scenario: str  # its name (for reports)
    variant: str | None  # a ``target.compare`` entry, or None for the scenario as written
    seed: int
    strategy: str = "random"
    tokenizer: str | None = None  # a shipped tokenizer family for the fake and the server; None = the scenario's

    @property
    def label(self) -> str:
        v = f"@{self.variant}" if self.variant else ""
        t = f":{self.tokenizer}" if self.tokenizer else ""
        return f"{self.scenario}{t}{v}#{self.seed}"


def _use_tree(tree: Path) -> str:
    """Import ``reference_impl`` from ``tree``; return where it came from."""
    sys.path.insert(0, str(tree))
    for name in [m for m in sys.modules if m == "reference_impl" or m.startswith("reference_impl.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    pkg = importlib.import_module("reference_impl")
    return str(Path(str(pkg.__file__)).resolve().parent)


def run_cases(tree: Path, cases: list[Case], out: Path, *, stop_at_first: bool = True) -> None:
    """Run ``cases`` against the tree's ``reference_impl``; one JSON line per case into ``out``."""
    with out.open("a", encoding="utf-8") as fh:

        def emit(rec: dict[str, Any]) -> None:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()

        try:
            origin = _use_tree(tree)
            if Path(origin) != (tree / "reference_impl").resolve():
                emit({"event": "isolation_error", "origin": origin})
                return
            # the mutated module itself, so an exception at import is the mutant's (a crash kill), not a later one's
            importlib.import_module("reference_impl.app")
        except BaseException as exc:
            emit({"event": "case", "case": None, "status": "error", "error": f"import: {type(exc).__name__}: {exc}"})
            return
        from harness.scenario import load_scenario
        from harness.sim.explore import run_seed
        from harness.sim.runner import with_seed

        for case in cases:
            emit({"event": "start", "case": asdict(case)})
            t0 = time.perf_counter()  # seam-ok: tooling, seconds-to-kill for the report
            try:
                sc = with_seed(load_scenario(case.path).with_tokenizer(case.tokenizer), case.seed, case.variant)
                r = run_seed(sc, case.seed, case.strategy)
                status, error = r.status, r.error
                invalid = [str(v["checker"]) for v in r.invalid]
                first = _first_violation(r.invalid)
            except Exception as exc:  # a mutant that breaks the scenario machinery itself crashed the run
                status, error, invalid, first = "error", f"{type(exc).__name__}: {exc}", [], None
            emit(
                {
                    "event": "case",
                    "case": asdict(case),
                    "status": status,
                    "invalid": invalid,
                    "first_violation": first,
                    "error": error,
                    "seconds": round(time.perf_counter() - t0, 3),  # seam-ok: see above
                }
            )
            if stop_at_first and status in ("invalid", "error"):
                return


def _first_violation(invalid: list[dict[str, Any]]) -> str | None:
    for v in invalid:
        vs = v.get("violations") or []
        if vs:
            return f"{v.get('checker')}: {str(vs[0].get('message'))[:300]}"
    return None


def child_main(tree: str, cases: list[dict[str, Any]], out: str, log: str, stop_at_first: bool) -> None:
    """Entry point of a forked child: stdout/stderr to ``log``, then :func:`run_cases`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    run_cases(Path(tree), [Case(**c) for c in cases], Path(out), stop_at_first=stop_at_first)
