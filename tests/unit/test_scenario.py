"""Scenario validation: every error names the file, the dotted key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario import ScenarioError, expand_variants, load_scenario, parse_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error(tmp_path: Path, text: str) -> ScenarioError:
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    assert str(p) in str(ei.value)
    return ei.value


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_library_scenarios_validate(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert sc.description.strip(), "every library scenario says what it is for"
    plain = sc.to_plain()
    assert {"variants", "kind", "processes"} <= set(plain["target"])
    assert isinstance(plain["backend"]["faults"], list)
    assert plain["checks"]["enabled"]


def test_minimal_scenario_defaults(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, "", "tiny.toml"))
    assert sc.name == "tiny"
    assert sc.target.kind == "reference" and sc.target.processes == 1
    assert sc.agent.clients == {"httpx": 1.0}
    assert sc.checks.enabled == ("all",)


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    e = error(tmp_path, 'name = "x"\nworkloads = {}\n')
    assert e.key == "workloads"
    assert "did you mean 'workload'" in e.message


def test_unknown_nested_key_dotted_path_and_suggestion(tmp_path: Path) -> None:
    e = error(tmp_path, "[chaos]\ndelete_durng_proxy = 0.2\n")
    assert e.key == "chaos.delete_durng_proxy"
    assert "did you mean 'delete_during_proxy'" in e.message
    assert "allowed here" in e.message


def test_probability_bounds(tmp_path: Path) -> None:
    e = error(tmp_path, "[chaos]\ndisconnect = 1.5\n")
    assert e.key == "chaos.disconnect" and "<= 1" in e.message


def test_wrong_type(tmp_path: Path) -> None:
    e = error(tmp_path, '[workload]\nsessions = "many"\n')
    assert e.key == "workload.sessions" and "integer" in e.message


def test_range_order(tmp_path: Path) -> None:
    e = error(tmp_path, "[workload]\nturns = [5, 2]\n")
    assert e.key == "workload.turns" and "min <= max" in e.message


def test_unknown_client_kind(tmp_path: Path) -> None:
    e = error(tmp_path, '[agent]\nclient = "httpy"\n')
    assert e.key == "agent.client" and "httpx" in e.message


def test_unknown_variant_lists_allowed(tmp_path: Path) -> None:
    e = error(tmp_path, '[target]\nvariants = ["lock_restor"]\n')
    assert e.key == "target.variants" and "lock_restore" in e.message


def test_backend_rule_validated_by_fake_plan(tmp_path: Path) -> None:
    e = error(tmp_path, '[[backend.rules]]\nfault = "abortt"\n')
    assert e.key.startswith("backend.rules[0]")
    assert "abort" in e.message


def test_urls_target_needs_urls_and_cannot_control_processes(tmp_path: Path) -> None:
    e = error(tmp_path, '[target]\nkind = "urls"\n')
    assert e.key == "target.urls"
    # kill_restart loads (the run reports it unknown: the harness did not start those processes)
    text = '[target]\nkind = "urls"\nurls = ["http://127.0.0.1:1"]\n[[chaos.kill_restart]]\nprocess = 0\nat_s = 1\n'
    sc = load_scenario(write(tmp_path, text))
    assert sc.chaos.kill_restart and not sc.target.process_control
    assert sc.to_plain()["target"]["process_control"] is False
    e = error(tmp_path, text.replace("process = 0", "process = 1"))
    assert e.key == "chaos.kill_restart[0].process"


def test_wrong_process_probes_need_two_processes(tmp_path: Path) -> None:
    e = error(tmp_path, "[chaos]\nwrong_process_probes = 0.5\n")
    assert e.key == "chaos.wrong_process_probes" and "processes >= 2" in e.message


def test_bad_toml_names_file(tmp_path: Path) -> None:
    e = error(tmp_path, "name = \n")
    assert "not valid TOML" in e.message


def test_unknown_slo_bucket(tmp_path: Path) -> None:
    e = error(tmp_path, "[slo]\np99_totl_ms = 5\n")
    assert e.key == "slo.p99_totl_ms" and "p99_total_ms" in e.message


def test_unknown_checker(tmp_path: Path) -> None:
    e = error(tmp_path, '[checks]\nenabled = ["lost_turn"]\n')
    assert e.key == "checks.enabled" and "lost_turns" in e.message


def test_overrides_are_validated_too(tmp_path: Path) -> None:
    p = write(tmp_path, "seed = 1\n")
    assert load_scenario(p, {"seed": 9, "workload.sessions": 3}).workload.sessions == 3
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p, {"workload.sesions": 3})
    assert ei.value.key == "workload.sesions"


def test_compare_expands_one_run_per_variant(tmp_path: Path) -> None:
    sc = load_scenario(
        write(tmp_path, '[target]\ncompare = ["default", "lock_restore", "conflict_409+delete_cancel"]\n')
    )
    runs = expand_variants(sc)
    assert [r.variant_label for r in runs] == ["default", "lock_restore", "conflict_409+delete_cancel"]
    assert runs[2].to_plain()["target"]["variants"] == ["conflict_409", "delete_cancel"]


def test_to_plain_lists_fault_classes_from_rules_headers_and_outages() -> None:
    sc = parse_scenario(
        {
            "backend": {"rules": [{"fault": "abort", "probability": 0.1}]},
            "chaos": {"forced_faults": {"reset": 0.1}, "backend_outage": [{"at_s": 1, "duration_s": 1}]},
        },
        "mem.toml",
    )
    assert sc.to_plain()["backend"]["faults"] == ["abort", "http_503", "reset"]


def test_workload_tool_probability_reaches_backend_plan() -> None:
    sc = parse_scenario({"workload": {"tool_call_probability": 0.5}}, "mem.toml")
    assert sc.backend.plan()["generation"]["tool_call_probability"] == 0.5


def test_target_protocol_names_keys_and_checks_strict(tmp_path: Path) -> None:
    sc = load_scenario(
        write(tmp_path, '[target.protocol]\ntoken_ids_key = "accumulated_token_ids"\n\n[checks]\nstrict = true\n')
    )
    assert sc.target.protocol == {"token_ids_key": "accumulated_token_ids"}
    assert sc.checks.strict is True
    plain = sc.to_plain()
    assert plain["target"]["protocol"] == {"token_ids_key": "accumulated_token_ids"}
    assert plain["checks"]["strict"] is True
    assert load_scenario(write(tmp_path, "", "plain.toml")).checks.strict is False
    e = error(tmp_path, '[target.protocol]\ntoken_key = "x"\n')
    assert e.key == "target.protocol.token_key"
    assert "did you mean 'token_ids_key'" in e.message
    e = error(tmp_path, '[target.protocol]\ntoken_ids_key = ""\n')
    assert e.key == "target.protocol.token_ids_key" and "non-empty" in e.message
    e = error(tmp_path, '[checks]\nstrict = "yes"\n')
    assert e.key == "checks.strict"
