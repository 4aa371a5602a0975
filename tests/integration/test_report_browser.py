"""report.html renders in a real browser: no console errors, every plot visible, the cause shown.

On a run page the timeline, the violation list, the replay command, the metadata and the
clock badge are visible, and following a violation's op link lands on a visible op-table row
whose link lands on a visible timeline bar; the suite page shows the failing checkers by name.

Drives Debian's headless Chromium over the DevTools protocol (a websocket on
loopback, through aiohttp, already a dependency: no browser download, no
driver). Outside CI a machine without Chromium skips with the fix in the
reason; in CI (``CI`` set) a missing Chromium is a failure, because
``tests/browser_setup.sh`` should have installed it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.report import build_suite_report

try:
    from tests.unit.report_fixtures import write_suite
except ImportError:  # tests/ is not a package
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from report_fixtures import write_suite  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def _chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must call `bash tests/browser_setup.sh` before the tests")
    pytest.skip(f"{CHROMIUM} not installed (not in CI): run `bash tests/browser_setup.sh` to enable this test")


class Page:
    """One page over the DevTools protocol, collecting console errors and exceptions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.loaded = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                self.errors.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                self.errors.append(f"log {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
            elif method == "Page.loadEventFired":
                self.loaded.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = fut
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def open(self, url: str) -> None:
        self.loaded.clear()
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(self.loaded.wait(), 30)
        await asyncio.sleep(0.3)  # let late console messages arrive

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    binary = _chromium()
    profile = tmp_path / "profile"
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            if proc.returncode is not None:
                pytest.fail(f"chromium exited with {proc.returncode} before opening DevTools")
            await asyncio.sleep(0.1)
        else:
            pytest.fail("chromium did not open its DevTools port within 30 s")
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json(content_type=None)
            target = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                p = Page(ws)
                for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                    await p.send(domain)
                try:
                    yield p
                finally:
                    p.reader.cancel()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


IMAGES_JS = """
Promise.all([...document.images].map(img => img.decode().catch(() => null))).then(() =>
  [...document.images].map(img => ({alt: img.alt, complete: img.complete, width: img.naturalWidth,
                                     height: img.naturalHeight, shown: img.getBoundingClientRect().width})))
"""


async def _check_page(page: Page, html_file: Path) -> list[dict[str, Any]]:
    await page.open(html_file.as_uri())
    images: list[dict[str, Any]] = await page.evaluate(IMAGES_JS)
    title = await page.evaluate("document.title")
    assert title, html_file
    return images


VISIBLE_JS = """
(sel => [...document.querySelectorAll(sel)].map(el => {
  const r = el.getBoundingClientRect();
  const st = getComputedStyle(el);
  return {id: el.id, w: r.width, h: r.height, shown: st.visibility !== 'hidden' && st.display !== 'none'};
}))(%s)
"""

FOLLOW_JS = """
(href => { location.hash = href; const el = document.getElementById(href.slice(1));
  if (!el) return null; el.scrollIntoView(); const r = el.getBoundingClientRect();
  return {w: r.width, h: r.height, inView: r.bottom > 0 && r.top < innerHeight,
          next: (el.querySelector('a[href^="#tl-"]') || {}).getAttribute ?
                el.querySelector('a[href^="#tl-"]').getAttribute('href') : null}; })(%s)
"""


async def _visible(page: Page, selector: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(VISIBLE_JS % json.dumps(selector))
    return found


async def _check_the_cause(page: Page, suite: Path) -> None:
    await page.open((suite / "report.html").as_uri())
    for sel in ("a.failing-checker", "li.attention-line", "#virtual-note"):
        found = await _visible(page, sel)
        assert found and all(f["w"] > 0 and f["h"] > 0 and f["shown"] for f in found), (sel, found)
    run = suite / "abort_retry" / "report.html"
    await page.open(run.as_uri())
    for sel in ("#timeline-svg", "rect.violation-op", "#replay", "#meta", "#clock-badge", "#description",
                "ol.violations li", "#op-table", "p.attention", "p.more"):  # fmt: skip
        found = await _visible(page, sel)
        assert found and all(f["w"] > 0 and f["h"] > 0 and f["shown"] for f in found), (sel, found)
    assert len(await _visible(page, "ol.violations li")) == 20
    links: list[str] = await page.evaluate(
        "[...document.querySelectorAll('a.op-link')].map(a => a.getAttribute('href'))"
    )
    assert links
    for href in links[:6]:
        row = await page.evaluate(FOLLOW_JS % json.dumps(href))
        assert row and row["w"] > 0 and row["inView"], (href, row)
        assert row["next"], href  # the row links to its bar on the timeline
        bar = await page.evaluate(FOLLOW_JS % json.dumps(row["next"]))
        assert bar and bar["w"] > 0 and bar["inView"], (row["next"], bar)
    assert page.errors == [], page.errors
    await page.open((suite / "lock_restore" / "report.html").as_uri())
    badge = await page.evaluate("document.getElementById('clock-badge').textContent")
    assert badge == "live · wall clock"
    assert page.errors == [], page.errors


async def test_report_html_renders_every_plot_and_shows_the_cause(page: Page, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "latest", seed=5, sessions=15)
    build_suite_report(suite)
    pages = [suite / "report.html", *sorted(suite.glob("*/report.html"))]
    assert len(pages) == 4
    for html_file in pages:
        summary = json.loads((html_file.parent / "summary.json").read_text())
        images = await _check_page(page, html_file)
        assert len(images) == len(summary["plots"]) > 0, html_file
        for img in images:
            assert img["complete"] and img["width"] > 0 and img["height"] > 0, (html_file, img)
            assert img["shown"] > 0, (html_file, img)
        assert page.errors == [], (html_file, page.errors)
    await _check_the_cause(page, suite)


async def test_the_browser_check_catches_a_broken_page(page: Page, tmp_path: Path) -> None:
    """Negative control: the same checks flag a missing image and a console error."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img src="data:image/png;base64,AAAA" alt="broken">'
        "<script>console.error('boom')</script></body></html>"
    )
    images = await _check_page(page, bad)
    assert images[0]["width"] == 0
    assert any("boom" in e for e in page.errors)


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"browser_setup\.sh"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"browser_setup\.sh"):
        _chromium()
