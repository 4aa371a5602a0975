"""A user's own tokenizer folder (built here, not a shipped name) through ``--tokenizer DIR``.

The folder has a reasoning-style chat template written for this test (a think
block on the assistant turn after the last user query, dropped from earlier
ones), the case that used to answer every second turn with a 500. It must work
through ``harness serve`` + ``harness fake-sglang`` over loopback, and through
``harness run`` and ``harness explore`` in simulation.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.cli import main as harness
from harness.runner._procs import ManagedProcess, free_port, wait_healthy
from harness.tokenizer import load_tokenizer

try:
    from tests.unit.tokenizer_dirs import REASONING_STYLE, tokenizer_dir
except ImportError:  # pragma: no cover - run from tests/integration
    from tokenizer_dirs import REASONING_STYLE, tokenizer_dir  # type: ignore[no-redef]

SMALL = """
name = "small"
seed = 4
[target]
tokenizer = "{tok}"
[workload]
sessions = 4
concurrency = 4
turns = [3, 3]
[backend.generation]
tool_call_probability = 0.3
"""


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tokenizer_dir(tmp_path_factory.mktemp("ckpt") / "my-model", REASONING_STYLE)


@pytest.mark.integration
async def test_serve_and_fake_over_loopback(user_dir: Path, tmp_path: Path) -> None:
    py = sys.executable
    fport = free_port()
    sport = next(p for p in iter(free_port, None) if p != fport)
    fake = ManagedProcess(
        "fake",
        [py, "-m", "harness.cli", "fake-sglang", "--port", str(fport), "--tokenizer", str(user_dir)],
        f"http://127.0.0.1:{fport}",
        tmp_path / "fake.log",
    )
    serve_argv = [py, "-m", "harness.cli", "serve", "--port", str(sport), "--backend-url", fake.url]
    server = ManagedProcess(
        "serve", [*serve_argv, "--tokenizer", str(user_dir)], f"http://127.0.0.1:{sport}", tmp_path / "serve.log"
    )
    try:
        fake.start()
        server.start()
        await wait_healthy(fake.url, 60, fake)
        await wait_healthy(server.url, 60, server)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            sid = (await c.post("/sessions")).json()["session_id"]
            msgs: list[dict[str, Any]] = [{"role": "user", "content": "first question"}]
            contents = []
            for turn in range(3):
                r = await c.post(f"/sessions/{sid}/v1/chat/completions", json={"messages": msgs})
                assert r.status_code == 200, r.text
                msg = r.json()["choices"][0]["message"]
                contents.append(msg["content"])
                msgs += [{"role": "assistant", "content": msg["content"]}, {"role": "user", "content": f"q{turn}"}]
            state = (await c.get(f"/sessions/{sid}")).json()
    finally:
        server.stop()
        fake.stop()
    tok = load_tokenizer(user_dir)
    # the fake thought in this template's own format: tags on one line with the thought
    assert all(c.startswith("<think>") and "</think>\n" in c and "<think>\n" not in c for c in contents)
    records = state["records"]
    assert [r["kind"] for r in records] == ["committed"] * 3
    ids = state["metadata"]["token_ids"]
    for prev, nxt in itertools.pairwise(records):
        out = [t for _, t in prev["response"]["choices"][0]["meta_info"]["output_token_logprobs"]]
        assert nxt["request"]["input_ids"][: len(prev["request"]["input_ids"]) + len(out)] == [
            *prev["request"]["input_ids"],
            *out,
        ]
    text = tok.decode(ids, skip_special_tokens=False)
    for c in contents:  # every thought the model produced is still in the stored tokens
        assert c.split("</think>")[0] in text
    rerendered = tok.apply_chat_template(msgs[:-1], tokenize=False)
    assert contents[0].split("</think>")[0] not in rerendered  # which a re-rendering server would have lost


@pytest.mark.integration
def test_run_and_explore_in_simulation(user_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = tmp_path / "small.toml"
    s.write_text(SMALL.format(tok=user_dir))
    out = tmp_path / "out"
    assert harness(["run", str(s), "--mode", "sim", "--out", str(out), "--quiet"]) == 0, capsys.readouterr().out
    verdicts = json.loads((out / "small" / "verdicts.json").read_text())
    rows = verdicts if isinstance(verdicts, list) else verdicts["verdicts"]
    assert {v["checker"]: v["status"] for v in rows}["no_unexpected_5xx"] == "valid"
    committed = 0
    for line in (out / "small" / "history.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("f") == "chat" and e.get("type") == "ok" and e.get("status") == 200:
            committed += 1
    assert committed >= 8  # 4 sessions x 3 turns, later turns included
    capsys.readouterr()
    other = tmp_path / "other.toml"
    other.write_text(SMALL.format(tok="chatml"))
    assert harness(["explore", str(other), "--seeds", "3", "--jobs", "1", "--tokenizer", str(user_dir)]) == 0
    assert "3 seeds" in capsys.readouterr().out
