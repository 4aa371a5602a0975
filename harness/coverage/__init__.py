"""Rule coverage: every rule of CONTEXT.md -> the measured runs that exercised it -> the checker that
flags its violation -> the known-bad server that proves that checker.

A harness can only claim to validate a session server for the rules it
actually exercises and checks. The rules are numbered in ``rules.toml``
(reviewed data: a paraphrase of CONTEXT.md, the facets that say a run
exercised each rule, the checkers and violation kinds that are its). Whether
a rule was exercised is *computed*: the library scenarios run in simulation
and each facet counts occurrences in what the runs left behind
(``_facets.py``). Whether a checker has teeth is computed too: each known-bad
server of ``proofs.toml`` (a reference_impl variant, or a small wrapper in
``_bugs.py``) runs next to the correct server, and a checker invalid on the
first and not on the second is proven. ``harness coverage`` writes
docs/coverage.md; ``--check`` fails on a stale document or a gap.
"""

from harness.coverage._compute import (
    PROOFS_FILE,
    RULES_FILE,
    Coverage,
    CoverageError,
    Plan,
    Proof,
    Rule,
    RunFacts,
    compute,
    load_plan,
    load_proofs,
    load_rules,
)
from harness.coverage._facets import FACETS, Facet, count_facets
from harness.coverage._render import render

__all__ = [
    "FACETS",
    "PROOFS_FILE",
    "RULES_FILE",
    "Coverage",
    "CoverageError",
    "Facet",
    "Plan",
    "Proof",
    "Rule",
    "RunFacts",
    "compute",
    "count_facets",
    "load_plan",
    "load_proofs",
    "load_rules",
    "render",
]
