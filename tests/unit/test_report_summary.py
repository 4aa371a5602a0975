"""summary.json: the versioned schema, SLOs, breakdown, determinism; report.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.report import SCHEMA_VERSION, build_run_report
from harness.report.buckets import CLIENT_SERIES, SERVER_BUCKETS, extract
from harness.report.summary import compose_status, evaluate_slos

try:
    from tests.unit.report_fixtures import make_run, write_run
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import make_run, write_run  # type: ignore[no-redef]

DOC = Path(__file__).resolve().parents[2] / "docs" / "report_schema.md"
RUN_KEYS = {
    "schema_version", "kind", "scenario", "status", "verdicts", "slo", "percentiles", "latency",
    "breakdown", "out_of_range", "ops", "counts", "time_span", "harness", "plots", "unknown", "faults",
    "verdict",
    "clock", "replay", "meta", "violation_ops", "timeline",
}  # fmt: skip
STATS_KEYS = {"n", "out_of_range", "missing", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "min_ms", "mean_ms"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run") / "abort_retry"
    return write_run(d, seed=4, name="abort_retry", sessions=25, slo={"total_ms": {"p99_ms": 5.0}})


@pytest.fixture(scope="module")
def summary(run_dir: Path) -> dict:
    return build_run_report(run_dir)


def test_summary_has_the_versioned_schema(summary: dict, run_dir: Path) -> None:
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert summary["schema_version"] == SCHEMA_VERSION == 1
    assert summary["kind"] == "run"
    assert set(summary) == RUN_KEYS
    assert set(summary["latency"]["server"]) == set(SERVER_BUCKETS)
    assert set(summary["latency"]["client"]) == set(CLIENT_SERIES)
    for group in [*summary["latency"]["server"].values(), *summary["latency"]["client"].values()]:
        assert set(group) == {"all", "by_outcome", "by_variant", "by_process"}
        assert set(group["all"]) >= STATS_KEYS
        assert {"level", "p50_ms", "p99_ms"} <= set(group["all"]["ci"])
        for split in ("by_outcome", "by_variant", "by_process"):
            for stats in group[split].values():
                assert set(stats) >= STATS_KEYS
    assert summary["scenario"]["name"] == "abort_retry"


def test_every_summary_field_is_documented(summary: dict) -> None:
    doc = DOC.read_text()
    assert "schema_version" in doc
    for key in RUN_KEYS | STATS_KEYS:
        assert re.search(rf"`{re.escape(key)}`", doc), f"{key} missing from docs/report_schema.md"


def test_counts_match_the_recorded_data(summary: dict, run_dir: Path) -> None:
    lines = [json.loads(x) for x in (run_dir / "server_logs.jsonl").read_text().splitlines()]
    chat_done = [x for x in lines if x["event"] == "chat_done"]
    assert summary["counts"]["chat_done"] == len(chat_done)
    assert summary["latency"]["server"]["total_ms"]["all"]["n"] == len(chat_done)
    assert summary["counts"]["server_processes"] == 2
    assert summary["counts"]["chaos_events"] == 1
    assert summary["counts"]["fault_events"] > 0


def test_status_composes_the_verdicts(summary: dict) -> None:
    assert summary["status"] == "invalid"
    assert compose_status(["valid", "unknown"]) == "unknown"
    assert compose_status(["valid"]) == "valid"
    assert compose_status([]) == "unknown"
    bad = next(v for v in summary["verdicts"] if v["checker"] == "unexpected_5xx")
    assert bad["violations"] == 1 and bad["examples"][0]["ops"] == [3, 4]


def test_slo_failure_is_in_the_summary(summary: dict) -> None:
    (check,) = summary["slo"]["checks"]
    assert summary["slo"]["status"] == "fail"
    assert check["series"] == "total_ms" and check["status"] == "fail" and check["observed_ms"] > 5.0


def test_slo_pass_no_data_and_bad_keys() -> None:
    run, _ = make_run(seed=1, sessions=5)
    data = extract(run)
    ok = evaluate_slos({"slo": {"total_ms": {"p99_ms": 1e7, "p50_ms": 1e7}, "client_turn_ms": {"max_ms": 1e9}}}, data)
    assert ok["status"] == "pass" and len(ok["checks"]) == 3
    data.server.clear()
    empty = evaluate_slos({"slo": {"total_ms": {"p99_ms": 10}}}, data)
    assert empty["status"] == "no_data"
    bad = evaluate_slos({"slo": {"nonsense_ms": {"p99_ms": 10}}}, data)
    assert bad["status"] == "fail" and bad["checks"][0]["status"] == "error"
    assert evaluate_slos({}, data)["status"] == "none"


def test_slo_in_the_scenario_loaders_spelling() -> None:
    """harness.scenario stores ``[slo] p99_total_ms = 2000`` as ``{"total_ms": 2000.0}``."""
    run, _ = make_run(seed=1, sessions=5)
    data = extract(run)
    result = evaluate_slos({"slo": {"total_ms": 1e7, "p99_client_request_ms": 0.001}}, data)
    by_series = {c["series"]: c for c in result["checks"]}
    assert by_series["total_ms"]["key"] == "p99_ms" and by_series["total_ms"]["status"] == "pass"
    assert by_series["client_request_ms"]["status"] == "fail"
    assert result["status"] == "fail"


def test_breakdown_parts_add_up_to_total(summary: dict) -> None:
    for key in ("p50", "p99"):
        row = summary["breakdown"][key]
        parts = sum(row[b] for b in SERVER_BUCKETS[:-1]) + row["other_ms"]
        assert parts == pytest.approx(row["total_ms"], abs=0.01)
    assert summary["breakdown"]["p99"]["total_ms"] > summary["breakdown"]["p50"]["total_ms"]


def test_report_is_deterministic(run_dir: Path, summary: dict) -> None:
    md = (run_dir / "report.md").read_text()
    page = (run_dir / "report.html").read_text()
    junit = (run_dir / "junit.xml").read_text()
    again = build_run_report(run_dir)  # meta.json from the first build is read back: same host, date, commit
    assert again == summary
    assert (run_dir / "report.md").read_text() == md
    assert (run_dir / "report.html").read_text() == page and (run_dir / "junit.xml").read_text() == junit
    assert "# Run `abort_retry`: INVALID" in md
    for plot in summary["plots"]:
        assert f"]({plot})" in md


def test_run_without_verdicts_or_history_still_reports(tmp_path: Path) -> None:
    run, _ = make_run(seed=2, sessions=2)
    run.save(tmp_path / "r")
    summary = build_run_report(tmp_path / "r")  # no verdicts.json: the report checks the run (never a stale one)
    assert summary["verdicts"] and (tmp_path / "r" / "verdicts.json").is_file()
    assert summary["verdict"]["notes"] == ["re-checked: no verdicts.json"]
    (tmp_path / "cut").mkdir()
    run.save(tmp_path / "cut")
    (tmp_path / "cut" / "error.txt").write_text("the run crashed")  # a crashed run is not checked
    cut = build_run_report(tmp_path / "cut")
    assert cut["verdicts"] == [] and cut["status"] == "unknown"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "scenario.json").write_text('{"name": "empty"}')
    empty = build_run_report(tmp_path / "empty")
    assert empty["latency"]["server"]["total_ms"]["all"]["n"] == 0
    assert all((tmp_path / "empty" / p).stat().st_size > 0 for p in empty["plots"])
