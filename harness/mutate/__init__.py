"""Mutation testing: how many independently written bugs in the reference server does the library catch?

The known-bad variants prove the checkers catch the bugs they were written
next to. Mutation testing asks the harder question: take cosmic-ray's
mechanical mutants of the protocol modules (a flipped comparison, a dropped
``not``, a replaced constant), run the sim-mode scenario library against each
in isolation, and count the ones some checker flags. A survivor is either
equivalent (no client could ever observe it: listed, with the reason, in
``equivalent.toml``) or a blind spot of the library. docs/mutation.md says how
to run, read and triage.

``harness mutate`` is the command (``cli``); :func:`run_mutation` the library.
"""

from harness.mutate._driver import MutantResult, MutationConfig, MutationRun, library_cases, run_mutation
from harness.mutate._equivalent import DEFAULT_EQUIVALENT_FILE, EquivalentError, load_equivalents
from harness.mutate._generate import PROTOCOL_MODULES, Mutant, enumerate_positions, materialize
from harness.mutate._report import write_report

__all__ = [
    "DEFAULT_EQUIVALENT_FILE",
    "PROTOCOL_MODULES",
    "EquivalentError",
    "Mutant",
    "MutantResult",
    "MutationConfig",
    "MutationRun",
    "enumerate_positions",
    "library_cases",
    "load_equivalents",
    "materialize",
    "run_mutation",
    "write_report",
]
