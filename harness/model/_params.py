"""What the capacity model is told: costs, the deployment, the workload, the backend.

Everything is plain frozen data so a model run is named by (params, seed),
like a scenario run. A :class:`ModelParams` is built from a scenario
(:func:`from_scenario`, reading the same ``target``, ``backend``,
``workload``, ``agent`` and ``chaos`` tables the live runner reads) or from a
small params TOML of its own (:func:`load_params`, documented in
docs/model.md), and the CPU costs come from :func:`harness.model.calibrate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.fake_sglang.plan import FaultPlan, FaultSpec, IntMatch, PlanError, Rule, parse_plan

__all__ = [
    "Costs",
    "Deployment",
    "ModelParams",
    "ParamsError",
    "Stalls",
    "Tokens",
    "Workload",
    "from_scenario",
    "load_params",
]


class ParamsError(ValueError):
    """A params file or override the model cannot use: names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Costs:
    """CPU costs in milliseconds; ``*_per_token_ms`` multiply a token count.

    Fitted by :func:`harness.model.calibrate` from ``chat_done`` lines:
    ``tokenize_in`` against ``prompt_tokens``, ``tokenize_out`` against
    ``completion_tokens``, ``http`` (total minus the four buckets: body
    parse, request build, answer validation, response) and ``proxy``
    (``proxy_elapsed_ms`` minus the backend's own drawn latency) against
    ``prompt_tokens``. The fractions say where the model places a cost; they
    cannot be identified from the log lines and are documented choices.
    """

    http_ms: float = 0.4
    http_per_token_ms: float = 0.001
    tokenize_in_ms: float = 0.8
    tokenize_in_per_token_ms: float = 0.01
    tokenize_out_ms: float = 0.6
    tokenize_out_per_token_ms: float = 0.02
    proxy_ms: float = 1.5
    proxy_per_token_ms: float = 0.002
    control_ms: float = 0.3  # create / delete handler, and the loop part of a GET
    http_pre_fraction: float = 0.5  # of http: before the lock (body read, JSON parse); the rest after the proxy
    proxy_loop_fraction: float = 0.2  # of proxy: httpx work on the server's loop (half out, half back)
    proxy_backend_fraction: float = 0.3  # of proxy: work on the backend's loop; the rest is pure delay (wake-ups)
    gil_fraction: float = 1.0  # of a thread's tokenization that holds the GIL (shares the loop's CPU)
    resume_ms: float = 0.02  # the loop resuming a coroutine after a thread hop or a lock hand-over
    thread_hop_ms: float = 0.4  # to_thread's hand-off and wake-up, a delay that holds no CPU (thread mode only)
    gil_switch_ms: float = 5.0  # sys.getswitchinterval(): a thread waits at most this long for the GIL
    untimed_ms: float = 0.3  # server loop work outside total_ms (HTTP parse before the handler, write after)
    client_ms: float = 4.0  # the agents' loop, per HTTP call (build + send, then read + parse + record)
    client_per_token_ms: float = 0.0  # per prompt token (the request body carries the whole history)

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "<costs>") -> Costs:
        allowed = {f.name for f in dataclasses.fields(cls)}
        out: dict[str, float] = {}
        for k, v in data.items():
            if k not in allowed:
                raise ParamsError(f"{source}: key {k!r}: unknown cost; allowed: {', '.join(sorted(allowed))}")
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ParamsError(f"{source}: key {k!r}: expected a non-negative number, got {v!r}")
            out[k] = float(v)
        return cls(**out)


@dataclass(frozen=True)
class Deployment:
    processes: int = 1
    tokenize_in_thread: bool = True  # ServerConfig.tokenize_in_thread (asyncio.to_thread)
    threads: int = 6  # asyncio's default executor: min(32, cpu_count + 4)
    lock_restore: bool = False  # the lock_restore variant: the session lock held across Phase 2
    backend_concurrency: int = 0  # generations the backend runs at once; 0 = unbounded (the fake)
    backend_loops: int = 0  # loops serving the backend's CPU share (the fake: one); 0 = a delay, no queue
    client_loops: int = 0  # event loops running the agents (the live runner: one); 0 = agents cost nothing
    machine_cores: int = 0  # all loops share this many cores (one test machine); 0 = a core per loop
    machine_background: float = 0.0  # other busy processes on that machine


@dataclass(frozen=True)
class Tokens:
    """How prompts grow: turn 0 renders system + user; each later turn adds the answer and a new message."""

    first_prompt_tokens: int = 40
    turn_tokens: int = 16  # the appended user/tool message and template markers, per turn
    tokens_per_word: float = 1.07  # completion tokens per generated word (+1 end-of-turn token)


@dataclass(frozen=True)
class Workload:
    sessions: int = 10
    concurrency: int = 10
    turns: tuple[int, int] = (2, 4)
    arrival_rate: float = 0.0  # sessions/s, Poisson; 0 = all intended at t=0
    think_time_s: tuple[float, float] = (0.0, 0.0)
    delete_at_end: bool = True
    create: bool = True  # POST /sessions first; False models sessions that already exist (steady state)
    collect_at_end: bool = True  # GET before DELETE, as the agents do
    max_retries: int = 3
    timeout_s: float = 10.0
    timeout_retries: int = 1
    delete_during_proxy: float = 0.0  # per session
    delete_delay_ms: tuple[float, float] = (2.0, 20.0)
    duplicate_inflight: float = 0.0  # per turn
    duplicate_delay_ms: tuple[float, float] = (0.0, 10.0)


@dataclass(frozen=True)
class Stalls:
    """Whole-process stalls: a GC pause or the OS descheduling a server freezes every request on it at once.

    Per server process, stalls start at exponential intervals (``rate_per_s`` per simulated second)
    and each occupies the process's event loop for a duration drawn from ``durations_ms`` (an
    empirical table, e.g. the stalls :func:`harness.model.calibrate` found in a run). Off by
    default (rate 0); ``harness model --no-stalls`` switches calibrated stalls off.
    """

    rate_per_s: float = 0.0
    durations_ms: tuple[float, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0 and any(d > 0 for d in self.durations_ms)

    def to_json(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "durations_ms": list(self.durations_ms)}


@dataclass(frozen=True)
class ModelParams:
    name: str = "model"
    seed: int = 0
    costs: Costs = field(default_factory=Costs)
    deployment: Deployment = field(default_factory=Deployment)
    workload: Workload = field(default_factory=Workload)
    tokens: Tokens = field(default_factory=Tokens)
    plan: FaultPlan = field(default_factory=FaultPlan)
    # Residuals (observed - fitted, ms) of each calibration fit at evenly spaced quantiles; each
    # cost draws one, so the model's costs vary as the calibration run's did. Empty: fixed costs.
    noise: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    stalls: Stalls = field(default_factory=Stalls)

    def replace(self, **changes: Any) -> ModelParams:
        """A copy with some sub-fields changed: ``replace(processes=4, sessions=1000, costs=...)``."""
        top: dict[str, Any] = {}
        subs: dict[str, dict[str, Any]] = {"deployment": {}, "workload": {}, "tokens": {}}
        names = {s: {f.name for f in dataclasses.fields(getattr(self, s))} for s in subs}
        for k, v in changes.items():
            if k in ("name", "seed", "costs", "plan", "deployment", "workload", "tokens", "noise", "stalls"):
                top[k] = v
                continue
            for s, fields in names.items():
                if k in fields:
                    subs[s][k] = v
                    break
            else:
                raise ParamsError(f"unknown model parameter {k!r}")
        for s, kv in subs.items():
            if kv:
                top[s] = dataclasses.replace(top.get(s, getattr(self, s)), **kv)
        return dataclasses.replace(self, **top)

    def as_live(self, cores: int, background: float = 0.0) -> ModelParams:
        """As ``harness run`` deploys it on one machine: every agent on one loop, the fake on one loop,
        all loops sharing ``cores``."""
        return self.replace(client_loops=1, backend_loops=1, machine_cores=cores, machine_background=background)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "costs": self.costs.to_json(),
            "deployment": dataclasses.asdict(self.deployment),
            "workload": dataclasses.asdict(self.workload),
            "tokens": dataclasses.asdict(self.tokens),
            "plan": self.plan.describe(),
            "stalls": self.stalls.to_json(),
        }


def _forced_rules(forced: Mapping[str, float]) -> tuple[Rule, ...]:
    """Client-forced faults (``x-fake-fault`` on a turn's first attempt) as plan rules with the same rate."""
    out = []
    for name in sorted(forced):
        p = float(forced[name])
        if p > 0:
            fault = FaultSpec(name.split(";")[0])
            out.append(Rule(fault=fault, attempt=IntMatch(values=frozenset([0])), probability=p, name=f"forced:{name}"))
    return tuple(out)


def from_scenario(sc: Any) -> ModelParams:
    """ModelParams for a validated :class:`harness.scenario.Scenario` (same workload, backend, target)."""
    return from_plain(sc.to_plain(), str(sc.source))


def from_plain(d: Mapping[str, Any], source: str = "<scenario>") -> ModelParams:
    """ModelParams from a scenario as plain data (``Scenario.to_plain()``, a run folder's scenario.json)."""
    backend = d.get("backend") or {}
    plan_data = backend.get("plan") or {k: backend[k] for k in ("latency", "generation", "rules") if k in backend}
    try:
        plan = parse_plan(plan_data, f"{source}: backend")
    except PlanError as exc:
        raise ParamsError(str(exc)) from None
    target = d.get("target") or {}
    w = d.get("workload") or {}
    a = d.get("agent") or {}
    ch = d.get("chaos") or {}
    forced = _forced_rules(ch.get("forced_faults") or {})
    if forced:
        # forced faults hit a turn's first attempt, before the plan's rules (the header wins on the fake)
        plan = dataclasses.replace(plan, rules=forced + plan.rules)
    dw, da = Workload(), Deployment()

    def pair(v: Any, default: tuple[Any, Any]) -> tuple[Any, Any]:
        if isinstance(v, list | tuple) and len(v) == 2:
            return (v[0], v[1])
        if isinstance(v, int | float) and not isinstance(v, bool):
            return (v, v)
        return default

    return ModelParams(
        name=str(d.get("name", "model")),
        seed=int(d.get("seed", 0)),
        deployment=Deployment(
            processes=int(target.get("processes", da.processes) or 1),
            tokenize_in_thread="--no-tokenize-thread" not in (target.get("server_args") or ()),
            lock_restore="lock_restore" in (target.get("variants") or ()),
        ),
        workload=Workload(
            sessions=int(w.get("sessions", dw.sessions)),
            concurrency=int(w.get("concurrency", dw.concurrency)),
            turns=pair(w.get("turns"), dw.turns),
            arrival_rate=float(w.get("arrival_rate", dw.arrival_rate)),
            think_time_s=pair(w.get("think_time_s"), dw.think_time_s),
            delete_at_end=bool(w.get("delete_at_end", dw.delete_at_end)),
            max_retries=int(a.get("max_retries", dw.max_retries)),
            timeout_s=float(a.get("timeout_s", dw.timeout_s)),
            timeout_retries=int(a.get("timeout_retries", dw.timeout_retries)),
            delete_during_proxy=float(ch.get("delete_during_proxy", 0.0)),
            delete_delay_ms=pair(ch.get("delete_delay_ms"), dw.delete_delay_ms),
            duplicate_inflight=float(ch.get("duplicate_inflight", 0.0)),
            duplicate_delay_ms=pair(ch.get("duplicate_delay_ms"), dw.duplicate_delay_ms),
        ),
        plan=plan,
    )


# ---------------------------------------------------------------- the params TOML

_SECTIONS = ("name", "seed", "deployment", "workload", "tokens", "costs", "backend", "stalls")


def _stalls(data: Any, source: str) -> Stalls:
    if not isinstance(data, Mapping):
        raise ParamsError(f"{source}: key 'stalls': expected a table")
    for k in data:
        if k not in ("rate_per_s", "durations_ms"):
            raise ParamsError(f"{source}: key 'stalls.{k}': unknown; allowed: rate_per_s, durations_ms")
    rate = data.get("rate_per_s", 0.0)
    durs = data.get("durations_ms", [])
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
        raise ParamsError(f"{source}: key 'stalls.rate_per_s': expected a non-negative number, got {rate!r}")
    if not isinstance(durs, list) or not all(
        isinstance(d, int | float) and not isinstance(d, bool) and d >= 0 for d in durs
    ):
        raise ParamsError(f"{source}: key 'stalls.durations_ms': expected a list of non-negative numbers, got {durs!r}")
    return Stalls(rate_per_s=float(rate), durations_ms=tuple(float(d) for d in durs))


def _section(cls: type, data: Any, key: str, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ParamsError(f"{source}: key {key!r}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    default = cls()
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ParamsError(f"{source}: key '{key}.{k}': unknown; {hint}allowed: {', '.join(fields)}")
        want = getattr(default, k)
        if isinstance(want, bool):
            ok = isinstance(v, bool)
        elif isinstance(want, tuple):
            if isinstance(v, int | float) and not isinstance(v, bool):
                v = [v, v]
            ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v)
            if ok:
                v = tuple(type(want[0])(x) for x in v)
        elif isinstance(want, int):
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        else:
            ok = isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
            v = float(v) if ok else v
        if not ok:
            raise ParamsError(f"{source}: key '{key}.{k}': expected {type(want).__name__} like {want!r}, got {v!r}")
        out[k] = v
    return cls(**out)


def load_params(path: str | Path) -> ModelParams:
    """A params TOML: ``[deployment] [workload] [tokens] [costs]`` and ``[backend]`` in the fake's plan format."""
    p = Path(path)
    source = str(p)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParamsError(f"{source}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{source}: not valid TOML: {exc}") from None
    return params_from_mapping(data, source)


def params_from_mapping(data: Mapping[str, Any], source: str = "<params>") -> ModelParams:
    for k in data:
        if k not in _SECTIONS:
            raise ParamsError(f"{source}: key {k!r}: unknown; allowed: {', '.join(_SECTIONS)}")
    try:
        plan = parse_plan(data.get("backend", {}), f"{source}: backend")
    except PlanError as exc:
        raise ParamsError(str(exc)) from None
    return ModelParams(
        name=str(data.get("name", Path(source).stem)),
        seed=int(data.get("seed", 0)),
        deployment=_section(Deployment, data.get("deployment", {}), "deployment", source),
        workload=_section(Workload, data.get("workload", {}), "workload", source),
        tokens=_section(Tokens, data.get("tokens", {}), "tokens", source),
        costs=Costs.from_json(data.get("costs", {}), f"{source}: costs"),
        plan=plan,
        stalls=_stalls(data.get("stalls", {}), source),
    )
