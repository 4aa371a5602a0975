"""Build a run's report folder, and a suite's, from what the run recorded.

``build_run_report(run_dir)`` reads only the run folder (verdicts.json, and the fields the report reads
of the rest: :func:`harness.report.scan.lean_run`, never the whole run)
and writes ``summary.json``, ``report.md``, ``report.html``, ``junit.xml``,
``plots/*.png`` and ``plots/timeline.svg`` next to them. Running it twice gives
the same files: the bootstrap is seeded from the scenario's seed, and the run
metadata (host, date, commit) is collected once, on the first report, into
``meta.json`` (harness.report.meta), through a :class:`MetaSource` a test can fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.buckets import extract
from harness.report.meta import MetaSource, clock_kind, load_or_collect, replay_command
from harness.report.plots import plot_run, plot_variants
from harness.report.render import junit_xml, markdown_run, markdown_suite, run_html, suite_html
from harness.report.scan import lean_run
from harness.report.summary import SCHEMA_VERSION, run_summary, suite_summary
from harness.report.timeline import build_timeline, numbered_violations, op_row
from harness.rundata import RUN_FILES

__all__ = ["REPORT_FILES", "build_run_report", "build_suite_report", "find_runs", "is_run_dir"]

REPORT_FILES = ("summary.json", "report.md", "report.html", "junit.xml")
TIMELINE_SVG = "plots/timeline.svg"


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILES["history"]).exists() or (path / RUN_FILES["scenario"]).exists()


def find_runs(suite_dir: Path) -> list[Path]:
    """The scenario run folders directly under a suite folder, by name."""
    return sorted(p for p in suite_dir.iterdir() if p.is_dir() and is_run_dir(p))


def _seed(scenario: dict[str, Any]) -> int:
    seed = scenario.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = _clean(summary)
    return cleaned


def _clean(x: Any) -> Any:
    """JSON has no NaN: turn any that slipped through into null."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _sim(run_dir: Path, scenario: dict[str, Any]) -> dict[str, Any] | None:
    """``sim.json`` of a simulation run (or the scenario's ``sim`` block); None for a live run."""
    try:
        data = json.loads((run_dir / "sim.json").read_text())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    sim = scenario.get("sim")
    if scenario.get("mode") == "sim" and isinstance(sim, dict):
        return {"source": scenario.get("source"), **sim}
    return None


def build_run_report(run_dir: Path | str, *, meta: MetaSource | None = None) -> dict[str, Any]:
    """Regenerate everything for one scenario run folder; returns the summary.

    ``meta``: where the run metadata comes from when the folder has no ``meta.json`` yet (default: the system).
    """
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {RUN_FILES['history']} or {RUN_FILES['scenario']})")
    from harness.verdict import fresh_verdicts, judge

    # re-checked (and rewritten) when verdicts.json is stale, by check_folder: per session where it can
    verdicts, _stale = fresh_verdicts(run_dir)
    run = lean_run(run_dir)  # what the report reads of the folder, a line at a time (harness/report/scan.py)
    data = extract(run)
    name = str(run.scenario.get("name") or run_dir.name)
    plots_dir = run_dir / "plots"
    summary = run_summary(run, data, verdicts, name=name, run_name=run_dir.name, plots=[], seed=_seed(run.scenario))
    judgement = judge(run_dir, run=run, data=data, verdicts=verdicts)
    summary["verdict"] = judgement.to_json()  # the one verdict (harness/verdict.py): what junit.xml fails on
    if _stale:
        summary["verdict"]["notes"] = [_stale]
    sim = _sim(run_dir, run.scenario)
    clock = clock_kind(run.scenario, sim)
    summary["scenario"]["description"] = str(run.scenario.get("description") or "").strip()
    summary["clock"] = clock
    summary["replay"] = replay_command(run.scenario, sim, str(summary["scenario"]["variant"]))
    summary["meta"] = load_or_collect(run_dir, meta)
    refs: dict[int, list[int]] = {}
    for number, _checker, example in numbered_violations(summary["verdicts"]):
        for idx in example.get("ops") or []:
            if isinstance(idx, int) and not isinstance(idx, bool):
                refs.setdefault(idx, []).append(number)
    timeline, ops = build_timeline(run.history, run.backend_executions, refs, virtual=clock == "virtual")
    named = {i for i in refs}
    summary["violation_ops"] = [op_row(op) for op in ops if named.intersection(op.indices)]
    summary["timeline"] = {"svg": TIMELINE_SVG, **timeline.to_json()}
    plots_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / TIMELINE_SVG).write_text(timeline.svg() + "\n")
    paths = plot_run(data, summary["latency"], summary["breakdown"], plots_dir, seed=_seed(run.scenario))
    summary["plots"] = [p.relative_to(run_dir).as_posix() for p in paths]
    summary = _clean_summary(summary)
    _write_json(run_dir / "summary.json", summary)
    (run_dir / "report.md").write_text(markdown_run(summary))
    (run_dir / "report.html").write_text(run_html(summary, run_dir))
    (run_dir / "junit.xml").write_text(junit_xml([summary], name=run_dir.name))
    return summary


def _load_or_build(run_dir: Path, rebuild: bool, meta: MetaSource | None = None) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not rebuild and path.exists():
        summary: dict[str, Any] = json.loads(path.read_text())
        if summary.get("schema_version") == SCHEMA_VERSION and summary.get("kind") == "run":
            return summary
    return build_run_report(run_dir, meta=meta)


def build_suite_report(
    suite_dir: Path | str, *, rebuild: bool = False, meta: MetaSource | None = None
) -> dict[str, Any]:
    """The suite's summary, report and junit over every scenario folder in ``suite_dir``.

    Uses each scenario's ``summary.json`` when it is current (the runner has
    just built it), else builds that scenario's report first.
    """
    suite_dir = Path(suite_dir)
    runs = [_load_or_build(d, rebuild, meta) for d in find_runs(suite_dir)]
    summary = suite_summary(runs)
    groups = {
        r["name"] if r["variant"] in r["name"] else f"{r['name']}\n{r['variant']}": r["total_ms"]
        for r in summary["scenarios"]
    }
    plot = plot_variants(
        groups,
        suite_dir / "plots" / "suite_variants.png",
        title="Server total_ms per scenario and variant (95% bootstrap CI)",
    )
    summary["plots"] = [plot.relative_to(suite_dir).as_posix()]
    summary = _clean_summary(summary)
    _write_json(suite_dir / "summary.json", summary)
    (suite_dir / "report.md").write_text(markdown_suite(summary))
    (suite_dir / "report.html").write_text(suite_html(summary, suite_dir))
    (suite_dir / "junit.xml").write_text(junit_xml(runs, name=suite_dir.name or "suite"))
    return summary
