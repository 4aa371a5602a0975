"""``--tokenizer NAME|DIR`` reaches every command, and a bad one is bad input (exit 2) before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as harness
from harness.scenario import ScenarioError, load_scenario
from harness.tokenizer import load_tokenizer
from harness.tokenizer.stats import token_counts

SMALL = """
name = "small"
seed = 2
[target]
{target}
[workload]
sessions = 3
concurrency = 3
turns = [2, 3]
[backend.generation]
tool_call_probability = 0.5
"""


def scenario(tmp_path: Path, target: str = "") -> Path:
    p = tmp_path / "small.toml"
    p.write_text(SMALL.format(target=target))
    return p


def test_scenario_tokenizer_key_is_checked_at_load(tmp_path: Path) -> None:
    assert load_scenario(scenario(tmp_path, 'tokenizer = "headers"')).target.tokenizer == "headers"
    with pytest.raises(ScenarioError, match=r"key 'target\.tokenizer'.*not a shipped tokenizer name") as e:
        load_scenario(scenario(tmp_path, 'tokenizer = "chatml3"'))
    assert "small.toml" in str(e.value) and "reasoning" in str(e.value)  # names the file and the fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenarioError, match=r"target\.tokenizer.*no tokenizer\.json"):
        load_scenario(scenario(tmp_path, f'tokenizer = "{tmp_path / "empty"}"'))


def test_bad_tokenizer_exits_2_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = str(scenario(tmp_path))
    for argv in (
        ["run", s, "--mode", "sim", "--tokenizer", "nope", "--out", str(tmp_path / "o")],
        ["explore", s, "--seeds", "1", "--tokenizer", "nope"],
        ["replay", s, "--seed", "1", "--tokenizer", "nope"],
        ["incident", "replay", s, "--tokenizer", "nope"],
        ["model", s, "--tokenizer", "nope"],
        ["fake-sglang", "--tokenizer", "nope"],
        ["serve", "--backend-url", "http://127.0.0.1:1", "--tokenizer", "nope"],
        ["serve", "--backend-url", "http://127.0.0.1:1", "--processes", "2", "--tokenizer", "nope"],
    ):
        assert harness(argv) == 2, argv
        assert "nope: not a shipped tokenizer name" in capsys.readouterr().err, argv
    assert not (tmp_path / "o").exists()  # nothing ran


def test_run_tokenizer_overrides_every_scenario(tmp_path: Path) -> None:
    s = str(scenario(tmp_path, 'tokenizer = "trail"'))
    out = tmp_path / "out"
    assert harness(["run", s, "--mode", "sim", "--tokenizer", "headers", "--out", str(out), "--quiet"]) == 0
    run = out / "small"
    assert json.loads((run / "scenario.json").read_text())["target"]["tokenizer"] == "headers"
    tok = load_tokenizer("headers")
    eot = tok.convert_tokens_to_ids("<|eot|>")
    firsts = []
    for line in (run / "history.jsonl").read_text().splitlines():
        body = json.loads(line).get("body")
        if isinstance(body, dict) and body.get("records"):
            first = body["records"][0]
            firsts.append(first)
            # the server rendered with headers' template, the fake ended the answer with headers' end of turn
            text = tok.apply_chat_template(first["request"]["messages"], tokenize=False, add_generation_prompt=True)
            assert first["request"]["input_ids"] == tok.encode(text, add_special_tokens=False)
            assert first["response"]["choices"][0]["meta_info"]["output_token_logprobs"][-1][1] == eot
    assert firsts


def test_explore_and_replay_take_the_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = str(scenario(tmp_path))
    assert harness(["explore", s, "--seeds", "2", "--jobs", "1", "--tokenizer", "trail"]) == 0
    assert "no violation" in capsys.readouterr().out
    digests = {}
    for tok in ("chatml", "trail"):
        argv = ["replay", s, "--seed", "1", "--tokenizer", tok, "--no-report", "--out", str(tmp_path / tok)]
        assert harness(argv) == 0
        out = capsys.readouterr().out
        digests[tok] = next(ln for ln in out.splitlines() if "history digest" in ln)
    assert digests["chatml"] != digests["trail"]  # the answers' token ids differ: the tokenizer was used


def test_model_token_counts_follow_the_tokenizer() -> None:
    chatml, reasoning, headers, trail = (token_counts(f) for f in ("chatml", "reasoning", "headers", "trail"))
    assert reasoning.tokens_per_word > chatml.tokens_per_word  # a think block in every answer
    assert headers.first_prompt_tokens > chatml.first_prompt_tokens  # <|begin|> and role headers
    assert trail.turn_tokens == chatml.turn_tokens + 2  # one more newline after each of two turns' closing


def test_command_target_gets_a_folder_for_a_shipped_name(tmp_path: Path) -> None:
    """A user's server behind ``kind = "command"`` is handed ``{tokenizer}`` as a folder it can load, never a name."""
    from harness.runner._procs import ProcessGroup
    from harness.tokenizer import DATA_ROOT, DEFAULT_TOKENIZER_DIR

    def argv(tokenizer: str | None) -> list[str]:
        group = ProcessGroup.command(
            tmp_path / str(tokenizer),
            cmd=["server", "--tokenizer", "{tokenizer}"],
            processes=1,
            seed=0,
            plan_file=tmp_path / "plan.json",
            tokenizer=tokenizer,
        )
        return list(group.servers[0].argv)  # built, not started

    assert argv("reasoning")[-1] == str((DATA_ROOT / "reasoning").resolve())
    assert argv(None)[-1] == str(DEFAULT_TOKENIZER_DIR.resolve())
