"""The reference server's extras X02 (pass-through allowlist) and X03 (``--backend-timeout``) read
``target.server_args`` as the launcher does, and a coverage proof's ``_bugs`` target is configured by them.

- The sim offers a ``--target`` factory the scenario's ``server_args``; ``_bugs.reference_app`` (what every bug
  wrapper wraps) configures the reference server from them, so the unmodified app passes backend_timeout and
  passthrough_requests, and the ``ignore_backend_timeout`` proof is flagged for its bug, not for a 600 s default.
- ``ops.server_options`` parses the arguments with reference_impl's own parser: the last occurrence wins,
  abbreviations count, arguments the launcher refuses are unknown with the reason.
- X03 applies the chaos excuses first and allows a connect and a read timeout (2S) + the bound.
- Both verdicts say when X02 / X03 judged nothing, and X03 how many hung chats it judged.

Three sim seeds (~3 s together) and checker-only runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_checkers_builders import BACKEND, RunBuilder

from harness.checkers import CHECKERS, Verdict, check_all
from harness.checkers.ops import max_trim_tokens, server_max_body
from harness.history import History
from harness.rundata import RunData
from harness.scenario import load_scenario
from harness.sim.runner import simulate
from harness.sim.world import load_target

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BUGS = "asgi:harness.coverage._bugs:"


def _sim(scenario: str, bug: str, checker: str) -> Verdict:
    sc = load_scenario(SCENARIOS / f"{scenario}.toml")
    out = simulate(sc, 0, "random", target=BUGS + bug, trace=False)
    assert out.error is None and out.data is not None, out.error
    return next(v for v in check_all(out.data) if v.checker == checker)


def test_the_unmodified_reference_app_target_passes_and_the_timeout_proof_still_catches_its_bug() -> None:
    # the scenario says --backend-timeout 1: the wrapper's reference server must be started so (not 600 s)
    v = _sim("backend_timeout", "reference_app", "liveness")
    assert v.status == "valid", v
    assert "X03: " in v.notes and "judged against --backend-timeout 1" in v.notes, v.notes
    assert not v.notes.split("X03: ")[1].startswith("0 "), v.notes  # some hung chat was judged
    assert _sim("passthrough_requests", "reference_app", "passthrough").status == "valid"
    bad = _sim("backend_timeout", "ignore_backend_timeout", "liveness")
    assert bad.status == "invalid" and {x.kind for x in bad.violations} == {"backend_timeout_ignored"}, bad


def test_the_sim_offers_server_args_only_to_a_factory_that_takes_them() -> None:
    sc = load_scenario(SCENARIOS / "backend_timeout.toml")
    seen: dict[str, Any] = {}
    globals()["_named"] = lambda backend_url: seen.setdefault("named", {"backend_url": backend_url})
    globals()["_takes"] = lambda server_args, **kw: seen.setdefault("takes", {"server_args": server_args, **kw})
    for name in ("_named", "_takes"):
        load_target(f"asgi:{__name__}:{name}", sc)(0, 0, 0, None, print)  # type: ignore[arg-type]
    assert set(seen["named"]) == {"backend_url"}  # a user factory that names its kwargs gets only those
    assert seen["takes"]["server_args"] == ("--backend-timeout", "1")


def test_server_args_are_read_as_the_launcher_reads_them() -> None:
    from harness.checkers.ops import parse_server_args  # the one reading (ops.py): here, so the rest load without it

    given, _ = parse_server_args(["--backend-timeout", "1", "--backend-timeout", "30"])
    assert given is not None and given["backend_timeout"] == 30.0  # argparse: the last occurrence wins
    given, _ = parse_server_args(["--backend-time", "7", "--passthrough-pa", "/a", "--passthrough-path=/b/*"])
    assert given == {"backend_timeout": 7.0, "passthrough_path": ["/a", "/b/*"]}
    assert parse_server_args([])[0] == {}  # defaults are not "given"
    for bad in (["--backend-timeout", "soon"], ["--backend-timeout"], ["--max", "3"], ["--bogus"]):
        given, why = parse_server_args(bad)
        assert given is None and "refuses" in why, (bad, why)

    def run(args: list[str]) -> RunData:
        return RunData(scenario={"target": {"kind": "reference", "server_args": args}}, history=[])

    assert max_trim_tokens(run(["--max-trim-tokens", "1", "--max-trim-tokens", "3"])) == 3
    assert max_trim_tokens(run(["--max-trim", "4"])) == 4
    assert server_max_body(run(["--max-body-bytes", "10", "--max-body-bytes=20"])) == 20
    assert server_max_body(run(["--max-body-bytes", "ten"])) is None


def _hung(target: dict[str, Any], seconds: float, *, outage: bool = False) -> Verdict:
    b = RunBuilder()
    b.scenario["target"].update(target)
    sid = b.create()
    t = b.tick()
    if outage:
        b.chaos({"action": "backend_outage_start", "fault": "reset", "duration_s": seconds}, server=BACKEND)
    b.chat(sid, 0, t0=t, t1=t + seconds, fault=f"hang;seconds={seconds:g}")
    return CHECKERS["liveness"].check(b.build())


def test_x03_follows_the_last_and_abbreviated_backend_timeout() -> None:
    # bound 30 s: a chat answered after a 45 s hang
    assert (
        _hung({"kind": "reference", "server_args": ["--backend-timeout", "1", "--backend-timeout", "30"]}, 45).status
        == "valid"
    )
    v = _hung({"kind": "reference", "server_args": ["--backend-time", "5"]}, 45)
    assert {x.kind for x in v.violations} == {"backend_timeout_ignored"}, v
    v = _hung({"kind": "reference", "server_args": ["--backend-timeout", "soon"]}, 45)
    assert v.status == "valid" and "X03 (the reference server's --backend-timeout) not judged: " in v.notes
    assert "refuses" in v.notes, v.notes


def test_x03_allows_a_connect_and_a_read_timeout_and_takes_the_chaos_excuses_first() -> None:
    ref = {"kind": "reference", "server_args": ["--backend-timeout", "5"]}
    # 38 s > S + bound (35) but within a connect and a read timeout + bound (40): a correct server may take it
    assert _hung(ref, 38).status == "valid"
    assert _hung(ref, 41).status == "invalid"
    # a declared backend outage over the chat explains it whatever the timeout
    assert _hung(ref, 45, outage=True).status == "valid"


def test_verdicts_say_when_x02_and_x03_judged_nothing() -> None:
    foreign = {"kind": "command", "server_args": ["--backend-timeout", "5"]}
    v = _hung(foreign, 45)
    assert (
        v.status == "valid"
        and "X03 (the reference server's --backend-timeout) not judged: not our reference server" in v.notes
    )
    v = _hung({"kind": "reference", "server_args": ["--backend-timeout", "5"]}, 20)
    assert "X03: 1 chat(s) on a backend hang judged against --backend-timeout 5" in v.notes, v.notes

    class Tick:
        t = 0.0

        def monotonic(self) -> float:
            self.t += 0.001
            return self.t

        def wall(self) -> float:
            return self.t

    h = History(Tick())
    op = h.invoke(process="fuzzer", f="create", server="http://s0")
    h.ok(op, status=200, session="v")
    op = h.invoke(process="fuzzer", f="fuzz", session="v", server="http://s0", method="GET", path="/sessions/v/health")
    h.ok(op, status=200)
    for target, note in (
        ({"kind": "command"}, "X02 (the reference server's allowlist) not judged: not our reference server"),
        ({"kind": "reference", "server_args": ["--bogus"]}, "X02 (the reference server's allowlist) not judged: "),
    ):
        v = CHECKERS["passthrough"].check(RunData(scenario={"target": target}, history=h.events))
        assert v.status == "valid" and note in v.notes, v.notes
    v = CHECKERS["passthrough"].check(RunData(scenario={"target": {"kind": "reference"}}, history=h.events))
    assert "X02" not in v.notes, v.notes
