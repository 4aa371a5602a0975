"""reports/mutation/: one diff per mutant, ``mutants.jsonl``, ``summary.json`` and ``summary.md``.

The summary names the commit the figures were measured on (and whether
``reference_impl/`` had uncommitted edits), because the protocol modules move
under other people's hands and a score without its commit means little.
Only files this command writes are replaced: ``mutants/*.diff`` of an
earlier run are removed by the names its own ``mutants.jsonl`` recorded.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
from pathlib import Path
from typing import Any

from harness.mutate._driver import MutationRun

__all__ = ["git_commit", "percentile", "summary", "write_report"]


def git_commit(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "reference_impl"))}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    xs = sorted(values)
    k = max(0, min(len(xs) - 1, math.ceil(p / 100.0 * len(xs)) - 1))
    return xs[k]


def summary(run: MutationRun, root: Path) -> dict[str, Any]:
    cfg = run.config
    kills = [r.seconds_to_kill for r in run.results if r.status == "killed" and r.stage == "sim"]
    sim_kills = [float(x) for x in kills if x is not None]
    by_checker: dict[str, int] = {}
    by_scenario: dict[str, int] = {}
    for r in run.results:
        if r.status == "killed" and r.killed_by:
            for c in r.killed_by.get("checkers") or ["(crash)"]:
                by_checker[c] = by_checker.get(c, 0) + 1
            s = str(r.killed_by.get("scenario") or "(import)")
            by_scenario[s] = by_scenario.get(s, 0) + 1
    per_module: dict[str, dict[str, int]] = {}
    for r in run.results:
        row = per_module.setdefault(r.mutant.module, {})
        row[r.status] = row.get(r.status, 0) + 1
    return {
        **git_commit(root),
        "modules": list(cfg.modules),
        "sample": cfg.sample,
        "seed": cfg.seed,
        "sim_seeds": list(cfg.seeds),
        "hash_seeds": list(cfg.hash_seeds),
        "live": cfg.live,
        "budget_s": cfg.budget_s,
        "timeout_s": round(run.timeout_s, 1),
        "elapsed_s": round(run.elapsed_s, 1),
        "positions": run.positions,
        "annotation_skipped": run.annotation_skipped,
        "rejected": run.rejected,
        "mutants": len(run.results),
        "counts": run.counts(),
        "score": None if run.score is None else round(run.score, 4),
        "score_in_contract": None if run.score_in_contract is None else round(run.score_in_contract, 4),
        "out_of_contract": {
            "survived": [r.mutant.id for r in run.results if r.contract is not None and r.status == "survived"],
            # a kill of a listed mutant: some checker judges what CONTEXT.md does not promise (or the list is wrong)
            "killed": [r.mutant.id for r in run.results if r.contract is not None and r.status == "killed"],
        },
        "seconds_to_kill_sim": {
            "median": None if not sim_kills else round(statistics.median(sim_kills), 3),
            "p90": percentile(sim_kills, 90),
            "max": max(sim_kills) if sim_kills else None,
        },
        "kills_by_checker": dict(sorted(by_checker.items(), key=lambda kv: -kv[1])),
        "kills_by_scenario": dict(sorted(by_scenario.items(), key=lambda kv: -kv[1])),
        "per_module": per_module,
        "cases": [c.label for c in run.cases],
        "case_seconds": run.case_seconds,
        "excluded_cases": run.excluded_cases,
        "live_baseline": run.live_baseline,
        "notes": run.notes,
        "survivors": [r.mutant.id for r in run.results if r.status == "survived"],
        "timeouts": [r.mutant.id for r in run.results if r.status == "timeout"],
        "infra_errors": [r.mutant.id for r in run.results if r.status == "infra_error"],
    }


def _md(run: MutationRun, s: dict[str, Any]) -> str:
    c = s["counts"]
    score = "n/a" if s["score"] is None else f"{100 * s['score']:.1f}%"
    stk = s["seconds_to_kill_sim"]
    lines = [
        "# Mutation testing",
        "",
        f"Commit `{s['commit']}`{' (reference_impl/ had uncommitted edits)' if s['dirty'] else ''}; "
        f"modules {', '.join(s['modules'])}; {s['mutants']} mutants "
        f"({'sample ' + str(s['sample']) + ', seed ' + str(s['seed']) if s['sample'] else 'all'}) of "
        f"{s['positions']} positions ({s['annotation_skipped']} annotation mutations skipped, "
        f"{s['rejected']} rewrites rejected as no-op or not compiling); "
        f"{s['elapsed_s']} s; sim seeds {', '.join(map(str, s['sim_seeds']))}; "
        f"PYTHONHASHSEED {', '.join(map(str, s['hash_seeds']))} (later ones re-run the survivors).",
        "",
        f"**Score: {score}** (killed / (killed + survived + timeout)). "
        + ", ".join(f"{k} {v}" for k, v in sorted(c.items())),
        "",
    ]
    oc = s["out_of_contract"]
    if oc["survived"] or oc["killed"]:
        in_c = "n/a" if s["score_in_contract"] is None else f"{100 * s['score_in_contract']:.1f}%"
        lines += [
            f"Within the contract: {in_c}, leaving out {len(oc['survived'])} survivor(s) listed as out of contract "
            "(harness/mutate/out_of_contract.toml: observable, but CONTEXT.md does not fix it).",
            "",
        ]
        if oc["killed"]:
            lines += [
                f"**Killed although listed as out of contract: {', '.join(oc['killed'])}**: a checker judges "
                "something CONTEXT.md does not promise, or the entry is wrong. Read the kill.",
                "",
            ]
    lines += [
        f"Seconds to kill in sim: median {stk['median']}, p90 {stk['p90']}, max {stk['max']}.",
        "",
        "Kills by checker: " + (", ".join(f"{k} {v}" for k, v in s["kills_by_checker"].items()) or "none"),
        "",
        "Kills by scenario: " + (", ".join(f"{k} {v}" for k, v in s["kills_by_scenario"].items()) or "none"),
        "",
    ]
    if s["excluded_cases"]:
        lines += ["Cases dropped (not valid on the unmutated server):", ""]
        lines += [f"- {k}: {v}" for k, v in s["excluded_cases"].items()]
        lines.append("")
    lines += [
        "| id | module | function | operator | status | killed by | s | snippet |",
        "|---|---|---|---|---|---|---:|---|",
    ]
    order = {"survived": 0, "timeout": 1, "killed": 2, "infra_error": 3, "equivalent": 4, "not_run": 5}
    for r in sorted(run.results, key=lambda r: (order.get(r.status, 9), r.mutant.module, r.mutant.position.line)):
        m = r.mutant
        kb = ""
        if r.killed_by:
            kb = f"{r.killed_by['case']}: {', '.join(r.killed_by.get('checkers') or []) or 'crash'}"
        elif r.reason:
            kb = r.reason[:60]
        snippet = f"`{m.before[:70]}` -> `{m.after[:70]}`".replace("|", "\\|")
        secs = "" if r.seconds_to_kill is None else f"{r.seconds_to_kill:.2f}"
        op = m.operator.removeprefix("core/")
        lines.append(
            f"| {m.id} | {m.module.removeprefix('reference_impl/')} | {m.position.function} | {op} "
            f"| {r.status}{' (out of contract)' if r.contract is not None else ''} | {kb} | {secs} | {snippet} |"
        )
    return "\n".join(lines) + "\n"


def write_report(run: MutationRun, out: Path, root: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    diffs = out / "mutants"
    old = out / "mutants.jsonl"
    if old.exists():  # remove only the diffs this command wrote last time
        for line in old.read_text(encoding="utf-8").splitlines():
            try:
                (diffs / f"{json.loads(line)['id']}.diff").unlink(missing_ok=True)
            except (ValueError, KeyError):
                continue
    diffs.mkdir(exist_ok=True)
    with old.open("w", encoding="utf-8") as fh:
        for r in run.results:
            (diffs / f"{r.mutant.id}.diff").write_text(r.mutant.diff, encoding="utf-8")
            fh.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
    s = summary(run, root)
    (out / "summary.json").write_text(json.dumps(s, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_md(run, s), encoding="utf-8")
    return s
