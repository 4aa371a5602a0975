"""``summary.json``: the machine-readable result of one run, and of a suite.

The schema is versioned (``schema_version``) and documented field by field in
``docs/report_schema.md``; CI scripts and dashboards read it, so a field is
only ever added within a version. Renaming or removing one bumps the version.
Everything in it is recomputed from the run folder's history, server logs and
``verdicts.json``: nothing here is a measurement of its own.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.buckets import CLIENT_SERIES, SERVER_BUCKETS, SERVER_PARTS, LatencyData
from harness.report.stats import PERCENTILES, latency_stats, percentile_key
from harness.rundata import RunData

__all__ = [
    "SCHEMA_VERSION",
    "Attention",
    "attention",
    "breakdown",
    "compose_status",
    "coverage_line",
    "evaluate_slos",
    "load_verdicts",
    "run_summary",
    "series_summary",
    "suite_summary",
    "unknown_line",
    "unknown_summary",
]

SCHEMA_VERSION = 1
MAX_EXAMPLES = 20  # violations copied into summary.json per checker (verdicts.json has them all)
_STATUS_RANK = {"valid": 0, "unknown": 1, "invalid": 2}


def load_verdicts(run_dir: Path) -> list[dict[str, Any]]:
    """``verdicts.json`` as plain data ([] when the runner wrote none)."""
    path = run_dir / "verdicts.json"
    if not path.exists():
        return []
    raw = json.loads(path.read_text())
    if isinstance(raw, dict):  # tolerate {"verdicts": [...]} or {name: verdict}
        raw = raw.get("verdicts", list(raw.values()))
    return [v for v in raw if isinstance(v, dict)]


def compose_status(statuses: list[str]) -> str:
    """invalid beats unknown beats valid; nothing checked is unknown."""
    if not statuses:
        return "unknown"
    return max(statuses, key=lambda s: _STATUS_RANK.get(s, 1))


def unknown_summary(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """How many verdicts were unknown, and why (each checker's notes say what was missing)."""
    rows = [
        {"checker": str(v.get("checker")), "reason": str(v.get("notes") or "no reason given")}
        for v in verdicts
        if str(v.get("status", "unknown")) == "unknown"
    ]
    return {"count": len(rows), "verdicts": rows}


def unknown_line(verdicts: list[dict[str, Any]], max_chars: int = 400) -> str | None:
    """One line a user cannot miss: ``UNKNOWN 2 of 12 verdicts (not checked, not passed): a: why; b: why``."""
    u = unknown_summary(verdicts)
    if not u["count"]:
        return None
    why = "; ".join(f"{r['checker']}: {r['reason']}" for r in u["verdicts"])
    if len(why) > max_chars:
        why = why[: max_chars - 3] + "..."
    return f"UNKNOWN {u['count']} of {len(verdicts)} verdicts (not checked, not passed): {why}"


def coverage_line(coverage: dict[str, Any]) -> str | None:
    """``declared but not exercised: abort (backend.rules[0]), ...`` or why it cannot be told; None if all fired."""
    missing = coverage.get("not_exercised") or []
    if missing:
        names = ", ".join(f"{d.get('fault')} ({d.get('by')})" for d in missing)
        reason = f" [{coverage['reason']}]" if coverage.get("reason") else ""
        return f"declared but not exercised: {names}{reason}"
    if coverage.get("declared") and not coverage.get("decided", True):
        return f"fault coverage unknown: {coverage.get('reason')}"
    return None


@dataclass(frozen=True)
class Attention:
    """What a run leaves undecided: the unknown line, the fault-coverage line, and whether the
    scenario itself asks for strict (``checks.strict``). ``--strict`` fails the run on either line."""

    unknown: str | None
    coverage: str | None
    scenario_strict: bool = False

    @property
    def lines(self) -> list[str]:
        return [x for x in (self.unknown, self.coverage) if x]

    @property
    def strict_fails(self) -> bool:
        return bool(self.lines)


def attention(run_dir: Path, verdicts: list[dict[str, Any]], run: RunData | None = None) -> Attention:
    """The :class:`Attention` of one run folder (fault coverage from its summary.json, else recomputed
    from ``run`` when the caller already holds the folder loaded: a second copy doubles the memory)."""

    def read(name: str) -> Any:
        try:
            return json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            return None

    summary = read("summary.json")
    cov = summary.get("faults") if isinstance(summary, dict) else None
    if not isinstance(cov, dict):
        if run is None and (run_dir / "history.jsonl").exists():
            from harness.report.scan import lean_run

            run = lean_run(run_dir)
        cov = _coverage(run) if run is not None else {}
    scenario = read("scenario.json")
    checks = scenario.get("checks") if isinstance(scenario, dict) else None
    strict = bool(checks.get("strict")) if isinstance(checks, dict) else False
    return Attention(unknown_line(verdicts), coverage_line(cov), strict)


def _coverage(run: RunData) -> dict[str, Any]:
    from harness.checkers.faults import fault_coverage

    return fault_coverage(run).to_dict()


def _stats_json(values: list[float | None], *, ci: bool, seed: int) -> dict[str, Any]:
    return latency_stats(values, ci=ci, seed=seed).to_json()


def series_summary(data: LatencyData, name: str, *, seed: int = 0) -> dict[str, Any]:
    """``all`` (with bootstrap CIs) plus splits by outcome, variant and process."""
    samples = data.series(name)
    groups: dict[str, dict[str, list[float | None]]] = {
        "by_outcome": defaultdict(list),
        "by_variant": defaultdict(list),
        "by_process": defaultdict(list),
    }
    for s in samples:
        groups["by_outcome"][s.outcome].append(s.value)
        groups["by_variant"][s.variant].append(s.value)
        groups["by_process"][s.process].append(s.value)
    out: dict[str, Any] = {"all": _stats_json([s.value for s in samples], ci=True, seed=seed)}
    for split, by in groups.items():
        out[split] = {key: _stats_json(vals, ci=(split == "by_variant"), seed=seed) for key, vals in sorted(by.items())}
    return out


def breakdown(data: LatencyData, percentiles: tuple[float, ...] = (50.0, 99.0)) -> dict[str, Any]:
    """Where the time went for the requests *at* a percentile of ``total_ms``.

    Percentiles of separate buckets do not add up, so instead take the requests
    whose total sits around the percentile (a window of +-0.5% of ranks, at
    least one request) and average each bucket over them. ``other_ms`` is
    total minus the parts: time the server did not attribute to a bucket.
    """
    cols = {b: data.server.col(b) for b in SERVER_BUCKETS}
    total_of = cols["total_ms"]
    rows = [k for k, t in enumerate(total_of) if t is not None]  # row numbers: no request object each
    rows.sort(key=total_of.__getitem__)
    n = len(rows)
    out: dict[str, Any] = {}
    for p in percentiles:
        key = percentile_key(p)
        if n == 0:
            out[key] = {"n": 0}
            continue
        rank = min(max(int(p * n / 100.0 + 0.5), 1), n) - 1
        half = max(1, n // 200)
        window = rows[max(0, rank - half) : min(n, rank + half + 1)]
        parts = {b: sum(cols[b][k] or 0.0 for k in window) / len(window) for b in SERVER_PARTS}
        total = sum(total_of[k] or 0.0 for k in window) / len(window)
        out[key] = {
            "n": len(window),
            **{b: round(v, 3) for b, v in parts.items()},
            "other_ms": round(total - sum(parts.values()), 3),
            "total_ms": round(total, 3),
        }
    return out


def _slo_percentile(key: str) -> float | None:
    """``p99_ms`` -> 99.0, ``p99_9_ms`` -> 99.9, ``max_ms`` -> 100."""
    if key == "max_ms":
        return 100.0
    if not (key.startswith("p") and key.endswith("_ms")):
        return None
    try:
        return float(key[1:-3].replace("_", "."))
    except ValueError:
        return None


def _slo_bounds(slo: Any) -> list[tuple[str, str, Any]]:
    """(series, key, bound) from either spelling of the scenario's ``slo``.

    ``{series: {"p99_ms": bound, ...}}`` (explicit percentiles), or the
    scenario loader's ``{series: bound}`` / ``{"p99_series": bound}`` (a p99 bound).
    """
    out: list[tuple[str, str, Any]] = []
    if not isinstance(slo, dict):
        return out
    for series, bounds in sorted(slo.items()):
        if isinstance(bounds, dict):
            out += [(series, key, bound) for key, bound in sorted(bounds.items())]
        else:
            out.append((series.removeprefix("p99_"), "p99_ms", bounds))
    return out


def evaluate_slos(scenario: dict[str, Any], data: LatencyData) -> dict[str, Any]:
    """The scenario's ``slo`` table, ``{series: {"p99_ms": bound}}`` or ``{series: p99 bound}``, against the run.

    A bound passes when the observed percentile is at or below it. Values the
    histogram could not hold (out of range) fail the check: they are the
    tail the bound is about. No samples is ``no_data``, never a pass.
    """
    checks: list[dict[str, Any]] = []
    for series, key, bound in _slo_bounds(scenario.get("slo") or {}):
        p = _slo_percentile(key)
        check: dict[str, Any] = {"series": series, "key": key, "threshold_ms": bound}
        valid_bound = isinstance(bound, int | float) and not isinstance(bound, bool)
        if p is None or series not in SERVER_BUCKETS + CLIENT_SERIES or not valid_bound:
            check.update(status="error", note=f"unknown SLO {series}.{key} (expected <series>.pNN_ms)")
            checks.append(check)
            continue
        st = latency_stats(data.values(series), percentiles=(p,))
        observed = st.max_ms if key == "max_ms" else st.get(p)
        check.update(percentile=p, n=st.n, out_of_range=st.out_of_range)
        if st.n == 0:
            check.update(status="no_data", observed_ms=None, note="no samples")
        elif st.out_of_range:
            check.update(status="fail", observed_ms=round(observed, 3), note=f"{st.out_of_range} out of range")
        else:
            ok = observed <= float(bound)
            check.update(status="pass" if ok else "fail", observed_ms=round(observed, 3))
        checks.append(check)
    statuses = [c["status"] for c in checks]
    if not checks:
        overall = "none"
    elif "fail" in statuses or "error" in statuses:
        overall = "fail"
    elif "no_data" in statuses:
        overall = "no_data"
    else:
        overall = "pass"
    return {"status": overall, "checks": checks}


def _ops(run: RunData) -> dict[str, Any]:
    by_f: dict[str, Counter[str]] = defaultdict(Counter)
    for ev in run.history:
        by_f[str(ev.get("f"))][str(ev.get("type"))] += 1
    return {"history_events": len(run.history), "by_f": {f: dict(sorted(c.items())) for f, c in sorted(by_f.items())}}


def _time_span(data: LatencyData) -> dict[str, float | None]:
    if not data.requests:
        return {"start_s": None, "end_s": None}
    return {"start_s": min(data.requests.col("intended")), "end_s": max(data.requests.col("end"))}


def run_summary(
    run: RunData,
    data: LatencyData,
    verdicts: list[dict[str, Any]],
    *,
    name: str,
    run_name: str | None = None,
    plots: list[str],
    seed: int = 0,
) -> dict[str, Any]:
    verdict_rows = [
        {
            "checker": str(v.get("checker")),
            "status": str(v.get("status", "unknown")),
            "violations": len(v.get("violations") or []),
            "notes": str(v.get("notes") or ""),
            "examples": [_violation(x) for x in (v.get("violations") or [])[:MAX_EXAMPLES]],
        }
        for v in verdicts
    ]
    server = {b: series_summary(data, b, seed=seed) for b in SERVER_BUCKETS}
    client = {c: series_summary(data, c, seed=seed) for c in CLIENT_SERIES}
    out_of_range = sum(s["all"]["out_of_range"] for s in [*server.values(), *client.values()])
    slo = evaluate_slos(run.scenario, data)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "scenario": {
            "name": name,
            "run": run_name or name,
            "source": run.scenario.get("source"),
            "seed": run.scenario.get("seed"),
            "mode": run.scenario.get("mode"),
            "variant": data.variant,
        },
        "status": compose_status([str(r["status"]) for r in verdict_rows]),
        "verdicts": verdict_rows,
        "unknown": unknown_summary(verdicts),
        "faults": _coverage(run),
        "slo": slo,
        "percentiles": [percentile_key(p) for p in PERCENTILES],
        "latency": {"server": server, "client": client},
        "breakdown": breakdown(data),
        "out_of_range": out_of_range,
        "ops": _ops(run),
        "counts": {
            "chat_done": len(data.server),
            "client_requests": len(data.requests),
            "client_turns": len(data.turns),
            "unmatched_invokes": data.unmatched_invokes,
            "chaos_events": sum(1 for e in data.events if e.kind == "chaos"),
            "fault_events": sum(1 for e in data.events if e.kind == "fault"),
            "server_processes": len(set(data.server.col("process"))),
        },
        "time_span": _time_span(data),
        "harness": _harness_self(run),
        "plots": plots,
    }


def _harness_self(run: RunData) -> dict[str, Any]:
    """The harness's own load during the run (live only): when saturated, client latency is not the server's."""
    h = dict(run.harness)
    if not h:
        return {"measured": False, "saturated": False, "note": None}
    from harness.runner._selfmon import SelfMonitor

    h["measured"] = True
    h["note"] = SelfMonitor.note(h)
    return h


def suite_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per scenario, from each run's own summary."""
    rows = []
    for s in runs:
        total = s["latency"]["server"]["total_ms"]["all"]
        request = s["latency"]["client"]["client_request_ms"]["all"]
        rows.append(
            {
                "name": s["scenario"].get("run") or s["scenario"]["name"],
                "scenario": s["scenario"]["name"],
                "variant": s["scenario"]["variant"],
                "status": s["status"],
                "slo": s["slo"]["status"],
                "verdicts": {v["checker"]: v["status"] for v in s["verdicts"]},
                "violations": sum(v["violations"] for v in s["verdicts"]),
                "total_ms": total,
                "client_request_ms": request,
                "out_of_range": s["out_of_range"],
                "unknown": (s.get("unknown") or {}).get("count", 0),
                "not_exercised": len((s.get("faults") or {}).get("not_exercised") or []),
                "failing": [v["checker"] for v in s["verdicts"] if v["status"] == "invalid"],
                "unknown_verdicts": list((s.get("unknown") or {}).get("verdicts") or []),
                "not_exercised_faults": list((s.get("faults") or {}).get("not_exercised") or []),
                "attention": [
                    x for x in (unknown_line(s["verdicts"]), coverage_line(s.get("faults") or {})) if x is not None
                ],
                "clock": s.get("clock", "wall"),
            }
        )
    counts = Counter(r["status"] for r in rows)
    slo_failed = sum(1 for r in rows if r["slo"] == "fail")
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "suite",
        "status": compose_status([r["status"] for r in rows]),
        "counts": {"scenarios": len(rows), **{k: counts.get(k, 0) for k in ("valid", "invalid", "unknown")}},
        "slo_failed": slo_failed,
        "scenarios": rows,
        "plots": [],
    }


def _violation(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        return {"message": str(v), "ops": [], "session": None}
    return {"message": str(v.get("message", "")), "ops": list(v.get("ops") or []), "session": v.get("session")}
