"""The one verdict of a run: checkers + SLOs + gate + strictness + the unknown policy -> an exit code.

Why one function: ``harness run``, ``check``, ``report``, ``replay``, the
pytest plugin and ``junit.xml`` used to compose their own answer, and they
disagreed (an SLO failure failed ``run`` but passed in pytest; ``report``
read a ``verdicts.json`` that ``check`` never rewrote). Every one of them now
calls :func:`judge` on the run folder and uses its ``exit_code``.

Exit codes, the same in every command (docs/ci.md):

- 0 ``pass``: nothing invalid, every SLO bound held, no regression;
- 1 ``fail``: a checker found a violation, an SLO bound failed, the gate
  found a regression, the run itself crashed, or (``strict``) something was
  unknown or a declared fault was not exercised;
- 2 bad input (the commands' own concern, before anything runs);
- 3 ``cannot judge``: with ``fail_on_unknown`` (``--fail-on-unknown``,
  ``[checks] fail_on_unknown = true``) an unknown verdict, an SLO without
  samples or a gate that refused makes the run undecided rather than green.
  Without it, unknown is reported loudly and exits 0.

Freshness: the runner and ``harness check`` write ``verdicts.json`` through
:func:`write_verdicts`, which records next to it (``verdicts.meta.json``) a
digest of the checker code and of the run files it read. :func:`fresh_verdicts`
re-checks when either changed, so no command reads a stale verdict. A
``verdicts.json`` without that record (written by hand, or by an older
harness) is taken as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from harness.rundata import RUN_FILES, RunData

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CANNOT_JUDGE",
    "EXIT_FAIL",
    "EXIT_PASS",
    "META_FILE",
    "SUMMARY_BUCKETS",
    "FolderCheck",
    "GateOutcome",
    "Judgement",
    "check_folder",
    "fresh_verdicts",
    "gate_for_run",
    "judge",
    "run_checkers",
    "suite_exit",
    "write_verdicts",
]

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_CANNOT_JUDGE = 0, 1, 2, 3
META_FILE = "verdicts.meta.json"
VERDICT_NAMES = {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_CANNOT_JUDGE: "cannot judge"}
# the buckets the terminal summary and the judgement carry p50/p99 for
SUMMARY_BUCKETS = ("total_ms", "lock_wait_ms", "proxy_elapsed_ms", "client_request_ms")
# run files the checkers read: a change to any of them makes verdicts.json stale
_INPUTS = ("scenario", "history", "final_states", "owners", "backend_executions", "server_logs")


class GateOutcome(Protocol):
    """The seam for the latency gate (harness.report.compare): an exit code 0/1/3 and lines saying why."""

    @property
    def exit_code(self) -> int: ...

    @property
    def lines(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Gate:
    """A plain :class:`GateOutcome` (what ``harness compare`` decided)."""

    exit_code: int
    lines: tuple[str, ...] = ()


def gate_for_run(baseline: Path, run_dir: Path) -> Gate:
    """The latency gate of one run against its baseline run folder, as a :class:`Gate`.

    Every gated bucket, each with its own threshold and floor (:func:`harness.report.compare.gate_verdict`).
    Bad input on the gate's side (a baseline it cannot read) is "cannot judge" here: the run itself was
    fine input.
    """
    from harness.report.compare import gate_verdict

    res = gate_verdict(baseline, run_dir)
    code = EXIT_CANNOT_JUDGE if res.exit_code == EXIT_BAD_INPUT else int(res.exit_code)
    lines = [c.line() for c in res.comparisons if c.exit_code != EXIT_PASS] or [str(res.message)]
    return Gate(code, tuple(lines))


# ---------------------------------------------------------------- checkers and verdicts.json


@lru_cache(maxsize=1)
def checker_fingerprint() -> str:
    """sha256 over the checker sources (and this module's): new checker code makes old verdicts stale."""
    import harness.checkers

    root = Path(harness.checkers.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted([*root.rglob("*.py"), Path(__file__).resolve()]):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def inputs_digest(run_dir: Path) -> str:
    """sha256 over the run files the checkers read (missing files count as empty)."""
    h = hashlib.sha256()
    for key in _INPUTS:
        p = run_dir / RUN_FILES[key]
        h.update(key.encode() + b"\0")
        if p.is_file():
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _enabled(scenario: Mapping[str, Any]) -> list[str] | None:
    checks = scenario.get("checks")
    enabled = checks.get("enabled") if isinstance(checks, Mapping) else None
    if not isinstance(enabled, list) or not enabled or "all" in enabled:
        return None
    return [str(n) for n in enabled]


def _untestable(scenario: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chaos the scenario asks for that its target could not perform: unknown, never a silent pass."""
    target = scenario.get("target") if isinstance(scenario.get("target"), Mapping) else {}
    chaos = scenario.get("chaos") if isinstance(scenario.get("chaos"), Mapping) else {}
    assert isinstance(target, Mapping) and isinstance(chaos, Mapping)
    kills = chaos.get("kill_restart") or []
    if not kills or target.get("process_control", True):
        return []
    return [
        {
            "checker": "process_control",
            "status": "unknown",
            "violations": [],
            "notes": f"the scenario kills and restarts server processes ({len(kills)} kill_restart), but the "
            f"harness did not start this target's processes ({target.get('kind')} target), so no process was "
            "killed; run it with a command target (--server-cmd) to test it",
        }
    ]


def run_checkers(run: RunData, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The scenario's enabled checkers (or ``names``) over ``run``, plus what its target could not do.

    The one checker path of every mode and command. An unknown name raises ValueError (bad input).
    """
    from harness.checkers import check_all

    selected = list(names) if names is not None else _enabled(run.scenario)
    verdicts = [v.to_dict() for v in check_all(run, selected)]
    if names is None:
        verdicts.extend(_untestable(run.scenario))
    return verdicts


@dataclass
class FolderCheck:
    """:func:`check_folder`'s answer: the verdicts, how each checker ran, and the run it loaded."""

    verdicts: list[dict[str, Any]]
    streamed: list[str]  # checked a session group at a time (harness/checkers/stream.py)
    whole: list[str]  # checked on the whole run loaded in memory
    why_whole: str  # why checkers with per-session steps ran whole ("" when none did)
    # the folder for the judgement: loaded whole when some checker needed it, else only what the judgement and
    # the report read (harness.report.scan.lean_run: a LeanRun, never for a checker)
    run: RunData

    def how(self) -> str:
        """One line saying which checkers ran per session and which on the whole run."""
        line = f"checked per session: {', '.join(self.streamed) or 'none'}; on the whole run: "
        line += ", ".join(self.whole) or "none"
        return line + (f" (no per-session pass: {self.why_whole})" if self.why_whole else "")


# Below this much run data (history, server logs, backend executions) a folder is checked whole: the
# per-session pass gives the same verdicts but spills everything to SQLite first, which buys memory only
# where the loaded run is large (494 MB for the 10^4-session soak's 158 MB history). And while some selected
# checker has no per-session steps the folder is loaded whole anyway, so the pass saves nothing: on that
# soak `harness check` peaked at 672 MB with it and 662 MB without, at 103 s and 82 s of CPU (quiet box).
PER_SESSION_MIN_BYTES = 64 * 1024 * 1024


def _run_bytes(run_dir: Path) -> int:
    from harness.rundata import RUN_FILES

    total = 0
    for key in ("history", "server_logs", "backend_executions", "final_states"):
        try:
            total += (run_dir / RUN_FILES[key]).stat().st_size
        except OSError:
            pass
    return total


def check_folder(run_dir: Path, names: Sequence[str] | None = None, *, per_session: bool | None = None) -> FolderCheck:
    """``run_checkers(RunData.load(run_dir), names)`` with the same verdicts, in less memory.

    The selected checkers that have per-session steps run first, over the folder a session group at a
    time (:func:`harness.checkers.stream.check_streaming`); then the folder is loaded once, for the
    others; when none is left, only what the judgement reads is kept (:func:`harness.report.scan.lean_run`),
    so the run is never whole in memory. A history the grouping cannot reproduce exactly
    (``NotStreamable``) is checked whole, and ``why_whole`` says why. ``per_session``: None (the default)
    takes that pass only where it saves memory: a folder of at least :data:`PER_SESSION_MIN_BYTES` of run
    data, every selected checker with per-session steps; True always; False never (all on the loaded run).
    """
    from harness.checkers import CHECKERS, check_all
    from harness.checkers.stream import SessionChecker, check_streaming

    run_dir = Path(run_dir)
    if names is not None:
        selected = list(dict.fromkeys(names))
        bad = [n for n in selected if n not in CHECKERS]
        if bad:
            raise ValueError(f"unknown checker(s) {bad}; allowed: {sorted(CHECKERS)}")
    else:
        enabled = _enabled(_scenario_of(run_dir))
        selected = list(CHECKERS) if enabled is None else list(dict.fromkeys(enabled))
        bad = [n for n in selected if n not in CHECKERS]
        if bad:  # check_all's refusal, before any work
            raise ValueError(f"unknown checker(s) {bad}; allowed: {sorted(CHECKERS)}")
    steps = [n for n in selected if isinstance(CHECKERS[n], SessionChecker)]
    got: dict[str, dict[str, Any]] = {}
    why = ""
    if steps and per_session is None:
        size = _run_bytes(run_dir)
        whole = [n for n in selected if n not in steps]
        if size < PER_SESSION_MIN_BYTES:
            per_session = False
            why = f"a small run ({size / 2**20:.1f} MiB of run data, under {PER_SESSION_MIN_BYTES // 2**20} MiB)"
        elif whole:
            per_session = False
            why = f"the run is loaded whole anyway for {', '.join(whole)} (no per-session steps)"
    streamed: list[str] = []
    if steps and per_session is not False:
        # every step checker's verdict, those check_streaming ran on the whole run included (it loaded the run
        # for them already: a second load and check here would double the work)
        res = check_streaming(run_dir, steps)
        why, streamed = res.why_whole, res.streamed
        got = {n: v.to_dict() for v, n in zip(res.verdicts, steps, strict=True)}
    elif steps and not why:
        why = "asked for (per_session=False)"
    rest = [n for n in selected if n not in got]
    if rest:
        run: RunData = RunData.load(run_dir)
        got.update((v.checker, v.to_dict()) for v in check_all(run, rest))
    else:  # every checker has run: the judgement's share of the folder, never the whole run
        from harness.report.scan import lean_run

        run = lean_run(run_dir)
    verdicts = [got[n] for n in selected]
    if names is None:
        verdicts.extend(_untestable(run.scenario))
    return FolderCheck(verdicts, streamed, [n for n in selected if n not in streamed], why, run)


def _scenario_of(run_dir: Path) -> dict[str, Any]:
    """The folder's scenario as :meth:`RunData.load` reads it (a corrupt file is a ValueError there too)."""
    p = run_dir / RUN_FILES["scenario"]
    raw = json.loads(p.read_text()) if p.exists() else {}
    return raw if isinstance(raw, dict) else {}


def write_verdicts(run_dir: Path, verdicts: list[dict[str, Any]], *, server_logs: Sequence[str] = ()) -> None:
    """``verdicts.json`` (a list, as always) and the record that says what it was computed from."""
    (run_dir / RUN_FILES["verdicts"]).write_text(json.dumps(verdicts, indent=1, sort_keys=True))
    meta = {
        "checkers": checker_fingerprint(),
        "inputs": inputs_digest(run_dir),
        "server_logs": list(server_logs),  # --server-log files that replaced the folder's logs (harness check)
    }
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _load_list(path: Path) -> list[dict[str, Any]]:
    raw = json.loads(path.read_text())
    if isinstance(raw, dict):  # tolerate {"verdicts": [...]} or {name: verdict}
        raw = raw.get("verdicts", list(raw.values()))
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of verdicts")
    return [v for v in raw if isinstance(v, dict)]


def fresh_verdicts(run_dir: Path, run: RunData | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The run's verdicts, re-checked (and rewritten) when ``verdicts.json`` is stale; and a note saying so.

    Stale: its record names other checker code or other run files than the folder now holds, or there
    is a record but no verdicts.json. Without a record the file is used as it is (older harness, by hand).
    A folder without a history has nothing to check: what is there is returned. Re-checked on ``run`` when
    it is the folder loaded whole, else through :func:`check_folder` (per session where it can, the
    same verdicts).
    """
    vpath, mpath = run_dir / RUN_FILES["verdicts"], run_dir / META_FILE
    meta: Any = None
    if mpath.is_file():
        try:
            meta = json.loads(mpath.read_text())
        except ValueError:
            meta = {}
    if vpath.is_file() and not isinstance(meta, dict):
        return _load_list(vpath), None
    if not (run_dir / RUN_FILES["history"]).is_file() or (not vpath.is_file() and (run_dir / "error.txt").is_file()):
        # nothing to check, or a run that crashed (error.txt, no verdicts): its history may be cut anywhere
        return (_load_list(vpath) if vpath.is_file() else []), None
    why = None
    if not vpath.is_file():
        why = "no verdicts.json"
    elif meta.get("checkers") != checker_fingerprint():
        why = "the checkers changed since verdicts.json was written"
    elif meta.get("inputs") != inputs_digest(run_dir):
        why = "the run folder changed since verdicts.json was written"
    if why is None:
        return _load_list(vpath), None
    from harness.report.scan import LeanRun

    verdicts = run_checkers(run) if run is not None and not isinstance(run, LeanRun) else check_folder(run_dir).verdicts
    write_verdicts(run_dir, verdicts)
    return verdicts, f"re-checked: {why}"


# ---------------------------------------------------------------- the judgement


@dataclass
class Judgement:
    """What a run comes to. ``exit_code`` is the command's answer; ``reasons`` say why, in words."""

    run: str
    run_dir: Path
    status: str  # the checkers composed: valid | invalid | unknown, or error (the run crashed)
    exit_code: int
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)  # checkers with violations, by name
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (checker, reason)
    not_exercised: list[str] = field(default_factory=list)  # declared faults that never fired ("abort (by)")
    coverage_note: str | None = None  # why fault coverage could not be told
    slo: dict[str, Any] = field(default_factory=lambda: {"status": "none", "checks": []})
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # bucket -> {n, p50_ms, p99_ms}
    gate: list[str] = field(default_factory=list)
    gate_code: int | None = None
    strict: bool = False
    fail_on_unknown: bool = False
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    virtual_time: bool = False  # a simulation run: latency is virtual time

    @property
    def verdict(self) -> str:
        """``pass``, ``fail`` or ``cannot judge``."""
        return VERDICT_NAMES.get(self.exit_code, "fail")

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "status": self.status,
            "reasons": list(self.reasons),
            "failing": list(self.failing),
            "unknown": [{"checker": c, "reason": r} for c, r in self.unknown],
            "not_exercised": list(self.not_exercised),
            "slo": self.slo.get("status"),
            "gate": self.gate_code,
            "strict": self.strict,
            "fail_on_unknown": self.fail_on_unknown,
            "error": self.error,
        }


def _scenario_policy(scenario: Mapping[str, Any]) -> tuple[bool, bool]:
    checks = scenario.get("checks")
    if not isinstance(checks, Mapping):
        return False, False
    return bool(checks.get("strict")), bool(checks.get("fail_on_unknown"))


def _read_scenario(run_dir: Path) -> dict[str, Any]:
    try:
        raw = json.loads((run_dir / RUN_FILES["scenario"]).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _latency(data: Any) -> dict[str, dict[str, Any]]:
    from harness.report.stats import latency_stats

    out: dict[str, dict[str, Any]] = {}
    for b in SUMMARY_BUCKETS:
        st = latency_stats(data.values(b), percentiles=(50.0, 99.0))
        if st.n:
            out[b] = {"n": st.n, "p50_ms": st.get(50.0), "p99_ms": st.get(99.0), "out_of_range": st.out_of_range}
    return out


def judge(
    run_dir: Path | str,
    *,
    run: RunData | None = None,
    data: Any = None,
    verdicts: list[dict[str, Any]] | None = None,
    strict: bool = False,
    fail_on_unknown: bool = False,
    gate: GateOutcome | None = None,
    error: str | None = None,
) -> Judgement:
    """The verdict of one run folder; ``strict`` / ``fail_on_unknown`` add to the scenario's own ``[checks]``.

    ``verdicts`` (already fresh) and ``run`` / ``data`` (RunData, its LatencyData) save re-reading what a
    caller holds. ``error``: the run crashed (exit 1 whatever was recorded). ``gate``: the latency gate's
    outcome for this run, if one was asked for (harness.report.compare).
    """
    run_dir = Path(run_dir)
    has_history = (run_dir / RUN_FILES["history"]).is_file()
    if run is None and has_history:  # what the judgement reads of it (never the whole run)
        from harness.report.scan import lean_run

        run = lean_run(run_dir)
    scenario = run.scenario if run is not None else _read_scenario(run_dir)
    s_strict, s_unknown = _scenario_policy(scenario)
    j = Judgement(
        run=run_dir.name,
        run_dir=run_dir,
        status="unknown",
        exit_code=EXIT_PASS,
        strict=strict or s_strict,
        fail_on_unknown=fail_on_unknown or s_unknown,
        error=error,
        virtual_time=scenario.get("mode") == "sim",
    )
    if verdicts is None and error is not None:  # a crashed run is not checked: its history may be cut anywhere
        vpath = run_dir / RUN_FILES["verdicts"]
        verdicts = _load_list(vpath) if vpath.is_file() else []
    elif verdicts is None:
        verdicts, note = fresh_verdicts(run_dir, run)
        if note:
            j.notes.append(note)
    j.verdicts = verdicts
    from harness.report.summary import compose_status, evaluate_slos

    j.status = "error" if error else compose_status([str(v.get("status", "unknown")) for v in verdicts])
    j.failing = [str(v.get("checker")) for v in verdicts if v.get("status") == "invalid"]
    j.unknown = [
        (str(v.get("checker")), str(v.get("notes") or "no reason given"))
        for v in verdicts
        if str(v.get("status", "unknown")) not in ("valid", "invalid")
    ]
    if run is not None:
        from harness.checkers.faults import fault_coverage
        from harness.report.buckets import extract

        cov = fault_coverage(run)
        j.not_exercised = [f"{d.fault} ({d.by})" for d in cov.not_exercised]
        if cov.declared and not cov.decided:
            j.coverage_note = cov.reason or "fault coverage could not be told"
        data = data if data is not None else extract(run)
        j.slo = evaluate_slos(run.scenario, data)
        j.latency = _latency(data)
    if gate is not None:
        j.gate, j.gate_code = list(gate.lines), int(gate.exit_code)
    j.reasons, j.exit_code = _decide(j, has_history)
    return j


def _decide(j: Judgement, has_history: bool) -> tuple[list[str], int]:
    fail: list[str] = []
    undecided: list[str] = []
    if j.error:
        fail.append(f"the run did not complete: {j.error}")
    for v in j.verdicts:
        if v.get("status") == "invalid":
            fail.append(f"{v.get('checker')}: {len(v.get('violations') or [])} violation(s)")
    for c in j.slo.get("checks") or []:
        what = f"SLO {c.get('series')} {c.get('key')} <= {c.get('threshold_ms')} ms"
        if c.get("status") in ("fail", "error"):
            fail.append(f"{what}: observed {c.get('observed_ms')} ms {c.get('note', '')}".rstrip())
        elif c.get("status") == "no_data":
            undecided.append(f"{what}: no samples")
    if j.gate_code == EXIT_FAIL:
        fail.append("latency gate: regression")
    elif j.gate_code == EXIT_CANNOT_JUDGE:
        undecided.append("latency gate: refused to judge (too few samples or runs)")
    if not j.error and not j.verdicts:
        undecided.append("no verdicts: " + ("the checkers did not run" if has_history else "no history recorded"))
    if j.unknown:
        undecided.append(f"{len(j.unknown)} unknown verdict(s): {', '.join(c for c, _ in j.unknown)}")
    if j.strict:
        strict_lines = [u for u in undecided if "unknown verdict" in u]
        if j.not_exercised:
            strict_lines.append(f"declared but not exercised: {', '.join(j.not_exercised)}")
        if j.coverage_note:
            strict_lines.append(f"fault coverage unknown: {j.coverage_note}")
        fail.extend(f"strict: {s}" for s in strict_lines)
    if fail:
        return fail, EXIT_FAIL
    if undecided and j.fail_on_unknown:
        return [f"cannot judge: {u}" for u in undecided], EXIT_CANNOT_JUDGE
    return [f"not decided (passes without --fail-on-unknown): {u}" for u in undecided], EXIT_PASS


def worst_exit(codes: Iterable[int]) -> int:
    """The exit over several answers: any fail (1) beats any cannot-judge (3) beats pass (0)."""
    seen = set(codes)
    if EXIT_FAIL in seen:
        return EXIT_FAIL
    if EXIT_CANNOT_JUDGE in seen:
        return EXIT_CANNOT_JUDGE
    return EXIT_PASS


def suite_exit(judgements: Sequence[Judgement]) -> int:
    """A command's exit over several runs: any fail is 1, else any cannot-judge is 3, else 0."""
    return worst_exit(j.exit_code for j in judgements)
