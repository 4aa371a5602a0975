"""Reports: percentiles per timing bucket, plots, summary.json, report.md/html, JUnit, and the CI gate.

The report role reads a run folder (``harness.rundata.RunData`` plus
``verdicts.json``) and nothing else, so any run can be re-reported later
with ``harness report RUN_DIR``. Modules, one job each:

- ``stats``: HdrHistogram percentiles (1 us .. 1 h, 3 digits), out-of-range
  counting, seeded bootstrap confidence intervals;
- ``buckets``: the server's ``chat_done`` buckets and the client's latencies
  (from intended start; per turn with retries), by outcome, variant, process;
- ``plots``: PNGs (matplotlib Agg);
- ``summary``: ``summary.json`` (``schema_version`` 1, docs/report_schema.md) and SLOs;
- ``render``: ``report.md``, self-contained ``report.html``, ``junit.xml``;
- ``compare``: the regression gate behind ``harness compare``.
"""

from __future__ import annotations

from harness.report.build import build_run_report, build_suite_report
from harness.report.compare import Comparison, GateResult, compare, compare_samples, gate_verdict
from harness.report.summary import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "Comparison",
    "GateResult",
    "build_run_report",
    "build_suite_report",
    "compare",
    "compare_samples",
    "gate_verdict",
]
