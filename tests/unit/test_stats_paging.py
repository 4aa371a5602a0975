"""The fake's execution log a ``/stats`` page at a time, and the runner paging through it (issue 13).

The whole log in one body grew with the run (~1.4 MB of JSON per 1,000 sessions, encoded by the fake and held
twice by the harness); a page holds ``limit`` routing keys. The runner must record the same probe and write the
same ``backend_executions.json`` bytes as from one GET, and still work against a backend that does not page.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.fake_sglang.app import create_app
from harness.history import History
from harness.runner import _drive
from harness.runner._drive import ExecutionsFile, backend_probe, control_client
from harness.seams import LoopClock

KEYS = ["b", "a", "s-10", "s-9", "caf\u00e9", "\ud800odd", "z\U0001f600", "a b&c=d"]


def _fake() -> Any:
    app = create_app(boot_id="boot-7")
    for i, k in enumerate(KEYS):
        app.executions[k] = [{"rid": f"r{i}-{j}", "outcome": "completed", "n": j} for j in range(i % 3 + 1)]
    return app


class Counting(httpx.AsyncBaseTransport):
    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.urls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return await self.inner.handle_async_request(request)


async def _get(app: Any, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as c:
        return await c.get(url)


def test_the_fake_pages_its_log_in_key_order_and_plain_stats_is_unchanged() -> None:
    app = _fake()
    whole = asyncio.run(_get(app, "/stats")).json()
    assert "next" not in whole and list(whole["executions"]) == KEYS  # the plain answer, as before
    got: dict[str, Any] = {}
    pages, cursor = 0, None
    while True:
        q = "/stats?limit=3" + (f"&after={cursor}" if cursor else "")
        r = asyncio.run(_get(app, q))
        assert r.status_code == 200
        body = r.json()
        assert len(body["executions"]) <= 3 and body["boot_id"] == "boot-7" and body["keys"] == len(KEYS)
        assert not set(body["executions"]) & set(got)
        got.update(body["executions"])
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    assert list(got) == sorted(KEYS) and got == whole["executions"]  # every key once, a lone surrogate too


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=abc", "limit=100001", "after=xyz", "after=d8"])
def test_bad_paging_parameters_are_a_400(query: str) -> None:
    r = asyncio.run(_get(_fake(), f"/stats?{query}"))
    assert r.status_code == 400, r.text
    assert "/stats" in r.json()["error"]["message"]


def _probe(transport: httpx.AsyncBaseTransport, into: Any = None) -> tuple[dict[str, Any], History]:
    async def go() -> tuple[dict[str, Any], History]:
        h = History(LoopClock())
        control = control_client(transport)
        try:
            return await backend_probe(h, control, "http://fake", into=into), h
        finally:
            await control.aclose()

    return asyncio.run(go())


def _probe_body(h: History) -> dict[str, Any]:
    (done,) = [e for e in h.events if e["type"] != "invoke"]
    assert done["type"] == "ok" and done["value"] == "backend_stats", done
    return dict(done["body"])


MARKS = {"boot_id": "boot-7", "resets": 0, "executions": sum(i % 3 + 1 for i in range(len(KEYS)))}


def test_the_runner_pages_through_the_log_and_records_the_probe_as_one_get_did(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_drive, "STATS_PAGE", 3)
    app = _fake()
    whole = asyncio.run(_get(app, "/stats")).json()["executions"]
    t = Counting(app)
    execs, h = _probe(t)
    assert execs == whole and _probe_body(h) == MARKS
    assert len(t.urls) == 3 and all("limit=3" in u for u in t.urls)  # pages, not the whole log at once
    assert all("note" not in e for e in h.events)  # the fake's cursors end the paging
    spill = ExecutionsFile(tmp_path)
    t = Counting(app)
    assert _probe(t, into=spill)[0] == {}
    spill.write(tmp_path / "backend_executions.json")
    assert (tmp_path / "backend_executions.json").read_bytes() == json.dumps(whole, sort_keys=True).encode()
    assert len(t.urls) == 3


class NoPaging:
    """A backend that knows no paging: the whole log whatever the query, or a 400 to a query it does not know."""

    def __init__(self, refuse: bool) -> None:
        self.app, self.refuse, self.urls = _fake(), refuse, []  # type: list[str]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.urls.append(scope["path"] + "?" + scope["query_string"].decode())
        if self.refuse and scope["query_string"]:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"unknown parameter"})
            return
        scope = {**scope, "query_string": b""}
        await self.app(scope, receive, send)


@pytest.mark.parametrize("refuse", [False, True])
def test_a_backend_without_paging_still_gives_its_whole_log(refuse: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_drive, "STATS_PAGE", 3)
    backend = NoPaging(refuse)
    execs, h = _probe(httpx.ASGITransport(app=backend))
    assert list(execs) == KEYS and _probe_body(h) == MARKS
    assert backend.urls == (["/stats?limit=3", "/stats?"] if refuse else ["/stats?limit=3"])


class Failing(NoPaging):
    """Pages that fail halfway."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.urls.append(scope["query_string"].decode())
        if len(self.urls) > 1:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"down"})
            return
        body = json.dumps({"boot_id": "x", "resets": 0, "executions": {"k": [{}]}, "next": "6b"}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def test_paging_that_fails_halfway_is_recorded_as_a_failed_probe(tmp_path: Path) -> None:
    backend = Failing(refuse=False)
    spill = ExecutionsFile(tmp_path)
    execs, h = _probe(httpx.ASGITransport(app=backend))
    assert execs == {}
    (done,) = [e for e in h.events if e["type"] != "invoke"]
    assert done["type"] == "fail" and "body" not in done
    assert len(backend.urls) == 2
    spill.drop()
    spill.write(tmp_path / "e.json")
    assert (tmp_path / "e.json").read_text() == "{}"


BROKEN = {  # the ``next`` of paged request n (1, 2, ...): paging that would never end
    "stuck": lambda n: "6b",  # a cursor that does not move
    "cycle": lambda n: "61" if n % 2 else "62",  # A -> B -> A -> ...
    "backwards": lambda n: f"{100 - n:02x}",  # each one before the last
    "endless": lambda n: "61" * n,  # always after the last, never the end
}


class Broken(NoPaging):
    """Paged answers whose cursors never end the paging (``BROKEN``); the whole log to a plain GET. After
    ``GIVE_UP`` paged requests it answers 503, so a runner that loops fails rather than hangs the test."""

    GIVE_UP = 50

    def __init__(self, kind: str, keys: bool) -> None:
        super().__init__(refuse=False)
        self.next, self.keys, self.paged = BROKEN[kind], keys, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not scope["query_string"]:
            await super().__call__(scope, receive, send)  # the whole log
            return
        self.urls.append(scope["path"] + "?" + scope["query_string"].decode())
        self.paged += 1
        if self.paged > self.GIVE_UP:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"looped"})
            return
        k = KEYS[self.paged % len(KEYS)]
        body: dict[str, Any] = {"boot_id": "boot-7", "resets": 0, "executions": {k: self.app.executions[k]}}
        body["next"] = self.next(self.paged)
        if self.keys:
            body["keys"] = len(KEYS)
        raw = json.dumps(body).encode("utf-8", "surrogatepass")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": raw})


@pytest.mark.parametrize(
    ("kind", "keys"),
    [("stuck", False), ("cycle", False), ("cycle", True), ("backwards", True), ("endless", True)],
)
def test_paging_that_would_never_end_falls_back_to_one_plain_get(
    kind: str, keys: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_drive, "STATS_PAGE", 3)
    whole = asyncio.run(_get(_fake(), "/stats")).json()["executions"]
    backend = Broken(kind, keys)
    execs, h = _probe(httpx.ASGITransport(app=backend))
    assert execs == whole and _probe_body(h) == MARKS  # the whole log, counted once
    (done,) = [e for e in h.events if e["type"] != "invoke"]
    assert "plain GET" in done["note"], done
    assert backend.urls[-1] == "/stats?" and all("limit=3" in u for u in backend.urls[:-1])
    # the fake's log of 8 keys takes 3 pages of 3: no more than 2 over that, then the plain GET
    assert len(backend.urls) - 1 <= 3 + _drive.PAGE_SLACK
    spill = ExecutionsFile(tmp_path)  # streamed: the pages' keys overwritten by the whole log's
    _probe(httpx.ASGITransport(app=Broken(kind, keys)), into=spill)
    spill.write(tmp_path / "e.json")
    assert (tmp_path / "e.json").read_bytes() == json.dumps(whole, sort_keys=True).encode()
