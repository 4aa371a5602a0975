"""pytest plugin: scenario files as test items, and the servers as fixtures.

Why a plugin: users already gate merges on ``pytest``; a scenario that runs
as a test item joins their suite, their ``-k`` selection, their JUnit
output, with no new CI step. Collecting ``scenarios/*.toml`` is opt-in
(``--run-scenarios``, or ``run_scenarios = true`` in the ini file) because a
scenario starts processes and takes seconds: a project's own fast unit run
must stay fast unless asked. Each scenario (each variant of a ``compare``
list) is one item; it fails exactly when ``harness run`` would (the one
verdict, harness/verdict.py: violations, failed SLO bounds, a crashed run,
and with ``--scenario-strict`` / ``--scenario-fail-on-unknown`` or the
scenario's ``[checks]`` also unknown verdicts), and a bad scenario file fails
at collection with the file, key and fix.

Fixtures ``fake_sglang`` and ``reference_server`` start the processes on free
loopback ports, yield their URLs and stop them (module scope: startup costs
about two seconds of imports).

Registered as the ``pytest11`` entry point ``harness_scenarios``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ScenarioFailure", "ScenarioFile", "ScenarioItem", "raise_on_verdict"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "session-server scenarios")
    group.addoption("--run-scenarios", action="store_true", help="collect scenarios/*.toml as test items")
    group.addoption("--scenario-out", default=None, help="run folders go here (default: reports/pytest-scenarios)")
    group.addoption("--scenario-variant", default=None, help="run every scenario against this server variant")
    group.addoption("--scenario-seed", type=int, default=None, help="override every scenario's seed")
    group.addoption(
        "--scenario-mode", default="live", choices=("live", "sim"), help="live processes (default) or simulation"
    )
    group.addoption(
        "--scenario-strict", action="store_true", help="unknown verdicts and unexercised faults fail (checks.strict)"
    )
    group.addoption(
        "--scenario-fail-on-unknown",
        action="store_true",
        help="a scenario that cannot be judged (unknown verdicts) fails (checks.fail_on_unknown)",
    )
    parser.addini("run_scenarios", "collect scenario TOML files as test items", type="bool", default=False)
    parser.addini("scenario_dirs", "folders whose *.toml files are scenarios", type="linelist", default=["scenarios"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario: a scenario TOML file run live by the harness")
    if not any(str(m).startswith("integration") for m in config.getini("markers")):
        config.addinivalue_line("markers", "integration: opens loopback sockets or starts processes")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-scenarios") or config.getini("run_scenarios"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".toml" or not _enabled(parent.config):
        return None
    dirs = [str(d).rstrip("/") for d in parent.config.getini("scenario_dirs")]
    if file_path.parent.name not in {Path(d).name for d in dirs}:
        return None
    result: pytest.Collector = ScenarioFile.from_parent(parent, path=file_path)
    return result


class ScenarioFailure(Exception):
    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


def raise_on_verdict(run_name: str, res: Any) -> None:
    """Fail (ScenarioFailure) when the run's one verdict is not a pass: the same answer as ``harness run``."""
    from harness.verdict import judge

    j = res.judgement if res.judgement is not None else judge(res.run_dir, verdicts=[], error=res.error or "no verdict")
    if j.exit_code == 0:
        return
    lines = [f"{run_name}: {j.verdict.upper()} (exit {j.exit_code}; {res.run_dir})"]
    lines += [f"  {r}" for r in j.reasons]
    for v in j.verdicts:
        if v["status"] == "invalid":
            for viol in v["violations"][:5]:
                lines.append(f"  {v['checker']}: {viol['message']} (history {viol['ops'][:6]})")
    raise ScenarioFailure("\n".join(lines))


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from harness.runner import expand
        from harness.runner._suite import check_variant
        from harness.scenario import load_scenario

        sc = load_scenario(self.path)  # a ScenarioError fails collection with file, key and fix
        variant = self.config.getoption("--scenario-variant")
        check_variant(variant, "--scenario-variant")  # a typo fails collection, before any process starts
        for one, run_name in expand(sc, variant):
            item: pytest.Item = ScenarioItem.from_parent(self, name=run_name, scenario=one, run_name=run_name)
            item.add_marker(pytest.mark.scenario)
            item.add_marker(pytest.mark.integration)
            yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Any, run_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.run_name = run_name

    def runtest(self) -> None:
        import importlib

        from harness.runner._suite import with_policy

        sim = self.config.getoption("--scenario-mode") == "sim"
        run_scenario = importlib.import_module("harness.sim.runner" if sim else "harness.runner").run_scenario

        out = self.config.getoption("--scenario-out")
        out_dir = Path(out) if out else self.config.rootpath / "reports" / "pytest-scenarios"
        scenario = with_policy(
            self.scenario,
            strict=bool(self.config.getoption("--scenario-strict")),
            fail_on_unknown=bool(self.config.getoption("--scenario-fail-on-unknown")),
        )
        res = run_scenario(
            scenario,
            out_dir,
            self.config.getoption("--scenario-variant"),
            self.config.getoption("--scenario-seed"),
            run_name=self.run_name,
            report=False,
        )
        self.user_properties.append(("run_dir", str(res.run_dir)))
        raise_on_verdict(self.run_name, res)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            return excinfo.value.summary
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.run_name}"


# ---------------------------------------------------------------- fixtures


def _start(proc: Any, timeout_s: float = 30.0) -> None:
    from harness.runner._procs import wait_healthy

    proc.start()
    try:
        asyncio.run(wait_healthy(proc.url, timeout_s, proc))
    except BaseException:
        proc.stop()
        raise


@pytest.fixture(scope="module")
def fake_sglang(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fake SGLang process on a free loopback port (seed 0, no faults); yields its URL."""
    from harness.runner._procs import ManagedProcess, free_port

    d = tmp_path_factory.mktemp("fake_sglang")
    port = free_port()
    plan = d / "plan.json"
    plan.write_text(json.dumps({"rules": []}))
    argv = [sys.executable, "-m", "harness.cli", "fake-sglang", "--host", "127.0.0.1", "--port", str(port)]
    proc = ManagedProcess("fake-sglang", [*argv, "--plan", str(plan)], f"http://127.0.0.1:{port}", d / "fake.log")
    _start(proc)
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def reference_server(fake_sglang: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One reference session-server process in front of ``fake_sglang``; yields its URL."""
    from harness.runner._procs import ManagedProcess, free_port

    d = tmp_path_factory.mktemp("reference_server")
    port = free_port()
    argv = [sys.executable, "-m", "reference_impl", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-url", fake_sglang, "--log-file", str(d / "server.jsonl")]
    proc = ManagedProcess("reference-server", argv, f"http://127.0.0.1:{port}", d / "server.log")
    _start(proc)
    try:
        yield proc.url
    finally:
        proc.stop()
