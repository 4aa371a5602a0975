"""The checkers against the real reference server and the real fake SGLang, in-process.

A short, fixed workload (turns, an abort and its retry, concurrent duplicates,
collect + DELETE, a chat and a GET after the DELETE, a DELETE during a slow
proxy) is driven over ``httpx.ASGITransport``; the test records the history by
hand in the contract's format (docs/contracts.md, docs/checkers.md), builds a
:class:`RunData` from it, the server's log lines and the fake's execution log,
and runs every checker. The correct server is valid under all of them; each
known-bad variant is flagged by the checker that exists for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from harness.checkers import check_all
from harness.fake_sglang import create_app as create_fake
from harness.rundata import RunData
from harness.seams import IdSource, InlineExecutor
from reference_impl import ServerConfig, create_app
from reference_impl.logs import ListSink

SERVER = "http://server:9001"
SYSTEM = {"role": "system", "content": "You are a careful agent."}
RECORDED = ("x-sglang-aborted", "x-req-id", "server", "date", "content-length")


class Recorder:
    """The history, written as the runner does: invoke, then one completion with the facts that matter."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []
        self.n = 0
        self.t0 = asyncio.get_running_loop().time()

    def now(self) -> float:
        return round(asyncio.get_running_loop().time() - self.t0, 6)

    def _ev(self, ev: dict[str, Any]) -> dict[str, Any]:
        ev["index"] = len(self.events)
        self.events.append(ev)
        return ev

    async def op(
        self,
        f: str,
        method: str,
        path: str,
        *,
        session: str | None = None,
        turn: int | None = None,
        attempt: int | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        value: Any = None,
    ) -> tuple[httpx.Response, dict[str, Any]]:
        self.n += 1
        op, rid = self.n, f"rq{self.n:04d}"
        base = {"op": op, "process": "agent-0", "f": f, "session": session, "server": SERVER, "turn": turn}
        base.update(attempt=attempt, request_id=rid)
        if value is not None:
            base["value"] = value
        t = self.now()
        self._ev({**base, "type": "invoke", "intended": t, "time": t})
        hdrs = {"x-request-id": rid, **({"x-turn": str(turn), "x-attempt": str(attempt)} if turn is not None else {})}
        hdrs.update(headers or {})
        r = await self.client.request(method, path, json=json, headers=hdrs)
        pairs = [(k.lower(), v) for k, v in r.headers.multi_items()]
        counts: dict[str, int] = {}
        for k, _ in pairs:
            counts[k] = counts.get(k, 0) + 1
        seen = {k: v for k, v in pairs if k in RECORDED}
        cls = [v for k, v in pairs if k == "content-length"]
        done: dict[str, Any] = {
            **base,
            "type": "ok" if r.status_code < 400 or (f == "probe" and r.status_code == 404) else "fail",
            "intended": t,
            "time": self.now(),
            "status": r.status_code,
            "headers": seen,
            "framing": {
                "header_counts": counts,
                "content_length": int(cls[0]) if len(cls) == 1 else None,
                "body_bytes": len(r.content),
            },
        }
        data = r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else None
        if f == "create" and isinstance(data, dict):
            done["session"] = data.get("session_id")
        if f in ("get", "probe") and r.status_code == 200:
            done["body"] = data
        if f == "chat" and r.status_code == 200 and isinstance(data, dict):
            choice = data["choices"][0]
            done["finish_reason"] = choice.get("finish_reason")
            done["aborted"] = r.headers.get("x-sglang-aborted") == "1" or choice.get("finish_reason") == "abort"
        return r, self._ev(done)


async def drive(variants: tuple[str, ...]) -> RunData:
    fake = create_fake(seed=3)
    logs = ListSink()
    cfg = ServerConfig(backend_url="http://fake", variants=frozenset(variants), worker_port=9001)
    app = create_app(
        cfg,
        ids=IdSource(11),
        executor=InlineExecutor(),
        backend_transport=httpx.ASGITransport(app=fake),
        log_sink=logs,
    )
    owners: dict[str, str] = {}
    final: dict[str, dict[str, Any] | None] = {}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SERVER) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fake), base_url="http://fake") as fake_client,
    ):
        rec = Recorder(client)

        async def create() -> str:
            _, ev = await rec.op("create", "POST", "/sessions")
            sid = str(ev["session"])
            owners[sid] = SERVER
            return sid

        async def chat(
            sid: str, msgs: list[dict[str, Any]], turn: int, attempt: int = 0, fault: str | None = None
        ) -> dict[str, Any]:
            r, _ = await rec.op(
                "chat",
                "POST",
                f"/sessions/{sid}/v1/chat/completions",
                session=sid,
                turn=turn,
                attempt=attempt,
                json={"model": "m", "messages": msgs},
                headers={"x-fake-fault": fault} if fault else None,
            )
            if r.status_code == 200:
                return {"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]}
            return {}

        # session A: two turns, an abort and its successful retry, duplicates, collect, DELETE, late ops
        a = await create()
        msgs: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": "hello there"}]
        msgs.append(await chat(a, msgs, 0))
        msgs.append({"role": "user", "content": "and then?"})
        await chat(a, msgs, 1, 0, fault="abort")
        msgs.append(await chat(a, msgs, 1, 1))
        msgs.append({"role": "user", "content": "once more"})
        answers = await asyncio.gather(chat(a, msgs, 2, 0, fault="spike;ms=60"), chat(a, msgs, 2, 1))
        msgs.append(next(x for x in answers if x))
        await rec.op("get", "GET", f"/sessions/{a}", session=a)
        await rec.op("delete", "DELETE", f"/sessions/{a}", session=a)
        msgs.append({"role": "user", "content": "are you still there?"})
        await chat(a, msgs, 3)
        await rec.op("probe", "GET", f"/sessions/{a}", session=a, value="after_delete")

        # session B: DELETE while a slow chat is in its proxy phase
        b = await create()

        async def late_delete() -> None:
            await asyncio.sleep(0.05)
            await rec.op("delete", "DELETE", f"/sessions/{b}", session=b)

        await asyncio.gather(
            chat(b, [SYSTEM, {"role": "user", "content": "slow one"}], 0, 0, "spike;ms=300"), late_delete()
        )

        # session C stays alive
        c = await create()
        await chat(c, [SYSTEM, {"role": "user", "content": "keep me"}], 0)

        for sid in (a, b, c):
            r = await client.get(f"/sessions/{sid}")
            final[sid] = r.json() if r.status_code == 200 else None
        await rec.op("probe", "GET", "/stats", value="stats")
        executions = (await fake_client.get("/stats")).json().get("executions", {})
    await app.state.server.aclose()
    return RunData(
        scenario={
            "name": "in_process",
            "target": {"variants": list(variants), "max_trim_tokens": cfg.max_trim_tokens},
            "backend": {"faults": ["abort", "spike"]},
            "checks": {"enabled": ["all"], "liveness_bound_s": 30.0, "options": {}},
        },
        history=rec.events,
        final_states=final,
        owners=owners,
        backend_executions=executions,
        server_logs=list(logs),
    )


async def test_the_correct_server_passes_every_checker() -> None:
    run = await drive(())
    verdicts = {v.checker: v for v in check_all(run)}
    bad = {n: (v.status, v.notes, [x.message for x in v.violations]) for n, v in verdicts.items() if not v.valid}
    assert bad == {}


@pytest.mark.parametrize(
    ("variant", "checker", "kind"),
    [
        ("auto_create", "no_resurrection", "resurrected"),
        ("commit_aborted", "provisional", "abort_without_header"),
        ("provisional_never_superseded", "provisional", "provisional_not_tail"),
        ("no_num_assistant_guard", "stale_writers", "double_commit"),
        ("no_closing_recheck", "no_resurrection", "write_after_delete"),
        ("leak_deleted", "leaks", "sessions_leak"),
        ("inflight_leak", "log_consistency", "inflight_drift"),
        ("echo_upstream_framing", "http_framing", "duplicate_header"),
    ],
)
async def test_each_known_bad_variant_is_flagged(variant: str, checker: str, kind: str) -> None:
    run = await drive((variant,))
    v = next(v for v in check_all(run, [checker]))
    assert v.status == "invalid", (variant, v.notes)
    assert kind in {x.kind for x in v.violations}, [x.message for x in v.violations]
    assert all(x.ops or x.session for x in v.violations)
