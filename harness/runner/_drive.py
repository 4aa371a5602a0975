"""Drive one scenario's workload and chaos against servers that already run, then collect.

Separated from process management so the same code runs over loopback
sockets (live mode), over in-process ASGI transports (tests) and, later, on
a virtual-time loop (simulation): everything that differs is injected, the
HTTP transport and the clock. Collection (final session states, deleted
session probes, the backend's execution log) happens here because it needs
the servers still up; the caller adds the servers' log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

import httpx

from harness.agents import Agent, HttpClient, make_client
from harness.agents._clients import REQUEST_PROGRESS, H1Client, _trace_extensions, user_agent
from harness.agents._script import ScriptedAgent
from harness.chaos import Nemesis, ProcessControl
from harness.fuzz import run_fuzz
from harness.history import History
from harness.rundata import RUN_FILES, FinalStatesFile, RunData
from harness.runner._selfmon import SelfMonitor
from harness.scenario import Scenario
from harness.seams import Clock, LoopClock
from harness.workload import SessionPlan, WorkloadResult, plan_sessions, run_workload

__all__ = [
    "Control",
    "ControlReply",
    "DriveResult",
    "ExecutionSink",
    "ExecutionsFile",
    "Progress",
    "SocketControl",
    "backend_probe",
    "control_client",
    "drive",
    "live_gc",
]

Progress = Callable[[int, int], None]  # (sessions finished, sessions planned)


LIVE_GC_THRESHOLD0 = 20_000  # the cyclic collector's first generation during a live run (CPython's default: 700)
_live_gc_depth = 0


@contextlib.contextmanager
def live_gc() -> Iterator[None]:
    """The cyclic garbage collector kept off the agents' hot path for a live run, and put back after it.

    Why (#15): with CPython's default thresholds a collection ran every ~700 net allocations, ~90 of them per
    400 agent episodes, 5-8% of the harness's CPU per turn (bench/results_harness.md); each one is also a
    pause every request in flight waits through. Everything alive at start-up (imports, clients, plans) is
    moved out of the collector's view (``gc.freeze``) and the first generation's threshold raised, so a
    collection is rare and never walks the start-up heap. The run's own garbage cycles are still collected
    (later, in fewer passes); nothing here changes what is recorded. Nested or overlapping runs in one
    process restore the settings when the last one ends.
    """
    global _live_gc_depth
    old = gc.get_threshold()
    was_frozen = gc.get_freeze_count() > 0  # someone else froze objects: leave them (and ours) so
    _live_gc_depth += 1
    if _live_gc_depth == 1:
        gc.freeze()
        gc.set_threshold(max(old[0], LIVE_GC_THRESHOLD0), old[1], old[2])
    try:
        yield
    finally:
        _live_gc_depth -= 1
        if _live_gc_depth == 0:
            gc.set_threshold(*old)
            if not was_frozen:
                gc.unfreeze()


class ExecutionsFile:
    """``backend_executions.json`` without the whole execution log in memory (a live run, issue 13).

    Each routing key's executions are encoded as its ``/stats`` page arrives (``FinalStatesFile``: an unlinked
    temp file in the run folder, ~100 bytes a key in memory); :meth:`write` gives the bytes ``RunData.save``
    writes for a ``backend_executions`` dict (``json.dumps(..., sort_keys=True)``), whatever the pages' order.
    """

    def __init__(self, run_dir: Path) -> None:
        self._spill: FinalStatesFile | None = FinalStatesFile(run_dir)

    def __setitem__(self, key: str, value: Any, /) -> None:
        if self._spill is not None:
            self._spill[key] = value

    def __len__(self) -> int:
        return len(self._spill) if self._spill is not None else 0

    def drop(self) -> None:
        """Forget what was put (a probe that failed halfway): :meth:`write` then writes ``{}``."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def write(self, path: Path) -> None:
        if self._spill is None:
            path.write_text(json.dumps({}))
        else:
            self._spill.write(path)
            self._spill = None

    def close(self) -> None:
        self.drop()


@dataclass
class DriveResult:
    data: RunData
    workload: WorkloadResult
    sessions: int
    notes: list[str] = field(default_factory=list)
    session_ids: set[str] | None = None  # every session the history names, when the history was not kept
    # with drive(stream_to=...): the backend's execution log, for the caller to write after RunData.save
    executions: ExecutionsFile | None = None


class _Seen:
    """What the collection needs of a history it does not keep (``drive(stream_to=...)``), gathered as the
    events are appended: each session's owner (the server its create answered ok on; the last one, as the
    walk over the events found), the sessions a DELETE answered ok, and (``named``: an external deployment,
    whose backend log is filtered to this run's sessions) every session id named. ~100 bytes a session each."""

    def __init__(self, *, named: bool) -> None:
        self.owners: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.sessions: set[str] | None = set() if named else None

    def __call__(self, ev: dict[str, Any]) -> None:
        sid = ev.get("session")
        if not sid:
            return
        if self.sessions is not None:
            self.sessions.add(sid)
        if ev["type"] == "ok":
            if ev["f"] == "create":
                self.owners[sid] = ev["server"]
            elif ev["f"] == "delete":
                self.deleted.add(sid)


async def drive(
    sc: Scenario,
    servers: list[str],
    *,
    backend_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    processes: ProcessControl | None = None,
    progress: Progress | None = None,
    faults_applied: bool = True,
    history_sink: IO[str] | None = None,
    self_monitor: SelfMonitor | None = None,
    stream_to: Path | None = None,
) -> DriveResult:
    """Run ``sc``'s sessions against ``servers`` (base URLs) and collect the servers' state.

    ``faults_applied`` says whether the scenario's fault plan reached the backend; it and
    ``process_control`` (whether ``processes`` was given) go into ``scenario["target"]``
    for the checkers, which call fault- and kill-driven checks unknown without them.

    ``stream_to`` (a live run's folder; ``history_sink`` is its history.jsonl): nothing of an ended
    session stays in memory (issue 13): the history is only the sink, the sessions' final states go to
    the folder's final_states.json as they are collected, and the returned ``RunData`` names both files
    (``streamed``) instead of holding them. Recorded bytes are the same as without it.
    """
    if stream_to is not None and history_sink is None:
        raise ValueError("drive(stream_to=...) needs the history sink")
    seen = _Seen(named=processes is None) if stream_to is not None else None
    plans = plan_sessions(sc, len(servers))
    # Every client kind the plans use is built (and its library imported) before t = 0: built lazily,
    # `import openai` alone blocked the loop for 0.5-2.5 s while other sessions were in flight (#15).
    clients: dict[str, HttpClient] = {k: make_client(k, transport) for k in sorted({p.client for p in plans})}
    control = control_client(transport)
    gc_guard = contextlib.ExitStack()
    if transport is None:  # sockets only: never in simulation
        gc_guard.enter_context(live_gc())
    # the sink: a cut run still leaves its history; with stream_to, the history is only the sink
    history = History(clock or LoopClock(), sink=history_sink, keep=seen is None, observe=seen)
    history.now()  # t = 0: the run starts now
    if self_monitor is not None:  # live only: is the harness itself the bottleneck? (never in simulation)
        self_monitor.start()
    notes: list[str] = []
    try:
        paged = transport is None  # sockets: the log a page at a time; a simulation asks as it always did
        await backend_probe(history, control, backend_url, into=_Discard(), paged=paged)  # where the log starts

        request = control_request(control)
        nemesis = Nemesis(
            sc.chaos,
            history,
            servers,
            request,
            backend_url=backend_url,
            base_plan=sc.backend.plan(),
            processes=processes,
        )
        finished = 0

        def on_done(_: SessionPlan) -> None:
            nonlocal finished
            finished += 1
            if progress is not None:
                progress(finished, len(plans))

        async def run_session(p: SessionPlan) -> None:
            client = clients.get(p.client)
            if client is None:
                client = clients[p.client] = make_client(p.client, transport)
            agent = (ScriptedAgent if p.script else Agent)(
                p, servers=servers, client=client, history=history, spec=sc.agent, workload=sc.workload, nemesis=nemesis
            )
            await agent.run()

        timeline = asyncio.create_task(nemesis.timeline())
        fuzzer = asyncio.create_task(run_fuzz(sc, servers, history, transport))  # [workload] fuzz: bad input
        workload = await run_workload(
            plans,
            run_session,
            now=history.now,
            concurrency=sc.workload.concurrency,
            duration_s=sc.workload.duration_s,
            on_done=on_done,
            lazy=stream_to is not None,  # a live run: no waiting task per planned session
        )
        await settle_chaos(sc, history, fuzzer, timeline, nemesis, notes)
        notes.extend(workload.errors[:5])
        history.close_open("run ended (duration bound)")
        harness_self = await self_monitor.stop() if self_monitor is not None else {}
        saturated = SelfMonitor.note(harness_self)
        if saturated:
            notes.append(saturated)
        execs = ExecutionsFile(stream_to) if stream_to is not None else None
        try:
            data = await _collect(
                sc,
                history,
                servers,
                backend_url,
                control,
                seen=seen,
                stream_to=stream_to,
                executions_file=execs,
                paged=paged,
            )
        except BaseException:
            if execs is not None:
                execs.close()
            raise
        data.harness = harness_self
        data.scenario["target"]["process_control"] = processes is not None
        data.scenario["target"]["faults_applied"] = faults_applied
        ids = seen.sessions if seen is not None else None
        return DriveResult(data, workload, len(plans), notes, ids, executions=execs)
    finally:
        for c in clients.values():
            with contextlib.suppress(Exception):
                await c.aclose()
        await control.aclose()
        gc_guard.close()


BACKEND_MARKS = ("boot_id", "resets")  # the fake's /stats fields that say whether its execution log is continuous


async def settle_chaos(
    sc: Scenario,
    history: History,
    fuzzer: asyncio.Task[Any],
    timeline: asyncio.Task[Any],
    nemesis: Nemesis,
    notes: list[str],
) -> None:
    """After the workload: let the fuzzer finish within the duration bound, then the chaos timeline (a restart
    or an outage's end must happen before collection, or the final state lies), then the nemesis's own calls."""
    try:
        await asyncio.wait_for(fuzzer, timeout=max(0.1, sc.workload.duration_s - history.now()))
    except TimeoutError:
        notes.append("fuzz cut by the duration bound")
    try:
        await asyncio.wait_for(asyncio.shield(timeline), timeout=max(5.0, sc.target.startup_timeout_s))
    except TimeoutError:
        timeline.cancel()
        notes.append("chaos timeline cut at the end of the workload")
    with contextlib.suppress(asyncio.CancelledError):
        await timeline
    await nemesis.drain()


_CONTROL_TIMEOUT_S = 10.0  # httpx's meaning: per phase (pool wait, connect, write, each read)


class ControlReply:
    """What the runner reads of a control answer: ``httpx.Response``'s ``status_code``, ``content``, ``json()``."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)  # as httpx.Response.json(): ValueError when it is not JSON


class SocketControl:
    """The runner's control client over sockets, on the agents' HTTP/1.1 client (harness/agents/_h1.py).

    It replaces an ``httpx.AsyncClient`` (timeout 10 s) and keeps what the history and the nemesis see of
    one: the same request bytes (but for an honest User-Agent, ``user_agent("control")``), httpx's
    exception classes and messages, httpx's timeout per phase, the request's ``sent``. Why: the final GET
    of every session went through httpx's client layers at ~1 ms of CPU each, an eighth of a run's
    requests (bench_harness.py --agents, #15). A URL that is not plain ``http://`` goes through httpx itself.
    """

    def __init__(self) -> None:
        self._h1 = H1Client(max_connections=100, max_keepalive=20, agent=user_agent("control"))
        self._other: httpx.AsyncClient | None = None

    async def request(
        self, method: str, url: str, *, json: Any = None, progress: dict[str, bool] | None = None
    ) -> ControlReply | httpx.Response:
        r = await self._h1.exchange(method, url, json_body=json, progress=progress, timeout_s=_CONTROL_TIMEOUT_S)
        if r is not None:
            return ControlReply(r.status, r.body)
        if self._other is None:
            self._other = httpx.AsyncClient(timeout=_CONTROL_TIMEOUT_S, headers={"User-Agent": user_agent("control")})
        ext = _trace_extensions() if progress is not None else None  # httpx's trace: "sent", as control_request's
        return await self._other.request(method, url, json=json, extensions=ext)

    async def get(self, url: str) -> ControlReply | httpx.Response:
        return await self.request("GET", url)

    async def aclose(self) -> None:
        await self._h1.aclose()
        if self._other is not None:
            await self._other.aclose()


Control = httpx.AsyncClient | SocketControl


def control_client(transport: httpx.AsyncBaseTransport | None = None) -> Control:
    """The runner's own client (probes, the nemesis's control calls, the final GET of every session).

    Over sockets: :class:`SocketControl`. With a transport (simulation, in-process tests): httpx on it.
    """
    if transport is None:
        return SocketControl()
    return httpx.AsyncClient(transport=transport, timeout=_CONTROL_TIMEOUT_S)


def control_request(control: Control) -> Callable[[str, str, Any], Any]:
    """The nemesis's way to send one control request (DELETE, fault plan...): (status or None, error or None)."""

    async def request(method: str, url: str, body: Any) -> tuple[int | None, str | None]:
        try:
            if isinstance(control, SocketControl):
                r = await control.request(method, url, json=body, progress=REQUEST_PROGRESS.get())  # "sent"
            else:
                r = await control.request(method, url, json=body, extensions=_trace_extensions())  # "sent", if asked
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return r.status_code, None

    return request


STATS_PAGE = 500  # routing keys per /stats page the runner asks for (~2 MB of JSON in bench_soak's runs)


class ExecutionSink(Protocol):
    """Where :func:`backend_probe` puts each routing key's executions (a dict, a ``FinalStatesFile``...)."""

    def __setitem__(self, key: str, value: Any, /) -> None: ...


class _Discard:
    def __setitem__(self, key: str, value: Any, /) -> None:
        pass


class _Only:
    """The keys of this run only (an external deployment's fake also holds earlier runs' sessions)."""

    def __init__(self, into: ExecutionSink, keep: set[str]) -> None:
        self._into, self._keep = into, keep

    def __setitem__(self, key: str, value: Any, /) -> None:
        if key in self._keep:
            self._into[key] = value


async def backend_probe(
    history: History,
    control: Control,
    backend_url: str | None,
    *,
    into: ExecutionSink | None = None,
    paged: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """``GET {backend}/stats`` as a ``probe`` op (``value: "backend_stats"``), returning its executions.

    Taken at the run's start and at its end: the completion's ``body`` keeps only what says
    whether the execution log is the same one throughout (``boot_id``, ``resets``, and how many
    executions it held), so ``exactly_once`` can tell a log lost to a restart or an
    ``/admin/reset`` from executions that never happened. The executions themselves go to
    ``backend_executions`` (the end's), not into the history.

    The log is read a page of ``STATS_PAGE`` routing keys at a time (``/stats?limit=N&after=CURSOR``, the
    fake's paging; issue 13: one body was ~1.4 MB of JSON per 1,000 sessions, held whole twice), each page
    put into ``into`` as it comes (then the return is empty; without it, into the returned dict). A backend
    that does not page answers the whole log to the first request (no ``next`` in it: that is all) or refuses
    the query (any non-200: one plain ``GET /stats``, as before); paging that would never end (a cursor that
    does not move or goes back, more pages than its ``keys`` take) falls back to that plain GET too, with a
    ``note`` on the completion (:func:`_read_backend_log`). The probe's op is the same either way; its
    ``boot_id`` / ``resets`` are the last page's (a restart or reset while paging shows against the start's).
    A probe that fails halfway is recorded as before and ``into`` may hold part of the log (the caller
    drops it). ``paged=False``: one plain GET (a simulation: its in-process fake's requests stay as they were).
    """
    if not backend_url:
        return {}
    collected: dict[str, list[dict[str, Any]]] = {}
    ok = await _read_backend_log(history, control, backend_url, collected if into is None else into, paged=paged)
    return collected if ok and into is None else {}


async def _read_backend_log(
    history: History, control: Control, backend_url: str, into: ExecutionSink, *, paged: bool = True
) -> bool:
    """Page through ``{backend}/stats`` into ``into`` (see :func:`backend_probe`); False when the probe failed.

    The fake's cursors are its keys' UTF-8 in hex, keys in order, so they strictly increase, and a log of
    ``keys`` routing keys takes ``ceil(keys / limit)`` pages. Paging that breaks either (a cursor that does not
    move or goes back, a cycle A -> B -> A; more than ``PAGE_SLACK`` pages over that count) would never end: the
    log is then read with one plain ``GET /stats``, as from a backend that refuses paging, and the probe's
    completion says so (``note``). What the pages gave stays in ``into``, each key overwritten by the whole log.
    """
    op = history.invoke(process="runner", f="probe", server=backend_url, value="backend_stats")
    count = pages = 0
    marks: dict[str, Any] = {}
    cursor: str | None = None
    note: str | None = None
    while True:
        url = f"{backend_url}/stats"
        if paged:
            url += f"?limit={STATS_PAGE}" + (f"&after={quote(cursor, safe='')}" if cursor is not None else "")
        try:
            r = await control.get(url)
            if paged and cursor is None and r.status_code != 200:  # no paging here: the plain GET, as before
                paged = False
                continue
            body = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            history.info(op, value="backend_stats", error=f"{type(exc).__name__}: {exc}")
            return False
        if not isinstance(body, dict):
            history.complete(op, "fail", value="backend_stats", status=r.status_code)
            return False
        executions = body.get("executions") or {}
        if not isinstance(executions, dict):
            executions = {}
        for key, execs in executions.items():
            into[key] = execs
            if isinstance(execs, list):
                count += len(execs)
        marks = {k: body[k] for k in BACKEND_MARKS if k in body}
        nxt = body.get("next") if paged else None
        if not isinstance(nxt, str) or not nxt:  # the last page, or a backend that answered the whole log
            break
        pages += 1
        why = _paging_broken(cursor, nxt, pages, body.get("keys"))
        if why is not None:  # it would never end: the whole log at once instead
            note = f"/stats paging {why}: read with one plain GET /stats"
            paged, cursor, count = False, None, 0
            continue
        cursor = nxt
    marks["executions"] = count
    if note is None:
        history.ok(op, value="backend_stats", status=200, body=marks)
    else:
        history.ok(op, value="backend_stats", status=200, body=marks, note=note)
    return True


PAGE_SLACK = 2  # pages beyond ceil(keys / limit) before paging counts as endless (keys added while paging)


def _paging_broken(cursor: str | None, nxt: str, pages: int, keys: Any) -> str | None:
    """Why paging on to ``nxt`` (the ``next`` of page ``pages``, asked after ``cursor``) would not end, or None."""
    if cursor is not None and nxt <= cursor:
        move = "did not advance" if nxt == cursor else "went back"
        return f"{move} (next {nxt[:40]!r} after {cursor[:40]!r})"
    if isinstance(keys, int) and not isinstance(keys, bool) and keys >= 0:
        most = -(-keys // STATS_PAGE) + PAGE_SLACK
        if pages >= most:
            return f"did not end in {most} pages of {STATS_PAGE} for {keys} keys"
    return None


async def _collect(
    sc: Scenario,
    history: History,
    servers: list[str],
    backend_url: str | None,
    control: Control,
    *,
    seen: _Seen | None = None,
    stream_to: Path | None = None,
    executions_file: ExecutionsFile | None = None,
    paged: bool = True,
) -> RunData:
    """The collection: every session's final GET, each server's /stats, the backend's execution log.

    ``executions_file`` (with ``stream_to``): the execution log goes there, a page at a time, instead of
    into ``RunData.backend_executions``; the caller writes it after ``RunData.save`` (which writes ``{}``).
    """
    owners: dict[str, str] = {}
    deleted: set[str] = set()
    if seen is not None:
        owners, deleted = seen.owners, seen.deleted
    for ev in history.events:  # empty when the history is not kept (seen has it)
        if ev["type"] == "ok" and ev["f"] == "create" and ev.get("session"):
            owners[ev["session"]] = ev["server"]
        if ev["type"] == "ok" and ev["f"] == "delete" and ev.get("session"):
            deleted.add(ev["session"])
    spill = FinalStatesFile(stream_to) if stream_to is not None else None
    final: dict[str, dict[str, Any] | None] | FinalStatesFile = spill if spill is not None else {}
    sem = asyncio.Semaphore(32)

    async def final_get(sid: str, url: str) -> None:
        value = "after_delete" if sid in deleted else "final_state"
        async with sem:
            op = history.invoke(process="runner", f="probe", session=sid, server=url, value=value)
            try:
                r = await control.get(f"{url}/sessions/{sid}")
            except httpx.HTTPError as exc:
                history.info(op, value=value, error=f"{type(exc).__name__}: {exc}")
                return
        if r.status_code == 200:
            final[sid] = r.json()
            history.ok(op, value=value, status=200)
        else:
            if r.status_code == 404:
                final[sid] = None
            history.complete(op, "ok" if r.status_code == 404 else "fail", value=value, status=r.status_code)

    await asyncio.gather(*(final_get(sid, url) for sid, url in sorted(owners.items())))
    for url in servers:  # what each process says it still holds: the leak check's final snapshot
        op = history.invoke(process="runner", f="probe", server=url, value="stats")
        try:
            r = await control.get(f"{url}/stats")
            body = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            history.info(op, value="stats", error=f"{type(exc).__name__}: {exc}")
            continue
        history.complete(op, "ok" if r.status_code == 200 else "fail", value="stats", status=r.status_code, body=body)
    scenario = {**sc.to_plain(), "servers": servers, "backend_url": backend_url}
    if spill is not None and stream_to is not None:
        spill.write(stream_to / RUN_FILES["final_states"])
        if executions_file is not None:  # the execution log a page at a time, never whole in memory (issue 13)
            sink: ExecutionSink = executions_file
            if seen is not None and seen.sessions is not None:
                sink = _Only(executions_file, seen.sessions)
            if backend_url and not await _read_backend_log(history, control, backend_url, sink, paged=paged):
                executions_file.drop()  # as before: a probe that failed leaves no executions
            executions: dict[str, list[dict[str, Any]]] = {}
        else:
            executions = await backend_probe(history, control, backend_url, paged=paged)
        return RunData(
            scenario=scenario,
            history=[],
            owners=owners,
            backend_executions=executions,
            streamed={k: stream_to / RUN_FILES[k] for k in ("history", "final_states")},
            streamed_events=history.count,
        )
    executions = await backend_probe(history, control, backend_url, paged=paged)
    assert isinstance(final, dict)
    return RunData(
        scenario=scenario,
        history=history.events,
        final_states=final,
        owners=owners,
        backend_executions=executions,
    )
