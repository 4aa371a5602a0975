"""The simulated deployment: host routing, process kill/restart, orphaned requests, user targets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harness.scenario import parse_scenario
from harness.sim import make_strategy, run
from harness.sim.world import BACKEND_URL, SimNetwork, build_world, load_target, server_url

SC = parse_scenario({"name": "w", "target": {"processes": 2}, "workload": {"sessions": 1}})


def _slow_app(log: list[str]) -> Starlette:
    async def slow(request: Request) -> JSONResponse:
        log.append("start")
        await asyncio.sleep(1.0)
        log.append("end")  # reached even when the client gave up: servers do not see client timeouts
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/slow", slow)])


def test_unknown_host_and_dead_process_refuse_connections() -> None:
    world = build_world(SC, 1)

    async def main() -> list[str]:
        out = []
        async with httpx.AsyncClient(transport=world.network) as c:
            assert (await c.get(f"{server_url(0)}/health")).status_code == 200
            assert (await c.get(f"{BACKEND_URL}/health")).status_code == 200
            for url in ("http://nowhere.sim:1/health", f"{server_url(1)}/health"):
                if url.startswith(server_url(1)):
                    await world.processes.kill(1)
                try:
                    await c.get(url)
                except httpx.ConnectError as exc:
                    out.append(str(exc))
        return out

    errors, _ = run(main())
    assert len(errors) == 2
    assert "no such host" in errors[0] and "process is down" in errors[1]


def test_kill_drops_inflight_requests_and_state_restart_is_empty() -> None:
    world = build_world(SC, 1)

    async def main() -> tuple[str, int, int]:
        async with httpx.AsyncClient(transport=world.network) as c:
            sid = (await c.post(f"{server_url(0)}/sessions")).json()["session_id"]
            body = {"messages": [{"role": "user", "content": "hi"}]}
            chat = asyncio.create_task(c.post(f"{server_url(0)}/sessions/{sid}/v1/chat/completions", json=body))
            await asyncio.sleep(0.001)  # the chat is now in the server (waiting for the backend)
            await world.processes.kill(0)
            try:
                await chat
                kind = "answered"
            except httpx.RemoteProtocolError:
                kind = "dropped"
            await world.processes.restart(0)
            after = (await c.get(f"{server_url(0)}/sessions/{sid}")).status_code
            pid = (await c.get(f"{server_url(0)}/stats")).json()["pid"]
        return kind, after, pid

    (kind, after, pid), _ = run(main())
    assert kind == "dropped"
    assert after == 404, "a restarted process must come back empty"
    assert pid == 40001, "restart 1 of process 0: a new, deterministic pid"
    assert all(ln["pid"] == 40000 for ln in world.server_logs() if ln["event"] == "chat_start")
    assert not [ln for ln in world.server_logs() if ln["event"] == "chat_done"], "SIGKILL leaves no chat_done"


def test_client_timeout_does_not_cancel_the_server_handler() -> None:
    log: list[str] = []
    net = SimNetwork()
    net.add("app.sim:1", _slow_app(log))

    async def main() -> str:
        async with httpx.AsyncClient(transport=net) as c:
            try:
                async with asyncio.timeout(0.1):
                    await c.get("http://app.sim:1/slow")
            except TimeoutError:
                pass
            await asyncio.sleep(2.0)
        return "done"

    run(main())
    assert log == ["start", "end"]


def test_read_timeout_is_virtual() -> None:
    net = SimNetwork()
    net.add("app.sim:1", _slow_app([]))

    async def main() -> float:
        async with httpx.AsyncClient(transport=net, timeout=0.25) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get("http://app.sim:1/slow")
        return asyncio.get_running_loop().time()

    t, _ = run(main())
    assert t == pytest.approx(0.25)


def factory_with_some_kwargs(backend_url: str, pid: int, worker_port: int) -> Starlette:
    async def who(request: Request) -> JSONResponse:
        return JSONResponse({"backend_url": backend_url, "pid": pid, "port": worker_port})

    return Starlette(routes=[Route("/who", who)])


def test_user_target_gets_only_the_kwargs_it_accepts() -> None:
    make = load_target(f"asgi:{__name__}:factory_with_some_kwargs", SC)
    app: Any = make(1, 0, 5, SimNetwork(), lambda e: None)
    net = SimNetwork()
    net.add("me.sim:1", app)

    async def main() -> Any:
        async with httpx.AsyncClient(transport=net) as c:
            return (await c.get("http://me.sim:1/who")).json()

    body, _ = run(main())
    assert body == {"backend_url": BACKEND_URL, "pid": 40100, "port": 31001}


@pytest.mark.parametrize("spec", ["asgi:nope", "asgi:no_such_module_xyz:f", f"asgi:{__name__}:SC"])
def test_bad_target_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match="--target"):
        load_target(spec, SC)


def test_urls_target_needs_an_asgi_factory() -> None:
    sc = parse_scenario({"name": "u", "target": {"kind": "urls", "urls": ["http://127.0.0.1:1"]}})
    with pytest.raises(ValueError, match="asgi:module:factory"):
        build_world(sc, 0)


def test_world_is_deterministic_across_builds() -> None:
    def once() -> list[str]:
        world = build_world(SC, 3)

        async def main() -> list[str]:
            async with httpx.AsyncClient(transport=world.network) as c:
                rs = await asyncio.gather(*(c.post(f"{server_url(i % 2)}/sessions") for i in range(4)))
            return [r.json()["session_id"] for r in rs]

        return list(run(main(), strategy=make_strategy("random", 3))[0])

    assert once() == once()
