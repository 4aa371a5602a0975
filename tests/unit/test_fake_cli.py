"""``harness fake-sglang`` argument handling: bad input exits 2 before any port is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.fake_sglang.cli import build_parser, main


def test_defaults_bind_loopback() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.seed, args.plan, args.tokenizer) == ("127.0.0.1", 30000, 0, None, None)


def test_bad_plan_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[latency]\nmodel = "gamma"\n')
    assert main(["--plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "'latency.model'" in err and "allowed" in err


def test_bad_tokenizer_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tokenizer", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
