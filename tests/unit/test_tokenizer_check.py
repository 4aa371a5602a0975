"""``harness tokenizer check``: exit 0 TITO holds, 1 it does not (with a diff), 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as harness_main
from harness.fake_sglang.generate import Identity, TokenModel
from harness.fake_sglang.plan import GenerationSpec
from harness.tokenizer import SHIPPED, load_tokenizer
from harness.tokenizer.check import check_tokenizer
from reference_impl.tito import SessionView, Tito
from tests.unit.tokenizer_dirs import NUMBERED_TURNS, REASONING_STYLE, tokenizer_dir

SCENARIO_TOKENIZERS = Path(__file__).resolve().parents[2] / "scenarios" / "tokenizers"
# every family the project ships: the built-in names and the scenario library's own tokenizer folders
EVERY_FAMILY = [*SHIPPED, *sorted(str(d) for d in SCENARIO_TOKENIZERS.iterdir() if d.is_dir())]


@pytest.mark.parametrize("family", EVERY_FAMILY, ids=lambda f: Path(f).name)
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


def test_the_scenario_families_turn_ends(capsys: pytest.CaptureFixture[str]) -> None:
    """strict_tools puts a newline before <|im_end|>; channels renders one assistant message as several segments."""
    strict = check_tokenizer(load_tokenizer(SCENARIO_TOKENIZERS / "strict_tools"), "strict_tools")
    assert strict.end_of_turn == "<|im_end|>" and strict.trail == "\n", strict.text()
    assert any("'\\n' between an assistant's content and <|im_end|>" in n for n in strict.notes), strict.notes
    assert all(r.follows and r.append_only and r.reproduces for r in strict.roles), strict.text()
    channels = check_tokenizer(load_tokenizer(SCENARIO_TOKENIZERS / "channels"), "channels")
    assert channels.end_of_turn == "<|end|>" and channels.trail == "", channels.text()
    rows = {r.role: r for r in channels.roles}
    # a tool-call turn (commentary + call segments) is one completion, reproduced whole
    assert rows["tool"].append_only and rows["tool"].reproduces, channels.text()
    # the analysis segment of a stored turn is dropped once a user message follows: not append-only, still TITO
    assert rows["user"].append_only is False and rows["user"].reproduces is False
    assert channels.verdict == "holds"


@pytest.mark.parametrize("family", EVERY_FAMILY, ids=lambda f: Path(f).name)
def test_a_holding_verdict_is_what_the_server_builds(family: str) -> None:
    """What a TITO server experiences: the fake's tool-call completion, then the tool result joined after it.

    The prompt the reference server builds for turn 2 decodes to the template's
    own render of the whole conversation (every family but reasoning, whose
    template drops the think block of an earlier turn), which is what the check
    compares; so a family the check passes is one the server serves as the template would.
    """
    tok = load_tokenizer(family)
    model, tito = TokenModel(tok), Tito(tok)
    answer = model.answer(Identity(7, "k", 0, 0, "p"), GenerationSpec(), tool_calls=1)
    user = {"role": "user", "content": "the first question"}
    first = tito.plan(SessionView(), [user])
    reply = {"role": "assistant", "content": answer.content, "tool_calls": answer.tool_calls}
    done = tito.commit(first, first.input_ids, answer.completion_ids(True), reply)
    n = len(done.token_ids)
    view = SessionView(tuple(done.token_ids), tuple(done.messages), tuple(done.keys), (n,), (1,))
    result = {"role": "tool", "tool_call_id": answer.tool_calls[0]["id"], "content": "tool result one"}
    second = tito.plan(view, [user, reply, result])
    assert second.input_ids[:n] == done.token_ids
    if Path(family).name != "reasoning":
        want = tok.apply_chat_template([user, reply, result], tokenize=False, add_generation_prompt=True)
        assert tok.decode(second.input_ids, skip_special_tokens=False) == want
    assert check_tokenizer(tok, family).verdict == "holds"


# the channels layout, its user turns numbered: no stand-in prefix knows the number, TITO cannot hold
_NUMBERED_CHANNELS = (
    "{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}{%- set calls = m.get('tool_calls') or [] -%}"
    "{%- if calls -%}{%- if m['content'] -%}"
    "{{ '<|start|>assistant<|channel|>commentary<|message|>' + m['content'] + '<|end|>' }}{%- endif -%}"
    "{%- for tc in calls -%}{{ '<|start|>assistant<|channel|>call<|message|>' + tc['function']['arguments'] }}"
    "{{ '<|end|>' }}{%- endfor -%}"
    "{%- else -%}{{ '<|start|>assistant<|channel|>final<|message|>' + (m['content'] or '') + '<|end|>' }}{%- endif -%}"
    "{%- elif m['role'] == 'user' -%}{{ '<|start|>user ' + (loop.index0 | string) + '<|message|>' + m['content'] }}"
    "{{ '<|end|>' }}{%- else -%}{{ '<|start|>' + m['role'] + '<|message|>' + (m['content'] or '') + '<|end|>' }}"
    "{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|start|>assistant' }}{%- endif -%}"
)


def test_a_multi_segment_turn_does_not_hide_an_unservable_template(tmp_path: Path) -> None:
    d = tmp_path / "numbered-channels"
    d.mkdir()
    src = SCENARIO_TOKENIZERS / "channels"
    for name in ("tokenizer.json", "special_tokens_map.json"):
        (d / name).write_bytes((src / name).read_bytes())
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["chat_template"] = _NUMBERED_CHANNELS
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    res = check_tokenizer(load_tokenizer(d), "numbered-channels")
    assert res.verdict == "fails", res.text()
    assert any("after [user, assistant+tool_call, tool, assistant], appending user" in p for p in res.problems)
    assert "-<|start|>user 4<|message|>" in res.example and "+<|start|>user 2<|message|>" in res.example
