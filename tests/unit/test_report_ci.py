"""The CI example stays runnable: the workflow parses and only uses commands and flags that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import COMMANDS
from harness.report.cli import compare_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "scenarios.yml"


def _compare_flags() -> set[str]:
    return {opt for action in compare_parser()._actions for opt in action.option_strings}


def test_workflow_parses_and_has_the_gate() -> None:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(WORKFLOW.read_text())
    steps = data["jobs"]["scenarios"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "harness run" in runs and "harness report" in runs and "harness compare" in runs
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "reports/latest" and uploads[0]["if"] == "always()"
    assert "reports/baselines/sim" in runs and "--mode sim" in runs  # the committed sim baseline gates


def test_workflow_builds_the_live_baseline_on_the_runner_and_gates_every_bucket() -> None:
    yaml = pytest.importorskip("yaml")
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["gate"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = {str(s.get("uses", "")).split("@")[0]: s for s in steps if s.get("uses")}
    assert "harness run --suite ci" in runs
    restore, save = uses["actions/cache/restore"], uses["actions/cache/save"]
    assert restore["with"]["path"] == save["with"]["path"] == "reports/live-baseline"
    assert "refs/heads/main" in save["if"] and "push" in save["if"]  # only main refreshes the baseline
    compare_lines = [ln for ln in runs.splitlines() if "harness compare" in ln]
    assert compare_lines and not any("--bucket" in ln for ln in compare_lines)  # every bucket: the [gate]


@pytest.mark.parametrize("path", [WORKFLOW, ROOT / "docs" / "ci.md", ROOT / "reports" / "baselines" / "README.md"])
def test_documented_commands_and_flags_exist(path: Path) -> None:
    text = path.read_text()
    for cmd in re.findall(r"(?:^\s*|`|/|\(|\$ )harness ([a-z][a-z-]+)", text, flags=re.MULTILINE):
        assert cmd in COMMANDS, f"{path.name}: `harness {cmd}` is not a command"
    known = _compare_flags()
    for line in re.findall(r"harness compare[^\n`]*(?:\\\n[^\n`]*)*", text):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
            assert flag in known, f"{path.name}: `harness compare {flag}` is not an option"


def test_browser_setup_script_is_idempotent_shell() -> None:
    script = (ROOT / "tests" / "browser_setup.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "if [ -x /usr/bin/chromium ]" in script and "apt-get install" in script
