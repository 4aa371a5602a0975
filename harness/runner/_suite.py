"""A suite: several scenario files, each possibly expanded into one run per variant.

Every file is validated before the first process starts, so a typo in the
tenth scenario fails the command in a second rather than after nine runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.runfolder import check_run_dir
from harness.runner._drive import Progress
from harness.runner._live import RunResult, run_dir_name, run_scenario
from harness.scenario import DEFAULT_VARIANT, Scenario, ScenarioError, expand_variants, load_scenario
from harness.suites import suite_scenarios

__all__ = ["SCENARIO_DIR", "check_variant", "expand", "find_scenarios", "load_for_target", "run_suite", "with_policy"]

# The scenario library: scenarios/ in a checkout, packaged inside the wheel as harness/_library/scenarios
# (a symlink in the source tree, so both are the same files).
SCENARIO_DIR = (Path(__file__).resolve().parents[1] / "_library" / "scenarios").resolve()


def find_scenarios(args: Sequence[str], suite: str | None = None, root: Path | None = None) -> list[Path]:
    """Paths named on the command line (files or folders of ``*.toml``), plus a named suite.

    ``suite="default"`` is every scenario with ``default = true`` under ``root``
    (default: the project's scenarios/ folder); ``suite="all"`` is all of them; any other name is the
    profile ``root/suites/<name>.toml`` (``ci``: the latency gate's workload, docs/ci.md).
    """
    root = root or (Path("scenarios") if Path("scenarios").is_dir() else SCENARIO_DIR)
    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out.extend(sorted(p.glob("*.toml")))
        elif p.exists():
            out.append(p)
        elif (root / f"{a}.toml").exists():
            out.append(root / f"{a}.toml")
        else:
            raise ScenarioError(a, "", "no such scenario file (give a path, a folder, or a name under scenarios/)")
    if suite is not None:
        files = sorted(root.glob("*.toml"))
        if suite == "all":
            out.extend(files)
        elif suite == "default":
            out.extend(f for f in files if load_scenario(f).default)
        else:  # a profile: scenarios/suites/<suite>.toml (harness/suites.py)
            out.extend(suite_scenarios(root, suite))
    return list(dict.fromkeys(out))


def load_for_target(path: Path, target: Mapping[str, Any] | None = None) -> Scenario:
    """Load a scenario; ``target`` (a ``[target]`` table from the command line) replaces the file's target.

    The file is validated again with that target (a scenario that needs two processes fails with one),
    and an error says the target came from the command line. A command target keeps the scenario's
    process count and tokenizer unless the table sets them.
    """
    sc = load_scenario(path)
    if target is None:
        return sc
    table = dict(target)
    if table.get("kind") == "command":
        table.setdefault("processes", sc.target.processes)
        if sc.target.kind == "command":
            table.setdefault("startup_timeout_s", sc.target.startup_timeout_s)
    if table.get("kind") in ("command", "reference") and sc.target.tokenizer and "tokenizer" not in table:
        table["tokenizer"] = sc.target.tokenizer
    try:
        return load_scenario(path, overrides={"target": table})
    except ScenarioError as exc:
        given = "--url" if table.get("kind") == "urls" else f"--server-cmd with {table.get('processes')} process(es)"
        msg = f"{exc.message} (with the target given on the command line: {given})"
        raise ScenarioError(exc.file, exc.key, msg) from None


def check_variant(spec: str | None, flag: str = "--variant") -> None:
    """``--variant a+b``: every name a variant of the reference server (ScenarioError: bad input, exit 2)."""
    if spec is None:
        return
    try:
        from reference_impl.config import VARIANTS
    except ImportError:  # pragma: no cover - no reference server in this build: nothing to check against
        return
    known = sorted(VARIANTS)
    names = [v for v in spec.split("+")]
    if not spec or any(not v for v in names):
        raise ScenarioError(flag, "", f"expected variant names joined by '+', got {spec!r}")
    for v in names:
        if v != DEFAULT_VARIANT and v not in known:
            close = difflib.get_close_matches(v, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ScenarioError(
                flag, "", f"unknown variant {v!r}; {hint}allowed: {DEFAULT_VARIANT}, {', '.join(known)}"
            )


def with_policy(sc: Scenario, *, strict: bool = False, fail_on_unknown: bool = False) -> Scenario:
    """The scenario with ``--strict`` / ``--fail-on-unknown`` folded into its ``[checks]``: the run folder's
    scenario.json then carries the policy, and every later reader (check, report, junit) judges alike."""
    if not (strict or fail_on_unknown):
        return sc
    checks = dataclasses.replace(
        sc.checks, strict=sc.checks.strict or strict, fail_on_unknown=sc.checks.fail_on_unknown or fail_on_unknown
    )
    return dataclasses.replace(sc, checks=checks)


def expand(sc: Scenario, variant_override: str | None = None) -> list[tuple[Scenario, str]]:
    """(scenario, run folder name) per run: ``target.compare`` gives one run per variant."""
    if variant_override is not None:
        return [(sc, sc.name)]
    runs = expand_variants(sc)
    expanded = len(runs) > 1 or bool(sc.target.compare)
    return [(r, run_dir_name(r, expanded)) for r in runs]


def run_suite(
    paths: Sequence[Path],
    out_dir: Path,
    *,
    variant: str | None = None,
    seed: int | None = None,
    on_start: Callable[[str, int], None] | None = None,
    on_progress: Progress | None = None,
    on_done: Callable[[RunResult], None] | None = None,
    mode: str = "live",
    sim_options: Mapping[str, Any] | None = None,
    target: Mapping[str, Any] | None = None,
    target_args: Sequence[str] = (),
    tokenizer: str | None = None,
    live_options: Mapping[str, Any] | None = None,
    strict: bool = False,
    fail_on_unknown: bool = False,
    report: bool = True,
    on_phase: Callable[[str, str], None] | None = None,
) -> list[RunResult]:
    """Run every scenario (each variant of a ``compare`` list), then build the suite report.

    ``mode="sim"`` uses ``harness.sim.runner.run_scenario``, which takes the same
    arguments as the live ``run_scenario`` and writes the same run folder;
    ``sim_options`` (strategy, depth, target) go to it as keyword arguments.
    ``target`` replaces every scenario's ``[target]`` table (``--server-cmd``, ``--url``;
    live only), ``target_args`` are those flags, for the replay line. ``tokenizer`` (a shipped name or a folder)
    replaces every scenario's target tokenizer. ``strict`` / ``fail_on_unknown`` are folded into every
    scenario's ``[checks]`` (:func:`with_policy`). ``report=False`` skips the reports (verdicts are
    still written and judged). ``on_phase(run, phase)`` hears "checking", "reporting" per run and
    ("", "suite report") at the end.
    """
    scenarios = []
    for p in paths:  # validate everything first
        sc = load_for_target(p, target).with_tokenizer(tokenizer)
        scenarios.append(with_policy(sc, strict=strict, fail_on_unknown=fail_on_unknown))
    runner: Callable[..., RunResult] = run_scenario
    if mode == "sim":
        runner = importlib.import_module("harness.sim.runner").run_scenario
    for sc in scenarios:  # and every run folder: nothing starts when one of them may not be written
        for _one, name in expand(sc, variant):
            check_run_dir(Path(out_dir), name)
    results = []
    for sc in scenarios:
        for one, name in expand(sc, variant):
            if on_start is not None:
                on_start(name, one.workload.sessions)
            extra = dict(sim_options or {}) if mode == "sim" else dict(live_options or {})
            if target_args and mode != "sim":
                extra["target_args"] = list(target_args)
            if on_phase is not None:
                extra["on_phase"] = lambda phase, name=name: on_phase(name, phase)
            r = runner(one, out_dir, variant, seed, run_name=name, progress=on_progress, report=report, **extra)
            results.append(r)
            if on_done is not None:
                on_done(r)
    if not report:
        return results
    try:
        from harness.report import build_suite_report
    except ImportError:
        return results
    if on_phase is not None:
        on_phase("", "suite report")
    try:
        build_suite_report(out_dir)
    except Exception as exc:
        if results:
            results[-1].notes.append(f"suite report failed: {type(exc).__name__}: {exc}")
    return results
