"""In-process runs: the fake SGLang and N reference-server apps behind ASGI transports, no sockets.

The same agents, workload, nemesis and collection as live mode (``drive``),
with every component an ASGI app in this process: a scenario runs in a
fraction of a second plus its backend latency, which makes seeded sweeps and
known-bad-variant matrices affordable in the test suite. It is also the
skeleton simulation mode wraps in a virtual-time loop: pass ``clock`` and
``executor`` and nothing here touches real time or threads.

What cannot exist in process: SIGKILL of a server (``kill_restart`` is
skipped and noted) and transport faults that need a real socket.
"""

from __future__ import annotations

from typing import Any

import httpx

from harness.agents import RouteByHost
from harness.runner._drive import DriveResult, drive
from harness.scenario import Scenario
from harness.seams import Clock, Executor, IdSource, InlineExecutor

__all__ = ["run_inprocess"]


async def run_inprocess(
    sc: Scenario,
    *,
    clock: Clock | None = None,
    executor: Executor | None = None,
) -> DriveResult:
    """Run ``sc`` against in-process apps; ``result.data`` is a complete RunData (server logs included)."""
    from harness.fake_sglang import create_app as fake_app
    from harness.fake_sglang import parse_plan
    from harness.tokenizer import load_tokenizer
    from reference_impl import ServerConfig, create_app
    from reference_impl.logs import ListSink

    # the scenario's tokenizer for the fake and every server, as sim and live runs use it (and the checkers read it)
    tok = load_tokenizer(sc.target.tokenizer)
    fake = fake_app(seed=sc.backend.seed, plan=parse_plan(sc.backend.plan()), tokenizer=tok, clock=clock)
    fake_t = httpx.ASGITransport(app=fake)
    routes: dict[str, httpx.AsyncBaseTransport] = {"backend": fake_t}
    sinks: list[Any] = []
    apps: list[Any] = []
    for i in range(sc.target.processes):
        sink = ListSink()
        cfg = ServerConfig(
            backend_url="http://backend",
            variants=frozenset(sc.target.variants),
            worker_port=9000 + i,
            tokenizer=sc.target.tokenizer,
        )
        app = create_app(
            cfg,
            clock=clock,
            ids=IdSource(sc.seed * 1000 + i),
            executor=executor or InlineExecutor(),
            backend_transport=fake_t,
            log_sink=sink,
        )
        routes[f"server{i}"] = httpx.ASGITransport(app=app)
        apps.append(app)
        sinks.append(sink)
    servers = [f"http://server{i}" for i in range(sc.target.processes)]
    try:
        out = await drive(sc, servers, backend_url="http://backend", transport=RouteByHost(routes), clock=clock)
    finally:
        for app in apps:
            await app.state.server.aclose()
    out.data.server_logs = sorted((e for s in sinks for e in s), key=lambda e: float(e.get("ts", 0.0)))
    if sc.chaos.kill_restart:
        out.notes.append("kill_restart skipped: no processes in process")
    return out
