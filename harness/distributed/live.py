"""``harness run --ray``: a live scenario's sessions sharded over agent actors (issue 15, docs/distributed.md).

The driver (the ``harness run`` process) does everything a local run does except
running the sessions: it starts the fake and the servers (or uses the
``[target]`` urls), runs the chaos timeline (kills, restarts, outages: it holds
the processes), the fuzzer and the collection at the end (final states, stats,
the backend's execution log). The sessions run in ``K`` agent actors per Ray
node, each with the existing agent code, its own HTTP clients, its own
:class:`~harness.history.History` and its own per-session nemesis (DELETE
during proxy, wrong-process probes: actions an agent triggers). Each actor
returns its events; the driver merges them into the one history of the run
folder, which is then identical in shape to a local run's.

The global order (documented in docs/distributed.md, "The merged history"):

- every process reads its own monotonic clock. At the start the driver pings
  each actor three times: it reads its own clock ``t0``, the actor reads its
  clock ``m``, the driver reads ``t1``; the ping with the smallest round trip
  gives the actor's offset (``m`` is taken as simultaneous with
  ``(t0 + t1) / 2``) and the uncertainty ``u = (t1 - t0) / 2``: the actor's
  clock then reads driver time within ``+-u``.
- an actor's history starts at the driver's t = 0 mapped to its clock, so its
  times are in driver time; the driver then widens them by ``u`` for
  comparisons across processes: an invoke moves up to ``u`` earlier (``time``
  and ``intended``), a completion up to ``u`` later, never so far that two ops
  of the same actor (one clock, exactly ordered) would overlap
  (:func:`actor_shifts`); each carries ``clock_uncertainty: u`` and
  ``clock_shift`` (how far it moved). An operation of one actor then precedes an
  operation of another process only if it completed clearly before the other
  was invoked: the checkers (which order operations by
  ``completion.time < invoke.time``) see operations within the uncertainty as
  overlapping, unchanged. A client latency is measured on one clock, so the
  report takes each event's shift off again (``harness/report/buckets.py``).
- the merged history is sorted by (time, source, the source's own order)
  (source 0 is the driver, then actors in order); the driver's op ids stay,
  actor ``k``'s are its own plus ``k * OP_STRIDE``; ``index`` is the new
  position. An invoke still precedes its completion.
- streamed: every ``STREAM_EVERY_S`` the driver drains each actor's new events
  and writes the part of the merge no later event can precede to
  ``history.jsonl`` (:class:`HistoryStream`), so a cut run leaves a checkable
  history as a local run does; at the shards' end the rest of the merge follows.

Client-latency HDR histograms: each actor records its chat latencies (one
clock, no widening) into an HdrHistogram and returns it encoded; the driver adds
them (``HdrHistogram.add``: counts merged, never percentiles averaged) into
``harness_self.json``'s ``ray`` section, next to each actor's offset,
uncertainty, sessions and self-monitor. The saturation check covers every
process: the run is saturated if any of them was.

Assignment: session ``i`` runs on actor ``(i + derive_seed(seed, "ray-shard")) % n``,
a pure function of the seed and the session index (round robin from a seeded
rotation, so the shards differ in size by at most one). The workload's
``concurrency`` is split over the actors (their caps sum to it).

This is tooling around protocol code: the actor reads the monotonic clock for
the ping (``seam-ok``); the agents inside it use the seams as in a local run.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import httpx
from hdrh.histogram import HdrHistogram

from harness.agents import Agent, HttpClient, make_client
from harness.agents._script import ScriptedAgent
from harness.chaos import Nemesis, ProcessControl
from harness.fuzz import run_fuzz
from harness.history import History, _encode_line
from harness.report.stats import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS
from harness.runner._drive import (
    DriveResult,
    _collect,
    backend_probe,
    control_client,
    control_request,
    settle_chaos,
)
from harness.runner._selfmon import SelfMonitor
from harness.scenario import Scenario
from harness.seams import LoopClock
from harness.workload import SessionPlan, WorkloadResult, derive_seed, plan_sessions, run_workload

__all__ = [
    "ClockSync",
    "HistoryStream",
    "RayLive",
    "actor_of",
    "actor_shifts",
    "assign_by_node",
    "drive_on_ray",
    "group_size",
    "merge_histories",
    "merge_self",
    "node_groups",
    "shard_concurrency",
]

PINGS = 3


def actor_of(seed: int, index: int, n_actors: int) -> int:
    """The actor that runs session ``index``: a pure function of the seed and the index."""
    return (index + derive_seed(seed, "ray-shard")) % max(1, n_actors)


def node_groups(nodes: list[str]) -> list[str]:
    """The named nodes of a per-node deployment (``[target] nodes``, one name per url), in first-seen order."""
    return list(dict.fromkeys(nodes))


def group_size(n_groups: int, agents_per_node: int, concurrency: int) -> int:
    """Actors per node of a per-node deployment: ``--agents-per-node``, fewer if they would exceed ``concurrency``."""
    if not 1 <= n_groups <= concurrency:
        raise ValueError(f"{n_groups} nodes for a concurrency of {concurrency}: every node needs a session at a time")
    return max(1, min(agents_per_node, concurrency // n_groups))


def assign_by_node(sc: Scenario, nodes: list[str], per_group: int) -> list[list[int]]:
    """Session indices per actor when each node's actors drive only the servers on that node.

    A session belongs to the node of the url its plan picks (the plans are a local run's, so the same
    session talks to the same server); within the node it goes round robin over the node's
    ``per_group`` actors from a seeded rotation. Actor ``g * per_group + j`` is node ``g``'s ``j``-th.
    """
    groups = node_groups(nodes)
    out: list[list[int]] = [[] for _ in range(len(groups) * per_group)]
    seen = [0] * len(groups)
    rotate = derive_seed(sc.seed, "ray-shard")
    for p in plan_sessions(sc, len(nodes)):
        g = groups.index(nodes[p.server])
        out[g * per_group + (seen[g] + rotate) % per_group].append(p.index)
        seen[g] += 1
    return out


def shard_concurrency(concurrency: int, n_actors: int) -> list[int]:
    """Each actor's share of the workload's concurrency cap: they sum to it, at least 1 each, so there are
    never more actors than ``concurrency`` (:func:`drive_on_ray` uses at most that many)."""
    if not 1 <= n_actors <= concurrency:
        raise ValueError(f"{n_actors} agent actors for a concurrency of {concurrency}: use 1 to {concurrency}")
    base, extra = divmod(concurrency, n_actors)
    return [base + (1 if a < extra else 0) for a in range(n_actors)]


@dataclass(frozen=True)
class ClockSync:
    """One actor's clock against the driver's: ``driver time = actor clock - start``, within ``+-uncertainty``."""

    start: float  # the actor's monotonic reading at the driver's t = 0
    uncertainty: float  # half the best ping's round trip, seconds

    @staticmethod
    def from_pings(pings: list[tuple[float, float, float]]) -> ClockSync:
        """``pings``: (driver t0, actor clock, driver t1) per ping, driver times since the run's start."""
        t0, m, t1 = min(pings, key=lambda p: p[2] - p[0])
        return ClockSync(start=m - (t0 + t1) / 2.0, uncertainty=max(0.0, (t1 - t0) / 2.0))


class RayLive:
    """Where ``harness run --ray`` runs its agent actors: one Ray connection for a whole suite.

    ``address=None``: a private local head on 127.0.0.1 (as ``RayPool``) with ``agents_per_node`` CPUs;
    otherwise an existing cluster (``auto``, ``ray://host:10001``), never shut down by the harness.
    """

    def __init__(self, address: str | None, agents_per_node: int) -> None:
        from harness.distributed.pool import RayPool

        if agents_per_node < 1:
            raise ValueError("--agents-per-node must be >= 1")
        self.pool = RayPool(address, agents_per_node)
        self.ray: Any = self.pool._ray
        self.agents_per_node = agents_per_node

    def nodes(self) -> list[str]:
        """The alive nodes' ids, sorted (the actors' placement is then the same for the same cluster)."""
        return sorted(str(n["NodeID"]) for n in self.ray.nodes() if n.get("Alive"))

    def actors(self, loopback: bool = False, groups: list[str] | None = None, per_group: int = 0) -> list[Any]:
        """``agents_per_node`` actors on every alive node (node order, then index); with ``loopback`` (the
        servers listen on the driver's 127.0.0.1) on the driver's node only: no other node can reach them.

        ``groups`` (a per-node deployment, ``[target] nodes``): ``per_group`` actors for each named node, in
        order, on the alive Ray node with that IP address; a name that is no node's IP is an error, unless
        every url is loopback (two url sets on one machine standing in for two nodes): the driver's node.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cls = self.ray.remote(num_cpus=0, max_restarts=0)(AgentActor)
        here = str(self.ray.get_runtime_context().get_node_id())
        if groups is None:
            placement = [here] if loopback else self.nodes()
            per_group = self.agents_per_node
        else:
            by_ip = {str(n["NodeManagerAddress"]): str(n["NodeID"]) for n in self.ray.nodes() if n.get("Alive")}
            missing = [g for g in groups if g not in by_ip]
            if missing and not loopback:
                raise ValueError(f"[target] nodes: {missing} name no alive Ray node (their IPs: {sorted(by_ip)})")
            placement = [by_ip.get(g, here) for g in groups]
        out = []
        for node in placement:
            for _ in range(per_group):
                strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
                out.append(cls.options(scheduling_strategy=strategy).remote())
        return out

    def shutdown(self) -> None:
        self.pool.shutdown()

    def __enter__(self) -> RayLive:
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()


class AgentActor:
    """Runs one shard of a scenario's sessions (an async Ray actor; a plain object in tests).

    Async so that ``drain`` runs while ``run`` does: the driver takes the shard's new events every
    ``STREAM_EVERY_S`` and streams them into the run's history.jsonl (a cut run leaves them behind).
    """

    def __init__(self) -> None:
        self._history: History | None = None
        self._drained = 0

    async def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    async def clock(self) -> float:
        return time.monotonic()  # seam-ok: the clock-offset ping (LoopClock reads the same clock)

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        return await run_shard(**job, on_history=self._watch)

    def _watch(self, history: History) -> None:
        self._history, self._drained = history, 0

    async def drain(self) -> dict[str, Any]:
        """The shard's events since the last drain, and its clock now (driver time): nothing older will come."""
        h = self._history
        if h is None:
            return {"events": [], "now": None}
        new = h.events[self._drained :]
        self._drained += len(new)
        return {"events": new, "now": h.now()}


async def run_shard(
    *,
    sc: Scenario,
    servers: list[str],
    backend_url: str | None,
    actor: int,
    n_actors: int,
    start: float,
    concurrency: int,
    on_history: Callable[[History], None] | None = None,
    sessions: list[int] | None = None,
) -> dict[str, Any]:
    """One actor's sessions against ``servers``, timed from ``start`` on this process's monotonic clock.

    ``sessions``: the session indices to run (a per-node deployment); by default :func:`actor_of`'s share."""
    mine = set(sessions) if sessions is not None else None
    plans = [
        p
        for p in plan_sessions(sc, len(servers))
        if (p.index in mine if mine is not None else actor_of(sc.seed, p.index, n_actors) == actor)
    ]
    clients: dict[str, HttpClient] = {k: make_client(k) for k in sorted({p.client for p in plans})}
    control = control_client()
    history = History(LoopClock(), start=start)
    if on_history is not None:
        on_history(history)
    monitor = SelfMonitor()
    monitor.start()
    try:
        request = control_request(control)
        nemesis = Nemesis(sc.chaos, history, servers, request, backend_url=backend_url, base_plan=sc.backend.plan())

        async def run_session(p: SessionPlan) -> None:
            agent = (ScriptedAgent if p.script else Agent)(
                p,
                servers=servers,
                client=clients[p.client],
                history=history,
                spec=sc.agent,
                workload=sc.workload,
                nemesis=nemesis,
            )
            await agent.run()

        workload = await run_workload(
            plans, run_session, now=history.now, concurrency=concurrency, duration_s=sc.workload.duration_s
        )
        await nemesis.drain()
        history.close_open("run ended (duration bound)")
        self_summary = await monitor.stop()
        return {
            "events": history.events,
            "sessions": len(plans),
            "workload": workload.__dict__,
            "self": self_summary,
            "lags_ms": monitor.lags_ms,
            "hdr": _latency_hdr(history.events),
        }
    finally:
        for c in clients.values():
            with contextlib.suppress(Exception):
                await c.aclose()
        await control.aclose()


def _latency_hdr(events: list[dict[str, Any]]) -> str:
    """This actor's chat latencies (completion - invoke, one clock) as an encoded HdrHistogram."""
    hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    sent: dict[int, float] = {}
    for ev in events:
        if ev.get("f") != "chat":
            continue
        if ev["type"] == "invoke":
            sent[ev["op"]] = float(ev["time"])
        elif ev["op"] in sent:
            us = round((float(ev["time"]) - sent.pop(ev["op"])) * 1e6)
            if LOWEST_US <= us <= HIGHEST_US:
                hist.record_value(us)
    return base64.b64encode(hist.encode()).decode() if hist.get_total_count() else ""


def merge_hdr(encoded: list[str]) -> Any:
    """The actors' histograms added (counts merged, never percentiles averaged)."""
    total = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for e in encoded:
        if e:
            total.add(HdrHistogram.decode(base64.b64decode(e)))
    return total


MIN_GAP_S = 1e-5  # two of one actor's events closer than this (10 us): neither side is moved towards the other


def _shift(e: dict[str, Any], u: float, comps: list[float], invs: list[float]) -> float:
    t = float(e["time"])
    if e["type"] == "invoke":
        k = bisect.bisect_left(comps, t)  # comps[k - 1]: the latest completion strictly before t
        gap = t - comps[k - 1] if k else math.inf
        return -(0.0 if gap < MIN_GAP_S else min(u, 0.4 * gap))
    k = bisect.bisect_right(invs, t)  # invs[k]: the earliest invoke strictly after t
    gap = invs[k] - t if k < len(invs) else math.inf
    return 0.0 if gap < MIN_GAP_S else min(u, 0.4 * gap)


def actor_shifts(events: list[dict[str, Any]], u: float) -> list[float]:
    """How far each of one actor's events moves in the merge (seconds; an invoke's <= 0, a completion's >= 0).

    Across processes the clocks agree within ``u`` only, so an invoke moves ``u`` earlier and a completion
    ``u`` later. Within the actor there is one clock and its order is exact: an op that completed before
    another op of the same actor was invoked must still precede it after the merge (back-to-back turns of
    a session, a DELETE after the chat it follows). So a completion moves at most 0.4 of the gap to the
    actor's next later invoke, an invoke at most 0.4 of the gap back to its latest earlier completion, and
    neither moves when that gap is under ``MIN_GAP_S`` (rounding to 1 us could reorder it): every ordered
    pair of the actor keeps at least 0.2 of its gap between them. An event's shift depends only on the
    actor's events up to ``2.5 u`` after it (what lets the driver stream the merge, :class:`HistoryStream`).
    """
    comps = sorted(float(e["time"]) for e in events if e["type"] != "invoke")
    invs = sorted(float(e["time"]) for e in events if e["type"] == "invoke")
    return [_shift(e, u, comps, invs) for e in events]


OP_STRIDE = 1_000_000_000  # actor k's op ids are its own + k * OP_STRIDE (the driver's keep theirs)


def _moved(e: dict[str, Any], src: int, d: float, inv_d: float, u: float) -> dict[str, Any]:
    ev = dict(e)
    ev["op"] = int(ev["op"]) + src * OP_STRIDE
    ev["time"] = round(float(ev["time"]) + d, 6)
    if ev.get("intended") is not None:  # an invoke's; a completion repeats it: the invoke's shift
        ev["intended"] = round(float(ev["intended"]) + inv_d, 6)
    ev["clock_uncertainty"] = round(u, 6)
    ev["clock_shift"] = round(d, 6)
    return ev


def merge_histories(
    driver: list[dict[str, Any]], actors: list[tuple[list[dict[str, Any]], float]]
) -> list[dict[str, Any]]:
    """One history from the driver's events and each actor's (events, clock uncertainty): see the module docstring.

    Each actor event is moved by :func:`actor_shifts` and carries ``clock_uncertainty`` (the actor's ``u``)
    and ``clock_shift`` (how far it moved, signed), so one-clock measures (latencies) can take it off again.
    """
    rows: list[tuple[float, int, int, dict[str, Any]]] = [
        (float(e["time"]), 0, i, dict(e)) for i, e in enumerate(driver)
    ]
    if driver and max(int(e["op"]) for e in driver) >= OP_STRIDE:
        raise ValueError(f"the driver has {OP_STRIDE} ops or more: actor op ids would collide with its own")
    for src, (events, u) in enumerate(actors, start=1):
        invoke_shift: dict[int, float] = {}
        for i, (e, d) in enumerate(zip(events, actor_shifts(events, u), strict=True)):
            if e["type"] == "invoke":
                invoke_shift[int(e["op"])] = d
            ev = _moved(e, src, d, invoke_shift.get(int(e["op"]), d), u)
            rows.append((ev["time"], src, i, ev))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    out = []
    for n, (_t, _s, _i, ev) in enumerate(rows):
        ev["index"] = n
        out.append(ev)
    return out


class HistoryStream:
    """The merged history written as the run goes (``history.jsonl`` of a cut Ray run is checkable).

    Fed the driver's events and each actor's drained events with the actor's clock now; writes, in the
    order of :func:`merge_histories` and with its op ids, times and ``index``, every event that no later
    one can precede: events whose merged time is below ``min(every source's now) - 4 u - 1 ms`` (an
    actor's event is final once its actor's clock is ``3 u`` past it; a later one moves at most ``u``
    earlier). :meth:`finish` writes the rest of the final merge, so the file is that merge's lines.
    """

    def __init__(self, sink: IO[str], uncertainties: list[float]) -> None:
        self.sink = sink
        self.u = uncertainties
        self.margin = 4.0 * max(uncertainties, default=0.0) + 1e-3
        n = len(uncertainties)
        self.events: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.comps: list[list[float]] = [[] for _ in range(n)]
        self.invs: list[list[float]] = [[] for _ in range(n)]
        self.inv_shift: list[dict[int, float]] = [{} for _ in range(n)]
        self.placed = [0] * n  # per actor: events already moved into ``heap``
        self.now: list[float | None] = [None] * n
        self.driver_placed = 0
        self.heap: list[tuple[float, int, int, dict[str, Any]]] = []
        self.written = 0

    def add(self, actor: int, drained: dict[str, Any]) -> None:
        for e in drained["events"]:
            self.events[actor].append(e)
            (self.invs if e["type"] == "invoke" else self.comps)[actor].append(float(e["time"]))
        if drained.get("now") is not None:
            self.now[actor] = float(drained["now"])

    def write(self, driver: list[dict[str, Any]], driver_now: float) -> None:
        for i in range(self.driver_placed, len(driver)):
            heapq.heappush(self.heap, (float(driver[i]["time"]), 0, i, dict(driver[i])))
        self.driver_placed = len(driver)
        known = [driver_now]
        for a, evs in enumerate(self.events):
            now = self.now[a]
            if now is None:  # not started yet: its first events will be after t = 0 - u
                known.append(-self.u[a])
                continue
            known.append(now)
            final = now - 3.0 * self.u[a] - 1e-3
            while self.placed[a] < len(evs) and float(evs[self.placed[a]]["time"]) < final:
                i = self.placed[a]
                e = evs[i]
                d = _shift(e, self.u[a], self.comps[a], self.invs[a])
                if e["type"] == "invoke":
                    self.inv_shift[a][int(e["op"])] = d
                ev = _moved(e, a + 1, d, self.inv_shift[a].get(int(e["op"]), d), self.u[a])
                heapq.heappush(self.heap, (ev["time"], a + 1, i, ev))
                self.placed[a] += 1
        watermark = min(known) - self.margin
        while self.heap and self.heap[0][0] < watermark:
            self._line(heapq.heappop(self.heap)[3])
        self.sink.flush()

    def _line(self, ev: dict[str, Any]) -> None:
        ev["index"] = self.written
        self.written += 1
        self.sink.write(_encode_line(ev) + "\n")

    def finish(self, merged: list[dict[str, Any]]) -> None:
        """Everything of the final merge not written yet (the stream wrote a prefix of it)."""
        for ev in merged[self.written :]:
            self.sink.write(_encode_line(ev) + "\n")
        self.written = len(merged)
        self.sink.flush()


def merge_self(driver: dict[str, Any], actors: list[dict[str, Any]], lags: list[float]) -> dict[str, Any]:
    """``harness_self.json`` of a sharded run: the driver's keys, lag percentiles over every process's samples
    (pooled, not averaged), the busiest process's CPU, saturated if any process was."""
    merged = dict(driver)
    s = sorted(lags)

    def p(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0

    merged["samples"] = len(s)
    merged["lag_p50_ms"], merged["lag_p99_ms"] = round(p(0.50), 3), round(p(0.99), 3)
    merged["lag_max_ms"] = round(s[-1] if s else 0.0, 3)
    merged["late_samples"] = sum(1 for v in s if v > float(driver.get("lag_limit_ms", 100.0)))
    merged["cpu_fraction"] = max(
        [float(driver.get("cpu_fraction", 0.0))] + [float(a.get("cpu_fraction", 0.0)) for a in actors]
    )
    reasons = [f"driver: {r}" for r in driver.get("reasons") or []]
    for i, a in enumerate(actors):
        reasons += [f"agent actor {i}: {r}" for r in a.get("reasons") or []]
    merged["reasons"] = reasons
    merged["saturated"] = bool(reasons)
    return merged


async def drive_on_ray(
    sc: Scenario,
    servers: list[str],
    live: RayLive,
    *,
    backend_url: str | None = None,
    processes: ProcessControl | None = None,
    faults_applied: bool = True,
    history_sink: IO[str] | None = None,
) -> DriveResult:
    """:func:`harness.runner.drive` with the sessions on Ray agent actors; the same :class:`DriveResult`."""
    loopback = all(httpx.URL(u).host in ("127.0.0.1", "localhost", "::1") for u in servers)
    per_node = list(sc.target.nodes) if len(sc.target.nodes) == len(servers) else None
    assigned: list[list[int]] | None = None
    k = 0
    if per_node is not None:  # a per-node deployment: each node's actors drive that node's servers
        k = group_size(len(node_groups(per_node)), live.agents_per_node, sc.workload.concurrency)
        assigned = assign_by_node(sc, per_node, k)
        actors = live.actors(loopback=loopback, groups=node_groups(per_node), per_group=k)
    else:
        actors = live.actors(loopback=loopback)
    # never more actors than the workload's concurrency: each actor runs at least one session at a time,
    # so more would run more sessions at once than the scenario allows; the surplus is killed at once
    n = max(1, min(len(actors), sc.workload.concurrency))
    _kill(live, actors[n:])
    actors = actors[:n]
    try:
        await asyncio.gather(*(a.clock.remote() for a in actors))  # every actor is up before t = 0
    except BaseException:
        _kill(live, actors)  # one that never answered is killed too, not left running on the cluster
        raise
    control = control_client()
    # the driver's own ops (probes, chaos, fuzz); with a sink they go to it merged with the actors' (HistoryStream)
    history = History(LoopClock())
    history.now()
    monitor = SelfMonitor()
    monitor.start()
    notes: list[str] = []
    try:
        if loopback and len(live.nodes()) > 1:
            notes.append(f"--ray: the servers listen on loopback: {n} agent actor(s) on the driver's node only")
        await backend_probe(history, control, backend_url)
        syncs = []
        for a in actors:
            pings = []
            for _ in range(PINGS):
                t0 = history.now()
                m = float(await a.clock.remote())
                pings.append((t0, m, history.now()))
            syncs.append(ClockSync.from_pings(pings))
        nodes = await asyncio.gather(*(a.node.remote() for a in actors))

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
        caps = shard_concurrency(sc.workload.concurrency, n)
        refs = [
            a.run.remote(
                {
                    "sc": sc,
                    "servers": servers,
                    "backend_url": backend_url,
                    "actor": i,
                    "n_actors": n,
                    "start": syncs[i].start,
                    "concurrency": caps[i],
                    "sessions": assigned[i] if assigned is not None else None,
                }
            )
            for i, a in enumerate(actors)
        ]
        timeline = asyncio.create_task(nemesis.timeline())
        fuzzer = asyncio.create_task(run_fuzz(sc, servers, history, None))
        stream = HistoryStream(history_sink, [y.uncertainty for y in syncs]) if history_sink is not None else None
        pump = asyncio.create_task(_pump(stream, actors, history, notes)) if stream is not None else None
        try:
            shards: list[dict[str, Any]] = list(await asyncio.gather(*refs))
        except BaseException:
            # a shard failed (or the run was interrupted): no kill, restart or outage may fire after the
            # run is over, so the chaos timeline and the fuzzer end before the error goes up
            for t in (timeline, fuzzer, pump):
                if t is not None:
                    t.cancel()
            await asyncio.gather(*(t for t in (timeline, fuzzer, pump) if t is not None), return_exceptions=True)
            raise
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        await settle_chaos(sc, history, fuzzer, timeline, nemesis, notes)
        history.close_open("run ended (duration bound)")
        driver_self = await monitor.stop()
        workload = WorkloadResult()
        for s in shards:
            w = s["workload"]
            workload.started += w["started"]
            workload.finished += w["finished"]
            workload.not_started += w["not_started"]
            workload.cut_by_bound += w["cut_by_bound"]
            workload.errors.extend(w["errors"])
        notes.extend(workload.errors[:5])
        history.events[:] = merge_histories(
            history.events, [(s["events"], y.uncertainty) for s, y in zip(shards, syncs, strict=True)]
        )
        history._next_op = 1 + max((int(e["op"]) for e in history.events), default=-1)
        if stream is not None and history_sink is not None:
            stream.finish(history.events)  # the file is now the merged history; what follows streams as usual
            history._sink = history_sink
        lags = [*monitor.lags_ms, *(v for s in shards for v in s["lags_ms"])]
        harness_self = merge_self(driver_self, [s["self"] for s in shards], lags)
        hdr = merge_hdr([s["hdr"] for s in shards])
        harness_self["ray"] = {
            "agents_per_node": live.agents_per_node,
            "actors": [
                {
                    "node": nodes[i],
                    "deployment_node": node_groups(per_node)[i // k] if per_node is not None else None,
                    "sessions": s["sessions"],
                    "concurrency": caps[i],
                    "clock_start": round(syncs[i].start, 9),
                    "clock_uncertainty_s": round(syncs[i].uncertainty, 9),
                    "self": s["self"],
                }
                for i, s in enumerate(shards)
            ],
            "client_chat_latency_hdr": base64.b64encode(hdr.encode()).decode() if hdr.get_total_count() else "",
            "client_chat_latency_ms": {
                "n": hdr.get_total_count(),
                "p50": hdr.get_value_at_percentile(50.0) / 1000.0,
                "p99": hdr.get_value_at_percentile(99.0) / 1000.0,
                "max": hdr.get_max_value() / 1000.0,
            },
        }
        saturated = SelfMonitor.note(harness_self)
        if saturated:
            notes.append(saturated)
        data = await _collect(sc, history, servers, backend_url, control)
        data.harness = harness_self
        data.scenario["target"]["process_control"] = processes is not None
        data.scenario["target"]["faults_applied"] = faults_applied
        return DriveResult(data, workload, sum(int(s["sessions"]) for s in shards), notes)
    finally:
        if monitor._task is not None:  # an error before the end: the monitor's timer task goes too
            await monitor.stop()
        await control.aclose()
        _kill(live, actors)


STREAM_EVERY_S = 1.0  # how often the driver drains the actors' new events into history.jsonl


async def _pump(stream: HistoryStream, actors: list[Any], history: History, notes: list[str]) -> None:
    """Every ``STREAM_EVERY_S``: each actor's new events into ``stream`` (until cancelled at the shards' end)."""
    while True:
        await asyncio.sleep(STREAM_EVERY_S)
        try:
            drained = await asyncio.gather(*(a.drain.remote() for a in actors))
        except Exception as exc:  # the run goes on; only a cut run's file would miss the actors' events
            notes.append(f"--ray: streaming the agent actors' events stopped: {type(exc).__name__}: {exc}")
            return
        for i, d in enumerate(drained):
            stream.add(i, d)
        stream.write(history.events, history.now())


def _kill(live: RayLive, actors: list[Any]) -> None:
    for a in actors:
        with contextlib.suppress(Exception):
            live.ray.kill(a)
