"""harness.mutate: generation (stable ids, annotations skipped), the equivalent list, and the driver.

The driver tests run the real kill test (forked children, copied trees) on one
cheap scenario: a mutant that breaks the checkpoint count is killed by the
checkers, the repository's files are untouched, a mutant listed as equivalent
is never run, and a child that outlives its timeout is killed and reported as
``timeout``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from harness.mutate import (
    EquivalentError,
    Mutant,
    MutantResult,
    MutationConfig,
    enumerate_positions,
    library_cases,
    load_equivalents,
    materialize,
    run_mutation,
    write_report,
)
from harness.mutate._driver import ROOT, _context, _Job, _judge_sim, _run_jobs, _stop_forkserver

MODULE = "reference_impl/sessions.py"
CHEAP = ["abort_retries_exhausted"]

_SRC = """from __future__ import annotations


def f(x: int | None, y: list[int]) -> int | str:
    z: int | None = None
    if x is None:
        return y[0] + 1
    return x - 2
"""


def _tree(tmp_path: Path, source: str) -> Path:
    (tmp_path / "reference_impl").mkdir(parents=True)
    (tmp_path / "reference_impl" / "m.py").write_text(source)
    return tmp_path


def test_annotation_mutations_are_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path, _SRC)
    positions, skipped = enumerate_positions(root, ["reference_impl/m.py"])
    assert skipped > 0
    mutants = materialize(root, positions)
    assert mutants
    for m in mutants:
        assert "def f(x: int | None, y: list[int]) -> int | str:" in m.source
        assert "z: int | None = None" in m.source
    assert any(m.after == "return y[0] - 1" for m in mutants)


def test_ids_survive_a_line_shift(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", _SRC)
    b = _tree(tmp_path / "b", _SRC.replace("\n\ndef f", "\nimport os  # unrelated edit above\n\n\ndef f"))
    ids_a = {m.id: m.position.line for m in materialize(a, enumerate_positions(a, ["reference_impl/m.py"])[0])}
    ms_b = materialize(b, enumerate_positions(b, ["reference_impl/m.py"])[0])
    ids_b = {m.id: m.position.line for m in ms_b if "import os" not in m.before}
    assert set(ids_a) == set(ids_b)
    assert all(ids_b[k] == v + 2 for k, v in ids_a.items())


def test_equivalent_list_is_validated(tmp_path: Path) -> None:
    f = tmp_path / "eq.toml"
    f.write_text('[[mutant]]\nmodule = "reference_impl/app.py"\nid = "abc"\n')
    with pytest.raises(EquivalentError, match="'reason' is required"):
        load_equivalents(f)
    f.write_text('[[mutant]]\nmodule = "m"\nid = "abc"\nreason = "r"\ncolour = "x"\n')
    with pytest.raises(EquivalentError, match="unknown key"):
        load_equivalents(f)
    f.write_text('[[mutant]]\nmodule = "m"\nid = "abc"\nreason = "why"\n')
    assert load_equivalents(f)[("m", "abc")].reason == "why"


def test_the_shipped_equivalent_list_loads() -> None:
    for (module, _), eq in load_equivalents().items():
        assert (ROOT / module).is_file(), module
        assert len(eq.reason) > 20, "say why no client could observe it"


def test_a_case_can_run_a_scenario_under_another_tokenizer_family() -> None:
    plain, fam = library_cases(ROOT, ["abort_retries_exhausted", "abort_retries_exhausted:reasoning"], [0])
    assert plain.tokenizer is None and fam.tokenizer == "reasoning"
    assert fam.label == "abort_retries_exhausted:reasoning#0" != plain.label
    for bad in ("abort_retries_exhausted:nosuchfamily", "abort_retries_exhausted:/tmp", "nosuchscenario:chatml"):
        with pytest.raises(ValueError):
            library_cases(ROOT, [bad], [0])


FUNCTION = "Session.apply"  # commits a checkpoint: every later turn's state depends on it


def _apply_mutants() -> dict[str, Mutant]:
    """Two mutants of Session.apply picked by what they change (not by line or occurrence)."""
    ms = materialize(ROOT, [p for p in enumerate_positions(ROOT, [MODULE])[0] if p.function == FUNCTION])
    killable = [m for m in ms if m.after == "self.num_assistant = base_assistant - 1"]
    other = [m for m in ms if m.operator == "core/NumberReplacer"]
    assert killable and other, f"{MODULE} {FUNCTION} changed: pick other mutants for this test"
    return {"killable": killable[0], "other": other[0]}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((root / "reference_impl").rglob("*.py")):
        h.update(p.name.encode() + p.read_bytes() + str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


@pytest.mark.slow
@pytest.mark.integration
def test_driver_kills_isolates_and_skips_equivalents(tmp_path: Path) -> None:
    ms = _apply_mutants()
    eq = tmp_path / "equivalent.toml"
    eq.write_text(f'[[mutant]]\nmodule = "{MODULE}"\nid = "{ms["other"].id}"\nreason = "listed by this test"\n')
    before = _digest(ROOT)
    cfg = MutationConfig(
        modules=[MODULE],
        functions=[FUNCTION],
        ids=[m.id for m in ms.values()],
        seeds=[0],
        scenarios=CHEAP,
        equivalent_file=eq,
    )
    run = run_mutation(cfg)
    assert _digest(ROOT) == before, "the repository's reference_impl/ was modified"
    by_id = {r.mutant.id: r for r in run.results}
    killed = by_id[ms["killable"].id]
    assert killed.status == "killed", killed.to_dict()
    assert killed.killed_by is not None and killed.killed_by["scenario"] == CHEAP[0]
    assert killed.killed_by["checkers"], killed.killed_by
    assert killed.seconds_to_kill is not None and killed.cases_run == 1
    skipped = by_id[ms["other"].id]
    assert skipped.status == "equivalent" and skipped.cases_run == 0 and skipped.reason == "listed by this test"
    assert run.score == 1.0
    s = write_report(run, tmp_path / "out", ROOT)
    assert s["counts"] == {"killed": 1, "equivalent": 1}
    assert (tmp_path / "out" / "mutants" / f"{ms['killable'].id}.diff").read_text().startswith("--- a/")
    assert "Score: 100.0%" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.integration
def test_a_child_past_its_timeout_is_killed_and_reported(tmp_path: Path) -> None:
    base = _apply_mutants()["killable"]
    # a hand-made "mutant" that never finishes importing: the timeout path, deterministically
    hang = dataclasses.replace(base, id="hang", source=base.source + "\nwhile True:\n    pass\n")
    job = _Job("hang", hang, tmp_path / "hang", library_cases(ROOT, CHEAP, [0]), True, timeout_s=2.0)
    seen: list[tuple[bool, float]] = []
    result = MutantResult(hang, "not_run")

    def done(j: _Job, events: list[dict[str, Any]], timed_out: bool, elapsed: float) -> None:
        seen.append((timed_out, elapsed))
        _judge_sim(result, events, timed_out)

    try:
        left = _run_jobs(_context(), ROOT, [job], 1, None, done)
    finally:
        _stop_forkserver()
    assert left == [] and len(seen) == 1
    timed_out, elapsed = seen[0]
    assert timed_out and elapsed >= 2.0
    assert not job.proc.is_alive()
    assert result.status == "timeout" and result.reason == "before the first case", result.to_dict()
    assert not (tmp_path / "hang").exists(), "the mutant's temp tree was left behind"


def _string_whose_hash_parity_differs() -> str:
    """A str whose hash is even under PYTHONHASHSEED=0 and odd under 1 (str hashes follow the seed)."""
    import os
    import subprocess
    import sys

    code = "import sys\nfor i in range(64): print(hash(f'probe-{i}') % 2)"
    parity = {}
    for seed in ("0", "1"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        parity[seed] = out.stdout.split()
    for i in range(64):
        if parity["0"][i] == "0" and parity["1"][i] == "1":
            return f"probe-{i}"
    raise AssertionError("no probe string with even hash under seed 0 and odd under seed 1")


@pytest.mark.slow
@pytest.mark.integration
def test_a_mutant_that_follows_the_hash_seed_is_judged_per_seed(tmp_path: Path, monkeypatch: Any) -> None:
    """Kill-test children run under a fixed PYTHONHASHSEED (reproducible); a later seed re-runs the survivors.

    The hand-made mutant crashes at import only where hash(probe) is odd, as a real mutant that picks the
    first element of a set of strings behaves differently in different processes.
    """
    import harness.mutate._driver as driver

    probe = _string_whose_hash_parity_differs()
    original = (ROOT / MODULE).read_text(encoding="utf-8")
    base = _apply_mutants()["killable"]
    hashdep = dataclasses.replace(
        base, id="hashdep", source=original + f"\nif hash({probe!r}) % 2:\n    raise RuntimeError('odd')\n"
    )
    monkeypatch.setattr(driver, "select_mutants", lambda cfg: ([hashdep], 1, 0, 0))
    eq = tmp_path / "equivalent.toml"
    eq.write_text("")
    cfg = MutationConfig(modules=[MODULE], seeds=[0], scenarios=CHEAP, equivalent_file=eq)
    once = run_mutation(dataclasses.replace(cfg, hash_seeds=(0,)))
    assert [r.status for r in once.results] == ["survived"], once.results[0].to_dict()
    twice = run_mutation(dataclasses.replace(cfg, hash_seeds=(0, 1)))
    r = twice.results[0]
    assert r.status == "killed", r.to_dict()
    assert r.killed_by is not None and r.killed_by["hash_seed"] == 1 and "odd" in str(r.killed_by["error"])
    s = write_report(twice, tmp_path / "out", ROOT)
    assert s["hash_seeds"] == [0, 1]


def test_out_of_contract_survivors_get_a_second_score_and_a_kill_of_one_is_named(tmp_path: Path) -> None:
    """A listed survivor still counts in the score; the second figure leaves it out; a listed kill is named."""
    from harness.mutate import MutationRun

    ms = materialize(ROOT, [p for p in enumerate_positions(ROOT, [MODULE])[0] if p.function == FUNCTION])[:4]
    assert len(ms) == 4
    results = [
        MutantResult(ms[0], "killed", stage="sim", killed_by={"case": "c#0", "scenario": "c", "checkers": ["x"]}),
        MutantResult(ms[1], "survived", contract="only a message's words"),
        MutantResult(ms[2], "survived"),
        MutantResult(ms[3], "killed", stage="sim", killed_by={"case": "c#0", "scenario": "c", "checkers": ["y"]}),
    ]
    results[3].contract = "listed, yet killed"
    run = MutationRun(MutationConfig(modules=[MODULE]), 4, 0, 0, results, [], {}, {}, 60.0, 1.0)
    assert run.score == 0.5 and run.score_in_contract == 2 / 3
    s = write_report(run, tmp_path / "out", ROOT)
    assert s["score"] == 0.5 and s["score_in_contract"] == 0.6667
    assert s["out_of_contract"] == {"survived": [ms[1].id], "killed": [ms[3].id]}
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "Within the contract: 66.7%" in md and f"Killed although listed as out of contract: {ms[3].id}" in md
    assert "survived (out of contract)" in md


def test_a_mutant_cannot_be_both_equivalent_and_out_of_contract(tmp_path: Path) -> None:
    eq = tmp_path / "eq.toml"
    oc = tmp_path / "oc.toml"
    for f in (eq, oc):
        f.write_text(f'[[mutant]]\nmodule = "{MODULE}"\nid = "abcdef012345"\nreason = "listed in both files"\n')
    cfg = MutationConfig(modules=[MODULE], seeds=[0], scenarios=CHEAP, equivalent_file=eq, out_of_contract_file=oc)
    with pytest.raises(ValueError, match="also in"):
        run_mutation(cfg)


def test_the_shipped_out_of_contract_list_names_current_mutants() -> None:
    """An entry whose line changed no longer matches a mutant: it must be re-read, not silently kept."""
    from harness.mutate._driver import select_mutants
    from harness.mutate._equivalent import DEFAULT_OUT_OF_CONTRACT_FILE

    listed = load_equivalents(DEFAULT_OUT_OF_CONTRACT_FILE)
    assert listed, "the shipped list is empty"
    assert not set(listed) & set(load_equivalents()), "a mutant in both lists"
    for module in sorted({m for m, _ in listed}):
        ids = [i for m, i in listed if m == module]
        found = select_mutants(MutationConfig(modules=[module], ids=ids))[0]
        assert sorted(m.id for m in found) == sorted(ids)
        for m in found:
            assert listed[(module, m.id)].after == m.after, m.id
