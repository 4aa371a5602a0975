"""Suite profiles (scenarios/suites/*.toml): validated like scenarios; the ci profile is big enough to gate p99."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main as harness
from harness.report.compare import default_min_samples
from harness.runner._suite import find_scenarios
from harness.scenario import ScenarioError, load_scenario
from harness.suites import known_suites, load_profile
from harness.workload import plan_sessions

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "scenarios"


def test_the_ci_profile_plans_enough_chats_per_run_to_judge_p99_of_every_bucket() -> None:
    """Each chat turn is at least one chat_done line, i.e. one sample of every server bucket.

    Checked on the seeded plan (no run): the live run measured is in docs/ci.md.
    """
    paths = find_scenarios([], "ci", root=LIBRARY)
    assert paths, "the ci profile lists no scenario"
    need = default_min_samples(99.0)
    for p in paths:
        sc = load_scenario(p)
        turns = sum(s.turns for s in plan_sessions(sc, sc.target.processes))
        assert turns >= 1.2 * need, f"{p.name}: {turns} planned chat turns, p99 needs {need} samples (+20% margin)"
        assert sc.gate.buckets, f"{p.name}: no [gate] buckets"


def test_profiles_are_listed_and_unknown_suites_are_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert known_suites(LIBRARY)[:3] == ["default", "all", "ci"]
    with pytest.raises(ScenarioError, match="did you mean 'ci'"):
        find_scenarios([], "cii", root=LIBRARY)
    assert harness(["run", "--suite", "cii", "--list"]) == 2
    assert "unknown suite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('scenario = ["a"]\n', "scenario", "did you mean 'scenarios'?"),
        ("scenarios = []\n", "scenarios", "non-empty list"),
        ('scenarios = ["ci_gat"]\n', "scenarios", "did you mean 'ci_gate'?"),
        ('scenarios = ["ci_gate", "ci_gate"]\n', "scenarios", "listed twice"),
        ('description = 3\nscenarios = ["ci_gate"]\n', "description", "expected a string"),
        ("scenarios = [\n", "", "not valid TOML"),
    ],
)
def test_bad_profiles_name_file_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as exc:
        load_profile(f, LIBRARY)
    assert exc.value.file == str(f) and exc.value.key == key and fix in exc.value.message


def test_a_profile_of_its_own_library(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('name = "a"\n')
    (tmp_path / "b.toml").write_text('name = "b"\n')
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.toml").write_text('description = "x"\nscenarios = ["b"]\n')
    assert find_scenarios([], "mine", root=tmp_path) == [tmp_path / "b.toml"]
    assert known_suites(tmp_path) == ["default", "all", "mine"]
