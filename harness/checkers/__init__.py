"""Invariant checkers: what a session server promised, judged from what a run left behind.

Each checker reads one :class:`~harness.rundata.RunData` (history, final
session states, owners, the backend's execution log, the servers' log lines,
the scenario's plain data) and returns a :class:`Verdict`: ``valid``,
``invalid`` (with the offending history indices and sessions) or ``unknown``
(the data needed to decide was not recorded). ``compose`` folds verdicts:
invalid beats unknown beats valid. docs/checkers.md lists every rule, the
known-bad server variant it exists to catch, and what the runner must record.

Usage::

    from harness.checkers import check_all, compose
    verdicts = check_all(run)                 # every registered checker
    verdicts = check_all(run, ["lost_turns"])  # a selection
    overall = compose(verdicts)
"""

from __future__ import annotations

from harness.checkers.bad_input import BadInput
from harness.checkers.base import (
    CHECKERS,
    Checker,
    Noop,
    Status,
    Verdict,
    Violation,
    check_all,
    compose,
    register,
    run_checker,
)
from harness.checkers.blocking import Blocking
from harness.checkers.diagnostics import Diagnostics
from harness.checkers.errors import NoUnexpected5xx
from harness.checkers.exactly_once import ExactlyOnce
from harness.checkers.framing import HttpFraming
from harness.checkers.liveness import Liveness
from harness.checkers.logs import Leaks, LogConsistency
from harness.checkers.lost_turns import LostTurns
from harness.checkers.ownership import Ownership
from harness.checkers.passthrough import Passthrough
from harness.checkers.provisional import Provisional
from harness.checkers.refused_legal import RefusedLegal
from harness.checkers.resurrection import NoResurrection
from harness.checkers.stale_writers import StaleWriters
from harness.checkers.token_state import TokenState

__all__ = [
    "CHECKERS",
    "Checker",
    "Noop",
    "Status",
    "Verdict",
    "Violation",
    "check_all",
    "compose",
    "register",
    "run_checker",
]

if not CHECKERS:
    for _c in (
        LostTurns(),
        Provisional(),
        NoResurrection(),
        NoUnexpected5xx(),
        TokenState(),
        StaleWriters(),
        Ownership(),
        Liveness(),
        LogConsistency(),
        Leaks(),
        HttpFraming(),
        ExactlyOnce(),
        BadInput(),
        RefusedLegal(),
        Blocking(),
        Passthrough(),
        Diagnostics(),
    ):
        register(_c)
