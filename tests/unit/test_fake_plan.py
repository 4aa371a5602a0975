"""Fault plans: parsing, validation errors that name file + key + allowed, header syntax, rule matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.fake_sglang import FAULTS, PlanError, load_plan, parse_fault_header, plan_from_text
from harness.fake_sglang.plan import IntMatch

ROOT = Path(__file__).resolve().parents[2]


def test_example_plan_loads() -> None:
    p = load_plan(ROOT / "scenarios" / "plans" / "example_faults.toml")
    assert p.latency.model == "lognormal" and p.latency.spike_probability == 0.01
    assert p.generation.tool_call_probability == 0.2
    assert [r.name for r in p.rules][:2] == ["weight-update-abort", "overload"]
    assert p.rules[0].fault.name == "abort" and p.rules[0].fault.params == {"fraction": 0.4}
    d = p.describe()
    assert d["rules"][3]["turn"] == {"min": 5, "max": 7}


def test_empty_plan_is_default() -> None:
    p = plan_from_text("", "<t>")
    assert p.rules == () and p.latency.model == "none"


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ('[[rules]]\nfault = "explode"', "rules[0].fault", "allowed: none, abort"),
        ("[[rules]]\nturn = 1", "rules[0].fault", "required"),
        ('[[rules]]\nfault = "abort"\nbogus = 1', "rules[0].bogus", "allowed: name, fault"),
        ('[[rules]]\nfault = "abort"\nparams = { fraction = 1.5 }', "rules[0].fault.fraction", "[0, 1]"),
        ('[[rules]]\nfault = "abort"\nparams = { speed = 1 }', "rules[0].fault.speed", "allowed: fraction, tokens"),
        ('[[rules]]\nfault = "abort"\nparams = { tokens = "x" }', "rules[0].fault.tokens", "expected int"),
        ('[[rules]]\nfault = "hang"\nparams = { seconds = 9999 }', "rules[0].fault.seconds", "at most 600"),
        ('[[rules]]\nfault = "abort"\nprobability = 2', "rules[0].probability", "[0, 1]"),
        ('[[rules]]\nfault = "abort"\nturn = "two"', "rules[0].turn", "non-negative integer"),
        ('[[rules]]\nfault = "abort"\nturn = { low = 1 }', "rules[0].turn.low", "allowed: min, max"),
        ('[[rules]]\nfault = "abort"\nsession = 3', "rules[0].session", "glob"),
        ('[[rules]]\nfault = "abort"\npaths = ["/x"]', "rules[0].paths", "/v1/chat/completions"),
        ('[latency]\nmodel = "gamma"', "latency.model", "allowed: none, fixed, uniform, lognormal, per_token"),
        ('[latency]\nmodel = "fixed"\nmedian_ms = 3', "latency.median_ms", "allowed: model, spikes, ms"),
        ('[latency]\nmodel = "fixed"\nms = -1', "latency.ms", "non-negative"),
        ('[latency]\nmodel = "uniform"\nmin_ms = 5\nmax_ms = 1', "latency.min_ms", "<="),
        ('[latency]\nmodel = "lognormal"\nmedian_ms = 50\np99_ms = 10', "latency.p99_ms", "median_ms <= p99_ms"),
        ("[latency.spikes]\nprobability = 3", "latency.spikes.probability", "[0, 1]"),
        ("[generation]\nmin_words = 9\nmax_words = 2", "generation.min_words", "<="),
        ("[generation]\ncolour = 1", "generation.colour", "allowed: min_words"),
        ("[generation]\ntool_call_probability = 1.5", "generation.tool_call_probability", "[0, 1]"),
        ("[surprise]\nx = 1", "surprise", "allowed: latency, generation, rules"),
        ("rules = 5", "rules", "array of tables"),
    ],
)
def test_plan_errors_name_file_key_and_allowed(tmp_path: Path, text: str, key: str, hint: str) -> None:
    f = tmp_path / "plan.toml"
    f.write_text(text)
    with pytest.raises(PlanError) as ei:
        load_plan(f)
    msg = str(ei.value)
    assert msg.startswith(str(f)), msg
    assert repr(key) in msg, msg
    assert hint in msg, msg


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[[rules]\nfault=")
    with pytest.raises(PlanError, match=r"bad\.toml: not valid TOML"):
        load_plan(f)
    with pytest.raises(PlanError, match="cannot read the plan file"):
        load_plan(tmp_path / "missing.toml")


def test_json_plan(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"rules": [{"fault": "http_429", "attempt": [0, 1]}]}')
    p = load_plan(f)
    assert p.rules[0].fault.status == 429 and p.rules[0].attempt == IntMatch(values=frozenset({0, 1}))


def test_fault_header_syntax() -> None:
    f = parse_fault_header("slow_drip; seconds=2.5 ;chunks=4")
    assert f.name == "slow_drip" and f.params == {"seconds": 2.5, "chunks": 4}
    assert f.get("seconds") == 2.5 and parse_fault_header("slow_drip").get("chunks") == 20
    assert parse_fault_header("HTTP_418").status == 418
    assert parse_fault_header("http_500;message=engine on fire").params == {"message": "engine on fire"}
    assert f.to_json() == "slow_drip;chunks=4;seconds=2.5"
    for bad, why in [("abort;fraction", "not key=value"), ("http_200", "unknown fault"), ("x", "allowed")]:
        with pytest.raises(PlanError, match=why) as ei:
            parse_fault_header(bad)
        assert str(ei.value).startswith("header x-fake-fault")


def test_every_documented_fault_is_in_the_docs() -> None:
    doc = (ROOT / "docs" / "fake_sglang.md").read_text()
    for name in FAULTS:
        assert f"`{name}`" in doc, name


def test_rule_matching() -> None:
    p = plan_from_text(
        """
[[rules]]
fault = "abort"
session = ["a*", "b"]
turn = [1, 3]
attempt = { max = 1 }
global_ordinal = { min = 2 }
""",
        "<t>",
    )
    r = p.rules[0]
    ok = {"session": "abc", "turn": 3, "attempt": 1, "ordinal": 0, "global_ordinal": 2, "path": "/generate"}
    assert r.matches(**ok)  # type: ignore[arg-type]
    for k, v in [("session", "c"), ("turn", 2), ("attempt", 2), ("global_ordinal", 1)]:
        assert not r.matches(**{**ok, k: v})  # type: ignore[arg-type]
