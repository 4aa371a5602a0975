"""report.html is self-contained and shows the cause; junit.xml: a case per scenario x checker; the suite report."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import build_suite_report
from harness.report.meta import MetaSource, load_or_collect
from harness.report.palette import CHAOS_COLOR, FAULT_COLOR, OUTCOME_COLORS, VIOLATION_COLOR

try:
    from tests.unit.report_fixtures import ABORT_RETRY_DESCRIPTION, ABORT_RETRY_VIOLATIONS, write_suite
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import (  # type: ignore[no-redef]
        ABORT_RETRY_DESCRIPTION,
        ABORT_RETRY_VIOLATIONS,
        write_suite,
    )

META = MetaSource.fixed(now=1_764_590_400.0, host="ci-box-7", cores=2, commit="0123abcd")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def ids(self) -> set[str]:
        return {a["id"] or "" for _, a in self.tags if a.get("id")}

    def hrefs(self, cls: str | None = None) -> list[str]:
        return [
            a["href"] or ""
            for t, a in self.tags
            if t == "a" and a.get("href") and (cls is None or cls in (a.get("class") or "").split())
        ]


def _parse(page: Path) -> _Collect:
    parser = _Collect()
    parser.feed(page.read_text())
    return parser


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = write_suite(tmp_path_factory.mktemp("suite") / "latest", seed=3, sessions=20)
    build_suite_report(d, meta=META)
    return d


def _pages(suite_dir: Path) -> list[Path]:
    return [suite_dir / "report.html", *sorted(suite_dir.glob("*/report.html"))]


def test_html_is_self_contained(suite_dir: Path) -> None:
    pages = _pages(suite_dir)
    assert len(pages) == 4
    for page in pages:
        text = page.read_text()
        parser = _Collect()
        parser.feed(text)
        assert not any(tag == "script" for tag, _ in parser.tags), page
        assert not any(tag == "link" for tag, _ in parser.tags), page
        for tag, attrs in parser.tags:
            for name in ("src", "href"):
                value = attrs.get(name) or ""
                assert not value.startswith(("http://", "https://", "//")), (page, tag, value)
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert "url(" not in text


def test_html_embeds_every_plot_as_a_png_data_uri(suite_dir: Path) -> None:
    for page in _pages(suite_dir):
        summary = json.loads((page.parent / "summary.json").read_text())
        parser = _Collect()
        parser.feed(page.read_text())
        imgs = [attrs for tag, attrs in parser.tags if tag == "img"]
        assert len(imgs) == len(summary["plots"]) > 0
        for attrs in imgs:
            src = attrs["src"] or ""
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
            assert attrs.get("alt")


def test_run_junit_has_one_case_per_checker_and_slo(suite_dir: Path) -> None:
    root = ET.parse(suite_dir / "lock_restore" / "junit.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {
        "no_lost_turns",
        "provisional",
        "unexpected_5xx",
        "liveness",
        "slo:total_ms:p99_ms",
        "verdict",
    }
    assert cases["unexpected_5xx"].find("failure") is not None
    assert cases["liveness"].find("skipped") is not None
    assert cases["no_lost_turns"].find("failure") is None and cases["no_lost_turns"].find("skipped") is None
    assert cases["slo:total_ms:p99_ms"].find("failure") is not None
    assert cases["verdict"].find("failure") is not None  # the one verdict: fails when the run does
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "3", "1")
    assert all(c.get("classname") == "scenario.lock_restore" for c in cases.values())


def test_suite_junit_has_every_scenario_x_checker(suite_dir: Path) -> None:
    root = ET.parse(suite_dir / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"abort_retry", "clean", "lock_restore"}
    n_cases = sum(len(s.findall("testcase")) for s in suites.values())
    assert root.get("tests") == str(n_cases)
    assert root.get("failures") == str(sum(len(s.findall("testcase/failure")) for s in suites.values()))
    assert root.get("skipped") == str(sum(len(s.findall("testcase/skipped")) for s in suites.values()))
    clean = {c.get("name") for c in suites["clean"].findall("testcase")}
    assert {"no_lost_turns", "liveness", "slo:total_ms:p99_ms", "slo:client_turn_ms:p50_ms"} <= clean
    assert not suites["clean"].findall("testcase/failure")


def test_suite_summary(suite_dir: Path) -> None:
    summary = json.loads((suite_dir / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["kind"] == "suite"
    assert summary["counts"] == {"scenarios": 3, "valid": 1, "invalid": 2, "unknown": 0}
    assert summary["status"] == "invalid" and summary["slo_failed"] == 1
    rows = {r["name"]: r for r in summary["scenarios"]}
    assert rows["lock_restore"]["variant"] == "lock_restoration"
    assert rows["clean"]["slo"] == "pass"
    assert rows["abort_retry"]["total_ms"]["n"] > 0
    md = (suite_dir / "report.md").read_text()
    assert "| lock_restore | lock_restoration | invalid |" in md


def test_suite_page_links_every_run_report_relatively(suite_dir: Path) -> None:
    from urllib.parse import unquote

    parser = _Collect()
    parser.feed((suite_dir / "report.html").read_text())
    hrefs = [attrs["href"] or "" for tag, attrs in parser.tags if tag == "a"]
    pages = {unquote(h.split("#")[0]) for h in hrefs}
    assert pages == {"abort_retry/report.html", "clean/report.html", "lock_restore/report.html"}
    for page in pages:
        assert (suite_dir / page).is_file(), page


def test_suite_page_names_failing_checkers_and_undecided_lines(suite_dir: Path) -> None:
    text = (suite_dir / "report.html").read_text()
    parser = _parse(suite_dir / "report.html")
    failing = parser.hrefs("failing-checker")
    assert sorted(failing) == ["abort_retry/report.html#violations", "lock_restore/report.html#violations"]
    assert ">unexpected_5xx</a>" in text
    summary = json.loads((suite_dir / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["scenarios"]}
    assert rows["abort_retry"]["failing"] == ["unexpected_5xx"] and rows["clean"]["failing"] == []
    assert rows["abort_retry"]["unknown_verdicts"] == [{"checker": "liveness", "reason": "2 requests timed out"}]
    assert rows["abort_retry"]["not_exercised_faults"][0]["by"] == "backend.rules[0]"
    unknown = "UNKNOWN 1 of 4 verdicts (not checked, not passed): liveness: 2 requests timed out"
    not_exercised = "declared but not exercised: http_504 (backend.rules[0])"
    assert rows["abort_retry"]["attention"] == [unknown, not_exercised]
    assert rows["clean"]["attention"] == []
    md = (suite_dir / "report.md").read_text()
    for doc in (text, md):
        assert unknown in doc and not_exercised in doc
    assert "| abort_retry | default | invalid | unexpected_5xx | 25 | 1 | 1 |" in md
    assert "virtual time" in text  # one run of the suite is a simulation


def test_run_page_lists_violations_with_op_links_into_the_op_table_and_timeline(suite_dir: Path) -> None:
    page = suite_dir / "abort_retry" / "report.html"
    parser = _parse(page)
    ids = parser.ids()
    items = [a for t, a in parser.tags if t == "li" and (a.get("id") or "").startswith("v-")]
    assert len(items) == 20  # the first 20 of 25 ...
    text = page.read_text()
    assert f"{ABORT_RETRY_VIOLATIONS - 20} more: the full list is in" in text  # ... says how many more
    assert "verdicts.json" in parser.hrefs() and (page.parent / "verdicts.json").is_file()
    op_links = parser.hrefs("op-link")
    assert len(op_links) == 2 * 20
    summary = json.loads((page.parent / "summary.json").read_text())
    rows = {f"op-{o['index']}" for o in summary["violation_ops"]}
    for href in op_links:
        assert href.startswith("#op-") and href[1:] in ids and href[1:] in rows, href
    bars = [a for t, a in parser.tags if t == "rect" and "violation-op" in (a.get("class") or "")]
    assert summary["timeline"]["anchored"] == sorted(o["index"] for o in summary["violation_ops"])  # all drawn
    assert {f"tl-{i}" for i in summary["timeline"]["anchored"]} <= ids
    assert bars and all(b["stroke"] == VIOLATION_COLOR for b in bars)
    assert len(parser.hrefs()) > len([h for h in parser.hrefs() if h.startswith("#tl-")]) >= len(bars)
    for href in parser.hrefs():  # every in-page link lands on an element
        if href.startswith("#"):
            assert href[1:] in ids, href
    svg = (page.parent / "plots" / "timeline.svg").read_text()
    assert svg.startswith("<svg") and svg.strip() in text  # inlined, not fetched


def test_run_page_has_replay_description_metadata_and_the_virtual_badge(suite_dir: Path) -> None:
    sim = (suite_dir / "abort_retry" / "report.html").read_text()
    live = (suite_dir / "lock_restore" / "report.html").read_text()
    assert "harness replay scenarios/abort_retry.toml --seed 3 --strategy random" in sim
    assert "harness run scenarios/lock_restore.toml --seed 4 --variant lock_restoration" in live
    assert ABORT_RETRY_DESCRIPTION.splitlines()[0] in sim and "must supersede" in sim
    assert 'id="description"' not in live  # no description, no empty box
    for page in (sim, live):
        for value in ("ci-box-7", "0123abcd", "2025-12-01T12:00:00Z", "0.0.0", 'id="meta"'):
            assert value in page, value
    assert "SIMULATION · virtual time" in sim and "virtual time (the simulated clock)" in sim
    assert "SIMULATION" not in live and "live · wall clock" in live
    md = (suite_dir / "abort_retry" / "report.md").read_text()
    assert "**SIMULATION, virtual time.**" in md and "harness replay scenarios/abort_retry.toml" in md
    assert "> Aborted turns are retried by the agents." in md and "| host | ci-box-7 |" in md
    assert "**declared but not exercised: http_504 (backend.rules[0])**" in md
    assert "5 more: the full list is in [verdicts.json](verdicts.json)" in md
    assert "## Operations named by violations" in md


def test_timeline_colours_outcomes_by_a_fixed_palette_apart_from_marks(suite_dir: Path) -> None:
    marks = {FAULT_COLOR.lower(), CHAOS_COLOR.lower(), VIOLATION_COLOR.lower()}
    assert not marks & {c.lower() for c in OUTCOME_COLORS.values()}
    outcomes: set[str] = set()
    for run in ("abort_retry", "clean", "lock_restore"):
        summary = json.loads((suite_dir / run / "summary.json").read_text())
        assert summary["timeline"]["lanes"] == summary["timeline"]["sessions"] == 20
        bars = [
            a
            for t, a in _parse(suite_dir / run / "plots" / "timeline.svg").tags
            if t == "rect" and a.get("data-outcome")
        ]
        assert len(bars) == summary["timeline"]["ops_drawn"] > 0
        for bar in bars:  # the colour is the outcome's, whichever run and whatever other outcomes it has
            assert bar["fill"] == OUTCOME_COLORS[bar["data-outcome"] or ""], bar
        outcomes |= {b["data-outcome"] or "" for b in bars}
    assert {"ok", "aborted", "http_5xx", "unknown"} <= outcomes
    clean = (suite_dir / "clean" / "plots" / "timeline.svg").read_text()
    assert 'class="chaos"' in clean and 'class="fault"' in clean


def test_junit_has_run_durations_checker_names_and_properties(suite_dir: Path) -> None:
    root = ET.parse(suite_dir / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    total = 0.0
    for name, suite in suites.items():
        summary = json.loads((suite_dir / name / "summary.json").read_text())
        span = summary["timeline"]["end_s"] - summary["timeline"]["start_s"]
        assert span > 0
        assert float(suite.get("time") or 0) == pytest.approx(span, abs=1e-3)
        for case in suite.findall("testcase"):
            assert float(case.get("time") or 0) == pytest.approx(span, abs=1e-3)
        total += float(suite.get("time") or 0)
        props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
        assert props["host"] == "ci-box-7" and props["replay"] == summary["replay"]
        assert props["clock"] == ("virtual" if name == "abort_retry" else "wall")
    assert float(root.get("time") or 0) == pytest.approx(total, abs=1e-2)
    fail = suites["abort_retry"].find("testcase[@name='unexpected_5xx']/failure")
    assert fail is not None
    assert (fail.get("message") or "").startswith("checker unexpected_5xx failed: 25 violation(s); first: 500 from")
    assert "5 more in verdicts.json" in (fail.text or "") and "replay: harness replay" in (fail.text or "")


def test_metadata_is_collected_once_then_read_back(tmp_path: Path) -> None:
    first = load_or_collect(tmp_path, META)
    assert json.loads((tmp_path / "meta.json").read_text()) == first
    assert first["host"] == "ci-box-7" and first["date"] == "2025-12-01T12:00:00Z" and first["cores"] == 2
    other = MetaSource.fixed(now=0.0, host="elsewhere", cores=64)
    assert load_or_collect(tmp_path, other) == first  # re-reporting keeps the run's own metadata
    (tmp_path / "meta.json").unlink()
    assert load_or_collect(tmp_path, other)["host"] == "elsewhere"
    system = MetaSource.from_system().collect()  # the real source fills every field
    assert system["cores"] >= 1 and system["host"] and system["harness_version"]
