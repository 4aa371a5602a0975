"""Our reference server through the ``command`` target gives the verdicts the built-in target gives.

The command target knows nothing about our server: it starts whatever the
command line says, reads its log lines from the captured output, and owns
its processes only through the process group. If a verdict differed between
the two ways of running the same server, the difference would be the
harness's, not the server's: a log line lost from stderr, a restart that did
not happen, a plan that did not reach the fake. So the whole default suite
runs both ways, scenario by scenario, checker by checker, on the scenarios of
the default suite that exercise each part of the command target: fault plan
and outages through the fake's admin endpoint (transport_faults), abort
retries read from captured stderr (abort_retry_supersede), SIGKILL and
restart of a process the harness started from a command line
(process_kill_restart). ``bench/bench_command_target.py`` runs the whole
default suite both ways (about five minutes; figures in bench/RESULTS.md).
Reports are skipped: the verdicts are the point.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner import find_scenarios, run_scenario
from harness.runner._suite import SCENARIO_DIR, load_for_target

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CMD = (
    "{python} -m reference_impl --host {host} --port {port} --backend-url {backend_url} "
    "--tokenizer {tokenizer} --heartbeat-interval 1.0"
)


def verdicts(path: Path, out: Path, target: dict[str, object] | None) -> dict[str, tuple[str, str]]:
    """checker -> (status, why): the first violation or the notes, for a readable failure."""
    sc = load_for_target(path, target)
    res = run_scenario(sc, out, "default" if target is None else None, report=False)
    assert res.status != "error", (path.name, res.error)
    out_: dict[str, tuple[str, str]] = {"(composed)": (res.status, "")}
    for v in res.verdicts:
        first = (v.get("violations") or [{}])[0].get("message") or v.get("notes") or ""
        out_[str(v["checker"])] = (str(v["status"]), str(first)[:300])
    return out_


SCENARIOS = ["transport_faults", "abort_retry_supersede", "process_kill_restart"]


def test_same_verdicts_through_the_command_target(tmp_path: Path) -> None:
    paths = find_scenarios([str(SCENARIO_DIR / f"{n}.toml") for n in SCENARIOS])
    assert all(load_for_target(p).default for p in paths)
    differ = []
    for p in paths:
        found = compare(p, tmp_path / "first")
        if found:  # live timing on a shared box: a difference counts when a second pair of runs shows it too
            again = compare(p, tmp_path / "second")
            differ += [d for d in again if d.split(":")[0] in {f.split(":")[0] for f in found}]
    assert not differ, "\n".join(differ)


def compare(p: Path, out: Path) -> list[str]:
    built_in = verdicts(p, out / "built_in", None)
    command = verdicts(p, out / "command", {"kind": "command", "cmd": CMD})
    found = []
    # diagnostics judges our extra with the server's max_trim_tokens, which the harness knows for the
    # reference server it starts itself, not for a command it is handed: unknown there, by design
    if built_in.get("diagnostics", ("", ""))[0] == "valid" and command.get("diagnostics", ("", ""))[0] == "unknown":
        command["diagnostics"] = built_in["diagnostics"]
        if command["(composed)"][0] == "unknown" and all(
            s == "valid" for c, (s, _) in command.items() if c != "(composed)"
        ):
            command["(composed)"] = ("valid", "")
    for checker in sorted(set(built_in) | set(command)):
        a, b = built_in.get(checker, ("missing", "")), command.get(checker, ("missing", ""))
        if a[0] != b[0]:
            found.append(f"{p.stem} {checker}: built-in {a}, command {b}")
    return found
