"""``harness tokenizer check``: exit 0 TITO holds, 1 it does not (with a diff), 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as harness_main
from harness.tokenizer import SHIPPED, load_tokenizer
from harness.tokenizer.check import check_tokenizer
from tests.unit.tokenizer_dirs import NUMBERED_TURNS, REASONING_STYLE, tokenizer_dir


@pytest.mark.parametrize("family", SHIPPED)
def test_every_shipped_family_passes(family: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert harness_main(["tokenizer", "check", family]) == 0
    out = capsys.readouterr().out
    assert "verdict: TITO will hold" in out and f"tokenizer {family}" in out


def test_what_the_check_reports_per_family() -> None:
    by = {f: check_tokenizer(load_tokenizer(f), f) for f in SHIPPED}
    assert [by[f].trail for f in SHIPPED] == ["\n", "\n", "\n", "", "\n\n"]
    assert by["trail"].trail_tokens == 2
    assert by["headers"].end_of_turn == "<|eot|>" and not by["headers"].end_of_turn_is_eos
    assert by["chatml"].end_of_turn == "<|im_end|>" and by["chatml"].end_of_turn_is_eos
    rows = {r.role: r for r in by["reasoning"].roles}
    assert rows["user"].append_only is False and rows["user"].reproduces is False  # the think block is dropped
    assert rows["tool"].append_only is True and rows["tool"].reproduces is True
    assert any("re-render" in n for n in by["reasoning"].notes)
    for f in ("chatml", "tools", "headers", "trail"):
        assert all(r.follows and r.append_only and r.reproduces for r in by[f].roles), f


def test_a_local_reasoning_style_dir_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tokenizer_dir(tmp_path / "mine", REASONING_STYLE)
    assert harness_main(["tokenizer", "check", str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "holds" and out["end_of_turn"] == "<|im_end|>" and out["trail"] == "\n"
    assert {r["role"]: r["append_only"] for r in out["roles"]}["user"] is False


def test_an_unservable_template_fails_with_a_minimal_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tokenizer_dir(tmp_path / "numbered", NUMBERED_TURNS)
    assert harness_main(["tokenizer", "check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "verdict: TITO will NOT hold" in out
    # the shortest probe that shows it: the stand-in prefix has fewer messages than this history
    assert "after [user, assistant+tool_call, tool, assistant], appending user" in out
    assert "-<|im_start|>user 4" in out and "+<|im_start|>user 2" in out


def test_roles_the_template_refuses_are_reported_not_failed(tmp_path: Path) -> None:
    no_tools = (
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'tool' -%}{{ raise_exception('no tool role here') }}{%- endif -%}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') }}"
        "{%- for tc in m.get('tool_calls') or [] -%}{{ ' ' + tc['function']['arguments'] }}{%- endfor -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )
    res = check_tokenizer(load_tokenizer(tokenizer_dir(tmp_path / "no-tools", no_tools)), "no-tools")
    rows = {r.role: r for r in res.roles}
    assert not rows["tool"].follows and "no tool role here" in rows["tool"].error
    assert rows["user"].follows and rows["user"].append_only
    assert res.verdict == "holds", res.text()


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tokenizer_dir(tmp_path / "plain", None)
    assert harness_main(["tokenizer", "check", str(d)]) == 2
    assert "no chat template" in capsys.readouterr().err
    assert harness_main(["tokenizer", "check", "no-such-family"]) == 2
    assert "not a shipped tokenizer name" in capsys.readouterr().err
    assert harness_main(["tokenizer"]) == 2
    assert harness_main(["tokenizer", "--help"]) == 0
