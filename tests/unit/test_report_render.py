"""report.html is self-contained; junit.xml has one case per scenario x checker; the suite report."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import build_suite_report

try:
    from tests.unit.report_fixtures import write_suite
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import write_suite  # type: ignore[no-redef]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = write_suite(tmp_path_factory.mktemp("suite") / "latest", seed=3, sessions=20)
    build_suite_report(d)
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
    assert set(cases) == {"no_lost_turns", "provisional", "unexpected_5xx", "liveness", "slo:total_ms:p99_ms"}
    assert cases["unexpected_5xx"].find("failure") is not None
    assert cases["liveness"].find("skipped") is not None
    assert cases["no_lost_turns"].find("failure") is None and cases["no_lost_turns"].find("skipped") is None
    assert cases["slo:total_ms:p99_ms"].find("failure") is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
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
