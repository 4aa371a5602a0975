"""Is the backend's execution log the same one from the run's start to its end?

``backend_executions`` is what the fake SGLang still held when the run read
its ``/stats`` at the end. A backend that restarted (another process, so
another ``boot_id``) or whose log was cleared (``POST /admin/reset`` counts in
``resets``) holds only what ran after that: a request missing from it may
well have been executed. The runner reads ``/stats`` at the start and at the
end of the run (history ops ``f: "probe"``, ``value: "backend_stats"``, whose
``body`` keeps ``boot_id``, ``resets`` and the number of executions held);
:func:`execution_log_gap` compares the two. Checkers that conclude anything
from an execution's *absence* answer unknown with its reason instead.
"""

from __future__ import annotations

from typing import Any

from harness.rundata import RunData

__all__ = ["BACKEND_PROBE", "execution_log_gap"]

BACKEND_PROBE = "backend_stats"


def _probes(run: RunData) -> list[dict[str, Any]]:
    return [
        e
        for e in run.history
        if e.get("type") != "invoke" and e.get("f") == "probe" and e.get("value") == BACKEND_PROBE
    ]


def execution_log_gap(run: RunData) -> str | None:
    """Why the execution log may miss executions of this run (a restart, a reset), or None.

    None also when the run recorded no backend probes (an older run folder, a
    harness that drove no fake): the log is then taken as it is, as before.
    """
    probes = _probes(run)
    if not probes:
        return None
    first, last = probes[0], probes[-1]
    if len(probes) == 1:
        return None  # a cut run: the end was never read, backend_executions is empty anyway
    for which, p in (("start", first), ("end", last)):
        if p.get("type") != "ok" or not isinstance(p.get("body"), dict):
            why = p.get("error") or f"status {p.get('status')}"
            return f"the backend's /stats could not be read at the run's {which} ({why}): continuity of its log unknown"
    a: dict[str, Any] = first["body"]
    b: dict[str, Any] = last["body"]
    if "boot_id" in a and "boot_id" in b and a["boot_id"] != b["boot_id"]:
        return (
            f"the backend restarted during the run (boot_id {a['boot_id']} -> {b['boot_id']}): "
            "its execution log holds only what ran after the restart"
        )
    if "resets" in a and "resets" in b and a["resets"] != b["resets"]:
        n = b["resets"] - a["resets"] if isinstance(a["resets"], int) and isinstance(b["resets"], int) else "?"
        return (
            f"the backend's execution log was reset during the run ({n} x /admin/reset, resets "
            f"{a['resets']} -> {b['resets']}): it holds only what ran after the last reset"
        )
    na, nb = a.get("executions"), b.get("executions")
    if isinstance(na, int) and isinstance(nb, int) and nb < na:
        return f"the backend's execution log shrank during the run ({na} -> {nb} executions)"
    return None
