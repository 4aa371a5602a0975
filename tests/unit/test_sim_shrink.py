"""Shrinking: a known-bad variant's failure reduces to a small scenario file that still fails the same way."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness.scenario import load_scenario, parse_scenario
from harness.sim.explore import run_seed
from harness.sim.runner import run_sim, with_seed
from harness.sim.shrink import ShrinkResult, dump_toml, shrink, write_found

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.mark.parametrize(
    ("name", "variant", "checker"),
    [
        ("delete_during_proxy", "no_closing_recheck", "no_resurrection"),
        ("duplicate_inflight_retry", "no_num_assistant_guard", "stale_writers"),
    ],
)
def test_failure_shrinks_and_the_found_file_still_fails(tmp_path: Path, name: str, variant: str, checker: str) -> None:
    path = SCENARIOS / f"{name}.toml"
    original = load_scenario(path)

    def fails(s: int) -> bool:
        return checker in [v["checker"] for v in run_seed(with_seed(original, s, variant), s, "random").invalid]

    seed = next(s for s in range(5) if fails(s))
    res = shrink(tomllib.loads(path.read_text()), str(path), seed, "random", checker=checker, variant=variant)
    assert res.removed, "something can always be removed from a library scenario"
    shrunk = parse_scenario(res.data, "shrunk")
    assert shrunk.workload.sessions < original.workload.sessions
    found = write_found(res, str(path), tmp_path / "found")
    assert found.name == f"{name}-{res.seed}.toml"
    text = found.read_text()
    assert text.startswith("# Found by `harness explore`")
    for needle in (str(path), f"seed: {res.seed}", "strategy: random", f"checker: {checker}", "--mode sim"):
        assert needle in text
    sc = load_scenario(found)  # a valid scenario file
    assert sc.target.variants == (variant,)
    r = run_sim(sc, tmp_path / "runs", res.seed, "random", report=False)
    assert checker in [v["checker"] for v in r.run.verdicts if v["status"] == "invalid"]


def test_shrunk_file_fails_through_harness_run(tmp_path: Path) -> None:
    from harness.runner.cli import main

    path = SCENARIOS / "delete_during_proxy.toml"
    res = shrink(
        tomllib.loads(path.read_text()), str(path), 0, "random", checker="no_resurrection", variant="auto_create"
    )
    found = write_found(res, str(path), tmp_path)
    argv = [str(found), "--mode", "sim", "--seed", str(res.seed), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 1
    verdicts = json.loads(next((tmp_path / "out").glob("*/verdicts.json")).read_text())
    assert any(v["checker"] == "no_resurrection" and v["status"] == "invalid" for v in verdicts)


def test_nothing_to_shrink_is_a_clear_error() -> None:
    path = SCENARIOS / "abort_retries_exhausted.toml"
    with pytest.raises(ValueError, match="does not fail"):
        shrink(tomllib.loads(path.read_text()), str(path), 0, "random", checker="no_resurrection")


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.toml")))
def test_dump_toml_round_trips_every_library_scenario(name: str) -> None:
    raw = tomllib.loads((SCENARIOS / f"{name}.toml").read_text())
    again = tomllib.loads(dump_toml(raw))
    assert again == raw
    parse_scenario(again, str(SCENARIOS / f"{name}.toml"))  # its relative paths are beside the file


FOUND = sorted((SCENARIOS / "found").glob("*.toml"))


@pytest.mark.parametrize("path", FOUND, ids=[p.stem for p in FOUND])
def test_committed_found_scenarios_still_fail_as_their_header_says(path: Path, tmp_path: Path) -> None:
    header = path.read_text()
    seed = int(re.search(r"^# seed: (\d+)", header, re.M).group(1))  # type: ignore[union-attr]
    strategy = re.search(r"strategy: (\w+)", header).group(1)  # type: ignore[union-attr]
    checker = re.search(r"^# checker: (\w+):", header, re.M).group(1)  # type: ignore[union-attr]
    r = run_sim(load_scenario(path), tmp_path, seed, strategy, report=False)
    assert checker in [v["checker"] for v in r.run.verdicts if v["status"] == "invalid"]


def test_agent_template_kwargs_and_fuzz_are_kept_valid_and_can_be_shrunk() -> None:
    from harness.sim.shrink import _candidates

    raw = tomllib.loads((SCENARIOS / "template_kwargs.toml").read_text())
    raw["agent"]["chat_template_kwargs"]["custom_flag"] = "x"
    raw["workload"]["fuzz"] = 6
    cands = {what: data for what, data, _ in _candidates(raw, "random", 3)}
    gone = cands["agent.chat_template_kwargs removed"]
    assert "chat_template_kwargs" not in gone["agent"] and "template_kwargs_probability" not in gone["agent"]
    assert parse_scenario(gone, "shrunk").agent.chat_template_kwargs == {}
    one = parse_scenario(cands["agent.chat_template_kwargs.custom_flag removed"], "shrunk").agent
    assert dict(one.chat_template_kwargs) == {"enable_thinking": False}
    always = parse_scenario(cands["agent.template_kwargs_probability 0.5 -> 1 (every chat sends them)"], "s").agent
    assert always.template_kwargs_probability == 1.0 and always.chat_template_kwargs["enable_thinking"] is False
    assert {"workload.fuzz 6 -> 0", "workload.fuzz 6 -> 3"} <= set(cands)
    for what, data in cands.items():  # every candidate is a valid scenario and survives the file round trip
        assert tomllib.loads(dump_toml(data)) == data, what
        parse_scenario(data, what)
    # a shrunk scenario that kept the kwargs writes them back as the agent sends them
    kept = parse_scenario(tomllib.loads(dump_toml(raw)), "kept").agent
    assert dict(kept.chat_template_kwargs) == {"enable_thinking": False, "custom_flag": "x"}
    assert kept.template_kwargs_probability == 0.5


def test_a_found_file_names_its_tokenizer_folder_from_where_it_is_written(tmp_path: Path, monkeypatch: Any) -> None:
    """strict_tool_template names its tokenizer folder relative to scenarios/; the found file goes elsewhere
    (scenarios/found/ or any --found-dir) and must still parse to the same folder, from any working directory."""
    src = SCENARIOS / "strict_tool_template.toml"
    raw = tomllib.loads(src.read_text())
    res = ShrinkResult(raw, seed=3, strategy="random", depth=0, checker="refused_legal", message="m", runs=1)
    found = write_found(res, str(src), tmp_path / "deep" / "found")
    written = tomllib.loads(found.read_text())["target"]["tokenizer"]
    assert not Path(written).is_absolute()
    monkeypatch.chdir(tmp_path)
    again = load_scenario(found)
    assert again.target.tokenizer is not None
    assert Path(again.target.tokenizer).resolve() == (SCENARIOS / "tokenizers" / "strict_tools").resolve()
    assert load_scenario(src).target.tokenizer == again.target.tokenizer
