"""Compute the coverage: run the library in simulation, count facets, run the known-bad servers.

Two kinds of measured run, both in simulation (deterministic: the same
inputs give the same document on any machine):

- **exercise runs**: every library scenario (each ``target.compare`` variant
  of it), on the plan's seeds and extra tokenizer families, on the correct
  server; each run's facet counts (harness/coverage/_facets.py) say which
  rules it exercised. ``--from-runs DIR`` adds run folders (live or sim) the
  same way.
- **proof runs**: each entry of proofs.toml, a known-bad server on one
  scenario and seed, next to the correct server on the same scenario and
  seed; the checkers invalid on the first and not on the second are proven,
  with the violation kinds they reported.

A run is one worker job returning only small, picklable facts (facet
counts, per-checker status and kinds), so the jobs split over processes.
"""

from __future__ import annotations

import copy
import tomllib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.coverage._facets import FACETS, count_facets
from harness.rundata import RunData

__all__ = [
    "PROOFS_FILE",
    "RULES_FILE",
    "Coverage",
    "CoverageError",
    "Plan",
    "Proof",
    "Rule",
    "RunFacts",
    "compute",
    "load_plan",
    "load_proofs",
    "load_rules",
]

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "rules.toml"
PROOFS_FILE = HERE / "proofs.toml"
BUGS_MODULE = "harness.coverage._bugs"


class CoverageError(ValueError):
    """Bad input: a rules/proofs file that names an unknown facet, checker, scenario or bug."""


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    section: str
    text: str
    facets: tuple[str, ...]
    checkers: dict[str, tuple[str, ...]]
    gap: str | None = None  # a reviewed, known gap: what is missing and how to close it
    extra: bool = False  # the contract of one of our own extras (docs/reference_server.md), not a CONTEXT.md promise


@dataclass(frozen=True)
class Proof:
    scenario: str
    seed: int
    variant: str | None = None
    bug: str | None = None
    judged_as_default: bool = False
    tokenizer: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # dotted scenario keys, as `harness run --set`

    @property
    def label(self) -> str:
        what = f"variant {self.variant}" if self.variant else f"bug {self.bug}"
        if self.judged_as_default:
            what += " (judged as the default design)"
        return what

    @property
    def where(self) -> str:
        tok = f", {self.tokenizer}" if self.tokenizer else ""
        tok += "".join(f", {k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in self.overrides)
        return f"{self.scenario} seed {self.seed}{tok}"


@dataclass(frozen=True)
class Plan:
    seeds: tuple[int, ...]
    skip: dict[str, str]  # scenario name -> why it is not run by default
    tokenizer_runs: tuple[tuple[str, str], ...]  # (scenario, tokenizer family)


def _err(path: Path, where: str, msg: str) -> CoverageError:
    return CoverageError(f"{path}: {where}: {msg}")


def _load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CoverageError(f"{path}: {exc}") from None


def load_rules(path: Path = RULES_FILE) -> list[Rule]:
    from harness.checkers import CHECKERS

    raw = _load(path)
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(raw.get("rule", [])):
        where = f"rule[{i}]"
        for key in ("id", "title", "section", "text"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise _err(path, where, f"{key!r} must be a non-empty string")
        if r["id"] in seen:
            raise _err(path, where, f"id {r['id']!r} used twice")
        seen.add(r["id"])
        facets = r.get("facets")
        if not isinstance(facets, list) or not all(isinstance(f, str) for f in facets):
            raise _err(path, f"{where} ({r['id']})", "'facets' must be a list of facet names")
        bad = [f for f in facets if f not in FACETS]
        if bad:
            raise _err(path, f"{where} ({r['id']})", f"unknown facet(s) {bad}; allowed: {sorted(FACETS)}")
        checkers = r.get("checkers")
        if not isinstance(checkers, dict):
            raise _err(path, f"{where} ({r['id']})", "'checkers' must be a table {checker = [kinds]}")
        unknown = sorted(set(checkers) - set(CHECKERS))
        if unknown:
            raise _err(path, f"{where} ({r['id']})", f"unknown checker(s) {unknown}; allowed: {sorted(CHECKERS)}")
        gap = r.get("gap")
        if gap is not None and not isinstance(gap, str):
            raise _err(path, f"{where} ({r['id']})", "'gap' must be a string (what is missing)")
        extra = r.get("extra", False)
        if not isinstance(extra, bool):
            raise _err(path, f"{where} ({r['id']})", "'extra' must be true or false")
        rules.append(
            Rule(
                id=r["id"],
                title=r["title"].strip(),
                section=r["section"].strip(),
                text=" ".join(r["text"].split()),
                facets=tuple(facets),
                checkers={str(k): tuple(str(x) for x in v) for k, v in checkers.items()},
                gap=gap,
                extra=extra,
            )
        )
    if not rules:
        raise _err(path, "rule", "no [[rule]] entries")
    return rules


def load_plan(path: Path = RULES_FILE) -> Plan:
    raw = _load(path).get("plan", {})
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise _err(path, "plan.seeds", "must be a non-empty list of seeds >= 0")
    skip = raw.get("skip", {})
    if not isinstance(skip, dict) or not all(isinstance(v, str) for v in skip.values()):
        raise _err(path, "plan.skip", 'must be a table {scenario = "why"}')
    runs = []
    for i, t in enumerate(raw.get("tokenizer_runs", [])):
        if not isinstance(t, dict) or not isinstance(t.get("scenario"), str) or not isinstance(t.get("tokenizer"), str):
            raise _err(path, f"plan.tokenizer_runs[{i}]", 'needs scenario = "NAME" and tokenizer = "FAMILY"')
        runs.append((t["scenario"], t["tokenizer"]))
    return Plan(tuple(seeds), dict(skip), tuple(runs))


def load_proofs(path: Path = PROOFS_FILE) -> list[Proof]:
    from harness.coverage._bugs import BUGS
    from reference_impl.config import VARIANTS

    out = []
    for i, p in enumerate(_load(path).get("proof", [])):
        where = f"proof[{i}]"
        variant, bug = p.get("variant"), p.get("bug")
        if (variant is None) == (bug is None):
            raise _err(path, where, 'give exactly one of variant = "NAME" or bug = "NAME"')
        if variant is not None and variant not in VARIANTS:
            raise _err(path, where, f"unknown variant {variant!r}; allowed: {sorted(VARIANTS)}")
        if bug is not None and bug not in BUGS:
            raise _err(path, where, f"unknown bug {bug!r}; allowed: {sorted(BUGS)}")
        if not isinstance(p.get("scenario"), str) or not isinstance(p.get("seed"), int):
            raise _err(path, where, 'needs scenario = "NAME" and seed = N')
        overrides = p.get("overrides", {})
        if not isinstance(overrides, dict):
            raise _err(path, where, 'overrides must be a table of dotted scenario keys, e.g. {"workload.sessions" = 4}')
        out.append(
            Proof(
                scenario=p["scenario"],
                seed=int(p["seed"]),
                variant=variant,
                bug=bug,
                judged_as_default=bool(p.get("judged_as_default", False)),
                tokenizer=p.get("tokenizer"),
                overrides=tuple(sorted(overrides.items())),
            )
        )
    return out


# --- runs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    path: str
    seed: int
    variant: str | None = None  # None: the scenario's own (one compare entry: see compare_entry)
    compare_entry: int | None = None
    tokenizer: str | None = None
    bug: str | None = None
    judged_as_default: bool = False
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass
class RunFacts:
    """What one run contributes: its label, facet counts and per-checker (status, kinds)."""

    label: str
    facets: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    error: str | None = None

    @property
    def invalid(self) -> dict[str, tuple[str, ...]]:
        return {c: k for c, (s, k) in self.verdicts.items() if s == "invalid"}


def _verdicts(data: RunData, names: list[str] | None) -> dict[str, tuple[str, tuple[str, ...]]]:
    from harness.checkers import check_all

    return {v.checker: (v.status, tuple(sorted({x.kind for x in v.violations}))) for v in check_all(data, names)}


def run_job(job: Job) -> RunFacts:
    """One simulated run (strategy random, as ``harness explore``), reduced to its facts."""
    from harness.scenario import expand_variants, load_scenario
    from harness.sim.runner import simulate, with_seed

    sc = load_scenario(job.path, dict(job.overrides) or None).with_tokenizer(job.tokenizer)
    if job.compare_entry is not None:
        sc = expand_variants(sc)[job.compare_entry]
    sc = with_seed(sc, job.seed, job.variant)
    target = f"asgi:{BUGS_MODULE}:{job.bug}" if job.bug else None
    out = simulate(sc, sc.seed, "random", target=target, trace=False)
    label = f"{sc.name}@{sc.variant_label}" if (job.variant or job.compare_entry is not None) else sc.name
    facts = RunFacts(label, error=out.error)
    if out.data is None:
        return facts
    data = out.data
    if job.judged_as_default:
        data = copy.copy(data)
        data.scenario = copy.deepcopy(data.scenario)
        data.scenario["target"]["variants"] = []
    names = None if "all" in sc.checks.enabled else list(sc.checks.enabled)
    facts.verdicts = _verdicts(data, names)
    if job.bug is None and job.variant is None:
        facts.facets = count_facets(data)
    return facts


def facts_of_folder(run_dir: Path) -> RunFacts:
    """A run folder left by ``harness run`` (live or sim): its facets, judged like a simulated run."""
    data = RunData.load(run_dir)
    facts = RunFacts(f"{run_dir.name} (run folder)")
    facts.facets = count_facets(data)
    return facts


def _pool_map(jobs: list[Job], n: int) -> list[RunFacts]:
    if n <= 1 or len(jobs) <= 1:
        return [run_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run_job, jobs))


# --- the whole computation ---------------------------------------------------------------------------


@dataclass
class ProofResult:
    proof: Proof
    bug: RunFacts
    baseline: RunFacts

    @property
    def proven(self) -> dict[str, tuple[str, ...]]:
        """Checkers invalid on the broken server and not invalid on the correct one (with their kinds)."""
        base = self.baseline.invalid
        return {c: k for c, k in self.bug.invalid.items() if c not in base} if self.baseline.error is None else {}


@dataclass
class Coverage:
    rules: list[Rule]
    plan: Plan
    scenarios: list[str]
    runs: list[RunFacts]
    proofs: list[ProofResult]
    from_runs: list[str] = field(default_factory=list)
    mutants: dict[str, list[str]] = field(default_factory=dict)  # checker -> ids of mutants it killed
    mutants_source: str | None = None

    def exercised_by(self, facet: str) -> dict[str, int]:
        """Run label -> count, for every run that hit the facet (one label per scenario x variant)."""
        out: dict[str, int] = {}
        for r in self.runs:
            n = r.facets.get(facet, 0)
            if n:
                out[r.label] = out.get(r.label, 0) + n
        return out

    def rule_scenarios(self, rule: Rule) -> list[str]:
        labels: set[str] = set()
        for f in rule.facets:
            labels |= set(self.exercised_by(f))
        return sorted(labels)

    def proofs_for(self, rule: Rule, checker: str) -> list[ProofResult]:
        kinds = rule.checkers.get(checker, ())
        out = []
        for p in self.proofs:
            got = p.proven.get(checker)
            if got is not None and (not kinds or set(got) & set(kinds)):
                out.append(p)
        return out

    def gaps(self, rule: Rule) -> list[str]:
        """What this rule lacks (empty: exercised, checked and proven)."""
        out = []
        if not rule.checkers:
            out.append("no checker flags its violation")
        missing = [f for f in rule.facets if not self.exercised_by(f)]
        if not rule.facets:
            out.append("no facet says what exercises it")
        if missing:
            out.append(f"not exercised by any measured run: {', '.join(missing)}")
        unproven = [c for c in rule.checkers if not self.proofs_for(rule, c)]
        if unproven:
            out.append(f"no known-bad server proves: {', '.join(unproven)}")
        return out

    def problems(self) -> list[str]:
        """What makes ``--check`` fail besides staleness: a gap not declared in rules.toml, or a declared
        gap that is closed (its ``gap = ...`` must go), or a correct-server run that erred."""
        out = []
        for r in self.rules:
            g = self.gaps(r)
            if g and not r.gap:
                out.append(f"{r.id}: {'; '.join(g)}")
            if r.gap and not g:
                out.append(f"{r.id}: declared a known gap but is now covered: remove its gap = ... from rules.toml")
        out += [f"run error: {e.splitlines()[0]}" for e in self.run_errors]
        return out

    @property
    def run_errors(self) -> list[str]:
        out = [f"{r.label}: {r.error}" for r in self.runs if r.error]
        for p in self.proofs:
            if p.baseline.error:
                out.append(f"{p.baseline.label} (baseline of {p.proof.label}): {p.baseline.error}")
        return out

    def correct_server_invalid(self) -> list[str]:
        """Exercise runs (correct server) that some checker judged invalid: a false alarm or a real bug."""
        return [f"{r.label}: {sorted(r.invalid)}" for r in self.runs if r.invalid and r.facets]


def load_mutants(path: Path) -> dict[str, list[str]]:
    """``harness mutate``'s mutants.jsonl: checker -> the ids of the killed mutants it flagged (sorted)."""
    import json

    out: dict[str, list[str]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CoverageError(f"--mutants {path}: {exc}") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
        except ValueError:
            msg = f"--mutants {path}: line {i + 1} is not JSON (give reports/mutation/mutants.jsonl)"
            raise CoverageError(msg) from None
        if not isinstance(m, dict) or m.get("status") != "killed" or not isinstance(m.get("killed_by"), dict):
            continue
        for c in m["killed_by"].get("checkers") or []:
            out.setdefault(str(c), []).append(str(m.get("id")))
    return {c: sorted(ids) for c, ids in sorted(out.items())}


def library(root: Path) -> list[Path]:
    return sorted(root.glob("*.toml"))


def compute(
    *,
    root: Path,
    rules: list[Rule],
    plan: Plan,
    proofs: list[Proof],
    scenarios: list[str] | None = None,
    seeds: tuple[int, ...] | None = None,
    jobs: int = 1,
    from_runs: list[Path] | None = None,
) -> Coverage:
    """Run the plan (or the named scenarios / seeds) and the proofs; return everything rendered."""
    from harness.scenario import expand_variants, load_scenario

    paths = {p.stem: p for p in library(root)}
    if scenarios is None:
        names = [n for n in paths if n not in plan.skip]
    else:
        bad = [n for n in scenarios if n not in paths]
        if bad:
            raise CoverageError(f"unknown scenario(s) {bad} under {root}; allowed: {sorted(paths)}")
        names = list(scenarios)
    for n, _ in plan.tokenizer_runs:
        if n not in paths:
            raise CoverageError(f"plan.tokenizer_runs names unknown scenario {n!r}; allowed: {sorted(paths)}")
    for p in proofs:
        if p.scenario not in paths:
            raise CoverageError(f"proofs.toml names unknown scenario {p.scenario!r}; allowed: {sorted(paths)}")
    seeds = seeds or plan.seeds
    jobs_ex: list[Job] = []
    for n in names:
        compare = len(expand_variants(load_scenario(paths[n]))) if load_scenario(paths[n]).target.compare else 0
        for s in seeds:
            if compare:
                jobs_ex.extend(Job(str(paths[n]), s, compare_entry=i) for i in range(compare))
            else:
                jobs_ex.append(Job(str(paths[n]), s))
    for n, tok in plan.tokenizer_runs:
        if n in names:  # a --scenarios selection keeps only its own tokenizer runs
            jobs_ex.append(Job(str(paths[n]), seeds[0], tokenizer=tok))
    # the correct server on a proof's scenario and seed: an exercise run when one is that very run
    # (no compare entry, no variant of its own, no overrides), else a run of its own
    plain = {str(paths[n]) for n in names if not load_scenario(paths[n]).target.variants}
    base_of: dict[tuple[str, int, str | None, tuple[tuple[str, Any], ...]], int] = {
        (j.path, j.seed, j.tokenizer, ()): i
        for i, j in enumerate(jobs_ex)
        if j.compare_entry is None and j.path in plain
    }
    jobs_pr: list[Job] = []
    for p in proofs:
        key = (str(paths[p.scenario]), p.seed, p.tokenizer, p.overrides)
        if key not in base_of:
            base_of[key] = len(jobs_ex) + len(jobs_pr)
            jobs_pr.append(Job(key[0], p.seed, variant="default", tokenizer=p.tokenizer, overrides=p.overrides))
    bug_index = {}
    for i, p in enumerate(proofs):
        bug_index[i] = len(jobs_ex) + len(jobs_pr)
        jobs_pr.append(
            Job(
                str(paths[p.scenario]),
                p.seed,
                variant=p.variant if p.variant else "default",
                tokenizer=p.tokenizer,
                bug=p.bug,
                judged_as_default=p.judged_as_default,
                overrides=p.overrides,
            )
        )
    facts = _pool_map(jobs_ex + jobs_pr, jobs)
    runs = facts[: len(jobs_ex)]
    for j, r in zip(jobs_ex, runs, strict=True):
        if j.tokenizer:
            r.label += f" ({j.tokenizer})"
    extra: list[str] = []
    for d in from_runs or []:
        if not (d / "history.jsonl").exists():
            raise CoverageError(f"--from-runs {d}: not a run folder (no history.jsonl)")
        runs.append(facts_of_folder(d))
        extra.append(str(d))
    results = []
    for i, p in enumerate(proofs):
        base = facts[base_of[(str(paths[p.scenario]), p.seed, p.tokenizer, p.overrides)]]
        results.append(ProofResult(p, facts[bug_index[i]], base))
    return Coverage(rules, plan, names, runs, results, extra)
