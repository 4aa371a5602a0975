"""lean_run (harness/report/scan.py): the report and the judgement read a run folder without loading it whole,
and every figure they make from it is the one they made from ``RunData.load``.

Synthetic folders (report_fixtures) with what the readers look at beyond the plain chats: backend ``/stats``
probes whose bodies say the log was reset (fault coverage undecided), merged-history clock shifts, faulted
executions, chaos, a run cut mid-operation with a torn last line. No live run; a few seconds in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_checkers_stream_more import WholeOnly

from harness.checkers import CHECKERS
from harness.checkers.continuity import BACKEND_PROBE
from harness.report.buckets import extract
from harness.report.scan import LeanRun, lean_run
from harness.report.summary import _ops, attention, evaluate_slos, run_summary
from harness.report.timeline import build_timeline
from harness.rundata import RUN_FILES, RunData
from harness.verdict import check_folder, judge, run_checkers

try:
    from tests.unit.report_fixtures import make_run
except ImportError:  # pragma: no cover - run from tests/unit
    from report_fixtures import make_run  # type: ignore[no-redef]


def _probe(op: int, t: float, body: dict[str, Any]) -> list[dict[str, Any]]:
    inv = {"type": "invoke", "op": op, "f": "probe", "process": "harness", "value": BACKEND_PROBE, "time": t}
    return [inv, {**inv, "type": "ok", "time": t + 0.001, "status": 200, "body": body}]


def _write(run_dir: Path, *, reset: bool, shift: bool) -> Path:
    run, verdicts = make_run(seed=7, sessions=24, rules=[{"fault": "http_503", "probability": 0.5}])
    hist = list(run.history)
    end = max(float(e.get("time") or 0.0) for e in hist)
    resets = 1 if reset else 0
    hist[:0] = _probe(10**6, -1.0, {"boot_id": "b1", "resets": 0, "executions": 0, "stats": {"x": [1, 2]}})
    hist += _probe(10**6 + 1, end + 1.0, {"boot_id": "b1", "resets": resets, "executions": 5})
    for ev in hist:
        if shift and ev.get("f") == "chat":  # a history merged from Ray actors (docs/distributed.md)
            ev["clock_shift"] = 0.004 if ev.get("type") == "invoke" else 0.002
            ev["clock_uncertainty"] = 0.003
    # a GET completion with a large body, and one whose headers are not a table
    hist.append({"type": "invoke", "op": 10**6 + 2, "f": "get", "process": "agent-0", "session": "s", "time": end})
    hist.append(
        {**hist[-1], "type": "ok", "time": end + 0.5, "status": 200, "headers": "junk", "body": {"r": [1] * 999}}
    )
    for i, ev in enumerate(hist):
        ev["index"] = i
    run.history = hist
    run.save(run_dir)
    (run_dir / RUN_FILES["verdicts"]).write_text(json.dumps(verdicts))
    return run_dir


def _views(run: RunData, verdicts: list[dict[str, Any]]) -> list[Any]:
    data = extract(run)
    refs = {5: [1], 9: [2]}
    tl, ops = build_timeline(run.history, run.backend_executions, refs, virtual=False)
    summary = run_summary(run, data, verdicts, name="x", plots=[], seed=3)
    return [data, _ops(run), summary, tl.to_json(), tl.svg(), ops, evaluate_slos(run.scenario, data)]


@pytest.mark.parametrize(("reset", "shift"), [(False, False), (True, True)])
def test_the_report_reads_the_same_figures_from_the_lean_run(tmp_path: Path, reset: bool, shift: bool) -> None:
    d = _write(tmp_path / "run", reset=reset, shift=shift)
    verdicts = json.loads((d / RUN_FILES["verdicts"]).read_text())
    full, lean = RunData.load(d), lean_run(d)
    assert isinstance(lean, LeanRun) and not lean.final_states and not lean.owners
    a, b = _views(full, verdicts), _views(lean, verdicts)
    names = ["extract", "ops", "summary", "timeline", "svg", "ops rows", "slo"]
    assert [n for n, x, y in zip(names, a, b, strict=True) if x != y] == []
    faults = a[2]["faults"]
    assert faults["declared"] and faults["decided"] is (not reset)  # the probes' bodies were read
    assert a[0].events and any(e.kind == "fault" for e in a[0].events)  # faulted executions marked
    assert len(lean.history) == len(full.history)
    assert all("body" not in e for e in lean.history if e.get("f") == "get")  # what only checkers read is gone
    assert len(lean.server_logs) == sum(1 for x in full.server_logs if x.get("event") == "chat_done") > 0
    j_full = judge(d, run=full, verdicts=verdicts).to_json()
    assert judge(d, verdicts=verdicts).to_json() == j_full  # judge alone reads the lean run
    assert attention(d, verdicts) == attention(d, verdicts, full)


def test_a_cut_run_reads_as_RunData_load_reads_it(tmp_path: Path) -> None:
    d = _write(tmp_path / "run", reset=False, shift=False)
    hist = d / RUN_FILES["history"]
    lines = hist.read_bytes().splitlines(keepends=True)
    inv = {"type": "invoke", "op": 99, "f": "chat", "session": "s", "process": "agent-1", "time": 1.0, "index": 0}
    hist.write_bytes(b"".join(lines) + (json.dumps({**inv, "index": len(lines)}) + "\n").encode() + b'{"type": "o')
    verdicts = json.loads((d / RUN_FILES["verdicts"]).read_text())
    full, lean = RunData.load(d), lean_run(d)
    assert full.history[-1]["type"] == lean.history[-1]["type"] == "info"  # the open op closed as unknown
    assert len(full.history) == len(lean.history) > len(lines)  # the torn line skipped, open ops closed
    assert _views(full, verdicts) == _views(lean, verdicts)
    hist.write_bytes(b'{"type": "o\n' + b"".join(lines))  # a line that is not JSON before the end: corrupt
    with pytest.raises(ValueError, match="not JSON"):
        lean_run(d)


def test_check_folder_keeps_only_the_lean_run_when_every_checker_ran_per_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CHECKERS, WholeOnly.name, WholeOnly())  # every shipped checker has per-session steps
    whole_only_checker = WholeOnly.name
    d = _write(tmp_path / "run", reset=False, shift=False)
    names = ["ownership", "no_resurrection", "no_unexpected_5xx"]
    fc = check_folder(d, names, per_session=True)
    assert fc.whole == [] and isinstance(fc.run, LeanRun)
    assert fc.verdicts == run_checkers(RunData.load(d), names)
    mixed = check_folder(d, [*names, whole_only_checker], per_session=True)  # one without steps: loaded whole
    assert whole_only_checker in mixed.whole and not isinstance(mixed.run, LeanRun)


def test_a_stale_verdicts_file_is_rechecked_by_the_report_and_the_judgement(tmp_path: Path) -> None:
    d = _write(tmp_path / "run", reset=True, shift=False)
    (d / "verdicts.meta.json").write_text(json.dumps({"checkers": "old", "inputs": "old"}))
    want = run_checkers(RunData.load(d))
    j = judge(d)
    assert j.verdicts == want and any("re-checked" in n for n in j.notes)
    assert json.loads((d / RUN_FILES["verdicts"]).read_text()) == want
