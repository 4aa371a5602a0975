"""Scenario validation against careless and hostile files (issue 13): bad input, never a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario import MAX_TURNS, ScenarioError, load_scenario


def error(tmp_path: Path, text: str | bytes) -> ScenarioError:
    p = tmp_path / "s.toml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    assert str(p) in str(ei.value)
    return ei.value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[chaos]\ndelete_during_proxy = nan\n", "chaos.delete_during_proxy"),
        ("[workload]\narrival_rate = inf\n", "workload.arrival_rate"),
        ("[workload]\nthink_time_s = [0.0, -inf]\n", "workload.think_time_s[1]"),
        ("[backend]\nlatency = { model = 'uniform', min_ms = 1, max_ms = nan }\n", "backend.latency.max_ms"),
        ("[[backend.rules]]\nfault = 'abort'\nprobability = nan\n", "backend.rules[0].probability"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    e = error(tmp_path, text)
    assert e.key == key
    assert "finite" in e.message


def test_huge_turn_count_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    e = error(tmp_path, "[workload]\nturns = 100000000\n")
    assert e.key == "workload.turns"
    assert f"<= {MAX_TURNS}" in e.message


def test_numbers_without_their_own_bound_still_have_one(tmp_path: Path) -> None:
    e = error(tmp_path, "[agent]\ntimeout_retries = 10000000000\n")
    assert e.key == "agent.timeout_retries"
    assert "<=" in e.message


def test_invalid_utf8_is_bad_input_with_line(tmp_path: Path) -> None:
    e = error(tmp_path, b'name = "ok"\ndescription = "caf\xe9"\n')
    assert "UTF-8" in e.message and "line 2" in e.message


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "a\\\\b", "x@y", "a+b", "caf\u00e9"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    e = error(tmp_path, f'name = "{name}"\n')
    assert e.key == "name"


def test_a_safe_dotted_name_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('name = "v1.2_abort-retry"\n')
    assert load_scenario(p).name == "v1.2_abort-retry"
