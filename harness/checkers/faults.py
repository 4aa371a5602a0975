"""Fault coverage: which faults the scenario declared, and which of them the backend applied.

A fault plan that never reaches the backend (an external target whose fake was
started without it, a rule whose matcher names a turn no session reaches, a
probability too small for the run) makes a fault scenario pass with nothing
tested. So every declared fault is looked up in the backend's own execution
log, where the fake records the fault it applied to each request and where it
came from (``fault_source``: ``header`` for ``x-fake-fault``, ``plan:<rule>``
for a plan rule, ``plan:outage`` for a backend outage window):

- ``backend.rules[i]``: some execution carries that fault from a plan rule
  (the rule's own name when it has one);
- ``chaos.forced_faults.<name>`` and ``workload.script[i].fault``: from a header;
- ``chaos.backend_outage[i]``: from the outage rule.

A declared fault that never fired is listed as "declared but not exercised";
under ``--strict`` (``checks.strict``) that fails the run. Without an execution
log nothing can be decided (said so); when the run says the plan was never
applied (``target.faults_applied = false``) every declared fault is not
exercised, with that reason. When the log is not continuous over the run (the
backend restarted or its log was reset: harness/checkers/continuity.py) it
holds only what ran after the loss: a declared fault it does not show may have
fired before, so coverage is undecided for those (with the gap's reason),
while a fault it does show is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.checkers.continuity import execution_log_gap
from harness.checkers.ops import faults_applied
from harness.rundata import RunData

__all__ = ["Coverage", "DeclaredFault", "fault_coverage"]


@dataclass(frozen=True)
class DeclaredFault:
    fault: str  # the fault's name (no parameters), e.g. "http_503"
    by: str  # the scenario key that declares it, e.g. "backend.rules[0]"
    source: str  # the execution log's fault_source it must show: "header", "plan", "plan:<name>"

    def to_dict(self) -> dict[str, str]:
        return {"fault": self.fault, "by": self.by}


@dataclass
class Coverage:
    declared: list[DeclaredFault] = field(default_factory=list)
    not_exercised: list[DeclaredFault] = field(default_factory=list)
    decided: bool = True
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "declared": [d.to_dict() for d in self.declared],
            "not_exercised": [d.to_dict() for d in self.not_exercised],
            "decided": self.decided,
            "reason": self.reason,
        }


def _name(f: Any) -> str:
    return str(f).split(";", 1)[0].strip().lower()


def _table(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def declared_faults(scenario: dict[str, Any]) -> list[DeclaredFault]:
    """Every fault the scenario's plain data declares, with the key that declares it."""
    out: list[DeclaredFault] = []
    backend = _table(scenario, "backend")
    rules = backend.get("rules")
    if not isinstance(rules, list):
        plan = backend.get("plan")
        rules = plan.get("rules") if isinstance(plan, dict) else None
    for i, r in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(r, dict) and r.get("fault") not in (None, "none"):
            p = r.get("probability", 1.0)
            if isinstance(p, (int, float)) and p <= 0:
                continue
            named = r.get("name")
            out.append(DeclaredFault(_name(r["fault"]), f"backend.rules[{i}]", f"plan:{named}" if named else "plan"))
    chaos = _table(scenario, "chaos")
    forced = chaos.get("forced_faults")
    for k, p in sorted(forced.items()) if isinstance(forced, dict) else []:
        if isinstance(p, (int, float)) and p > 0 and _name(k) != "none":
            out.append(DeclaredFault(_name(k), f"chaos.forced_faults.{k}", "header"))
    outages = chaos.get("backend_outage")
    for i, o in enumerate(outages if isinstance(outages, list) else []):
        if isinstance(o, dict):
            out.append(DeclaredFault(_name(o.get("fault", "http_503")), f"chaos.backend_outage[{i}]", "plan:outage"))
    workload = _table(scenario, "workload")
    script = workload.get("script")
    for i, st in enumerate(script if isinstance(script, list) else []):
        if isinstance(st, dict) and st.get("fault") and _name(st["fault"]) != "none":
            out.append(DeclaredFault(_name(st["fault"]), f"workload.script[{i}].fault", "header"))
    return out


def _fired(d: DeclaredFault, applied: list[tuple[str, str | None]]) -> bool:
    for name, source in applied:
        if name != d.fault:
            continue
        if source is None:  # an execution log without fault_source: the fault name is all it says
            return True
        if d.source == "plan" and source.startswith("plan:") and source != "plan:outage":
            return True
        if source == d.source:
            return True
    return False


def fault_coverage(run: RunData) -> Coverage:
    """Which declared faults the backend's execution log shows applied (see the module docstring)."""
    declared = declared_faults(run.scenario)
    cov = Coverage(declared=declared)
    if not declared:
        return cov
    if not faults_applied(run):
        cov.not_exercised = list(declared)
        cov.reason = "target.faults_applied is false: the fault plan never reached the backend"
        return cov
    if not run.backend_executions:
        cov.decided = False
        cov.reason = execution_log_gap(run) or "no backend execution log: which declared faults fired cannot be told"
        return cov
    applied: list[tuple[str, str | None]] = []
    for execs in run.backend_executions.values():
        for ex in execs if isinstance(execs, list) else []:
            if isinstance(ex, dict) and ex.get("fault"):
                src = ex.get("fault_source")
                applied.append((_name(ex["fault"]), str(src) if src is not None else None))
    unseen = [d for d in declared if not _fired(d, applied)]
    gap = execution_log_gap(run) if unseen else None
    if gap is not None:
        cov.decided = False
        cov.reason = f"{gap}: whether {', '.join(d.by for d in unseen)} fired before that is unknown"
        return cov
    cov.not_exercised = unseen
    return cov
