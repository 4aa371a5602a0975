"""The ``harness`` dispatcher: version, did-you-mean, one usage style (issue 14)."""

from __future__ import annotations

import pytest

from harness.cli import COMMANDS, main, version


def test_version_is_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"harness {version()}"
    assert version()[0].isdigit()


def test_a_mistyped_command_suggests_the_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rn"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'rn'; did you mean 'run'?" in err


def test_an_unrelated_word_gets_no_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zzzzzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_no_command_is_usage_on_stderr_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    cap = capsys.readouterr()
    assert "usage: harness COMMAND" in cap.err and cap.out == ""


def test_help_is_usage_on_stdout_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_names_itself_in_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main([name, "--help"])
    except SystemExit as exc:  # argparse's own --help
        code = int(exc.code or 0)
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:80]
    assert f"harness {name}" in out.split("\n\n")[0], out[:200]
