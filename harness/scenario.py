"""Scenarios are data: a TOML file, validated completely before anything starts.

A scenario names the target (our reference server with a variant, or the
user's own deployment), the fake backend and its fault plan, the workload,
how the agents behave, the client chaos, the checks and the latency SLOs.
One ``seed`` drives every random choice, so a run is named by (file, seed).

Why validate up front: a typo such as ``delete_durng_proxy = 0.2`` that is
silently ignored yields a green run that tested nothing. Every error names
the file, the dotted key and what was expected or allowed (with a
did-you-mean for unknown keys), in the style of Hypothesis' misuse errors.

The schema is documented in ``docs/scenarios.md``; :meth:`Scenario.to_plain`
is what checkers see as ``RunData.scenario`` (docs/contracts.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import shlex
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.runfolder import check_safe_name
from harness.serverlog import LogConfig, LogConfigError

__all__ = [
    "COMMAND_PLACEHOLDERS",
    "GATE_BUCKETS",
    "SLO_BUCKETS",
    "TARGET_KINDS",
    "AgentSpec",
    "BackendSpec",
    "BucketGate",
    "ChaosSpec",
    "ChecksSpec",
    "GateSpec",
    "KillRestart",
    "Outage",
    "Scenario",
    "ScenarioError",
    "ScriptStep",
    "TargetSpec",
    "WorkloadSpec",
    "expand_variants",
    "load_scenario",
    "parse_scenario",
]

CLIENT_KINDS = ("httpx", "openai", "aiohttp", "httpx-lib")  # httpx-lib: the library itself (agents/_clients.py)
SLO_BUCKETS = (
    "lock_wait_ms",
    "tokenize_in_ms",
    "proxy_elapsed_ms",
    "tokenize_out_ms",
    "total_ms",
    "client_request_ms",
    "client_turn_ms",
)
DEFAULT_VARIANT = "default"
# The buckets the regression gate (``harness compare``) judges unless ``[gate] buckets`` says otherwise:
# the server's own timing, one ``chat_done`` line per chat request (docs/ci.md).
GATE_BUCKETS = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
GATE_KEYS = ("percentile", "threshold", "floor_ms")


class ScenarioError(ValueError):
    """A scenario that cannot run: names the file, the key and the fix."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: key {key!r}" if key else file
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------- the schema


TARGET_KINDS = ("reference", "command", "urls")
# ``{name}`` placeholders of a command target's ``cmd`` (and ``env`` values), filled per process.
COMMAND_PLACEHOLDERS = ("port", "host", "backend_url", "tokenizer", "index", "log_file", "python")


@dataclass(frozen=True)
class TargetSpec:
    """Which session server a run drives.

    ``reference``: our server, started by the runner. ``command``: the user's
    server, started by the runner from ``cmd`` (one process per ``processes``,
    each on its own free loopback port) against a fake SGLang the runner also
    starts. ``urls``: a deployment that already runs; the runner neither starts
    nor stops anything, so process chaos cannot happen and the fault plan
    reaches the backend only if ``backend_url`` is a fake SGLang that takes
    ``PUT /admin/plan``.
    """

    kind: str = "reference"  # "reference" | "command" | "urls"
    processes: int = 1
    variants: tuple[str, ...] = ()  # applied together to every process
    compare: tuple[str, ...] = ()  # one run per entry ("default", "lock_restore", "a+b")
    tokenizer: str | None = None
    server_args: tuple[str, ...] = ()  # extra CLI args for every server process
    urls: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()  # urls target: the node each url's server runs on (`run --ray`, docs/distributed.md)
    backend_url: str | None = None
    startup_timeout_s: float = 20.0
    cmd: tuple[str, ...] = ()  # command target: argv template with {placeholders}
    env: Mapping[str, str] = field(default_factory=dict)  # command target: extra environment (placeholders too)
    cwd: str | None = None  # command target: working directory of the server processes
    health_path: str = "/health"  # polled until 200 before the workload starts

    @property
    def process_control(self) -> bool:
        """True when the runner starts the server processes itself (so it can kill and restart them)."""
        return self.kind in ("reference", "command")

    protocol: Mapping[str, str] = field(default_factory=dict)  # [target.protocol]: names the protocol leaves open
    logs: LogConfig = field(default_factory=LogConfig)  # [target.logs]: how to read the servers' logs


@dataclass(frozen=True)
class BackendSpec:
    seed: int = 0
    latency: Mapping[str, Any] = field(default_factory=dict)  # fake plan "latency" table
    generation: Mapping[str, Any] = field(default_factory=dict)  # fake plan "generation" table
    rules: tuple[Mapping[str, Any], ...] = ()  # fake plan [[rules]]

    def plan(self) -> dict[str, Any]:
        """The fake SGLang's plan (harness/fake_sglang/plan.py format)."""
        out: dict[str, Any] = {"rules": [dict(r) for r in self.rules]}
        if self.latency:
            out["latency"] = dict(self.latency)
        if self.generation:
            out["generation"] = dict(self.generation)
        return out

    def fault_classes(self) -> list[str]:
        return sorted({str(r["fault"]) for r in self.rules if r.get("fault") not in (None, "none")})


SCRIPT_KINDS = ("create", "chat", "delete")


@dataclass(frozen=True)
class ScriptStep:
    """One request of a scripted workload (``[[workload.script]]``): who sends what, when.

    A script replays an incident's requests as they happened (harness.incident
    writes them from production log lines): each step starts at ``at_s``
    seconds after the run start, whatever the steps before it did, so the
    overlaps of the original survive. ``fault`` is the ``x-fake-fault`` header
    sent with that one chat (a backend outcome pinned to the request itself, not
    to a session id the server will only choose at run time); ``expect`` is the
    outcome the original log recorded, for comparing a replay with it.

    ``done_s`` keeps the original's causality: a step does not start before
    every step of its session that had ended (``done_s``) when it started in
    the original has ended in this run, plus the same gap. So a turn sent after
    the previous answer still follows it when the replay's answer is late,
    while requests that overlapped in the original still overlap.
    """

    session: str  # a label; the session the server creates for its "create" step
    kind: str = "chat"  # create | chat | delete
    at_s: float = 0.0
    done_s: float | None = None  # when it ended in the original: later steps of the session wait for it
    turn: int = 0
    attempt: int = 0
    process: int = 0  # server index the request goes to
    fault: str | None = None  # x-fake-fault value (chat only)
    abort_after_ms: float | None = None  # the backend aborts this chat that long after it was sent (chat only)
    request_id: str | None = None  # x-request-id (the original caller_request_id)
    expect: str | None = None  # chat_done outcome (chat) or status (delete) in the original


@dataclass(frozen=True)
class WorkloadSpec:
    sessions: int = 10
    concurrency: int = 10
    turns: tuple[int, int] = (2, 4)  # inclusive range per session
    arrival_rate: float = 0.0  # sessions/s, Poisson; 0 = all intended at t=0
    think_time_s: tuple[float, float] = (0.0, 0.0)
    duration_s: float = 30.0  # hard bound on the whole workload
    tool_call_probability: float = 0.0  # the backend answers with tool_calls
    tool_retry_probability: float = 0.0  # per tool step: redo it with another result (rollback)
    first_turn_retry_probability: float = 0.0  # per session: redo turn 0 with another user message
    delete_at_end: bool = True
    script: tuple[ScriptStep, ...] = ()  # scripted sessions replace the generated ones
    fuzz: int = 0  # bad client requests derived from the chat request schema (harness/fuzz.py)


@dataclass(frozen=True)
class AgentSpec:
    clients: Mapping[str, float] = field(default_factory=lambda: {"httpx": 1.0})  # kind -> weight
    litellm_remap: bool = False
    max_retries: int = 3  # abort / 5xx retries of one turn
    timeout_s: float = 10.0
    timeout_retries: int = 1
    stream_probability: float = 0.0  # per chat: ask for SSE (every client; the openai one through the SDK)
    # sent as the body's chat_template_kwargs (e.g. enable_thinking = false), with this probability per chat
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    template_kwargs_probability: float = 1.0
    # resend each assistant turn with its reasoning_content (as real agent clients echo a reasoning parser's
    # field), and open each episode with a worked example exchange whose answer carries its reasoning
    send_reasoning: bool = False
    demonstration: bool = False
    # a slow link: a chat's body goes in ``upload_chunks`` pieces spread over a seeded draw from ``upload_ms``
    # (first piece to last), Content-Length declared; 1 piece (the default) is the body at once
    upload_chunks: int = 1
    upload_ms: tuple[float, float] = (0.0, 0.0)
    upload_probability: float = 1.0  # per chat, when upload_chunks > 1
    # resend each earlier assistant tool call with its arguments re-serialized (the same JSON value, written
    # compact with sorted keys, as a client that parsed them into a map writes them back, e.g. Go's
    # encoding/json), per chat with this probability
    reserialize_tool_arguments: float = 0.0


@dataclass(frozen=True)
class KillRestart:
    process: int
    at_s: float
    restart_after_s: float = 0.5


@dataclass(frozen=True)
class Outage:
    at_s: float
    duration_s: float
    fault: str = "http_503"


@dataclass(frozen=True)
class ChaosSpec:
    delete_during_proxy: float = 0.0  # per session
    delete_delay_ms: tuple[float, float] = (2.0, 20.0)  # after the chat was sent
    disconnect: float = 0.0  # per session: abandon a chat mid-request, then DELETE
    disconnect_after_ms: tuple[float, float] = (2.0, 20.0)
    duplicate_inflight: float = 0.0  # per turn: a second copy of the request while the first is in flight
    duplicate_delay_ms: tuple[float, float] = (0.0, 10.0)
    client_delay_ms: tuple[float, float] = (0.0, 0.0)  # sim only: per-request client send and receive delay
    wrong_process_probes: float = 0.0  # per session (needs processes >= 2 or urls >= 2)
    forced_faults: Mapping[str, float] = field(default_factory=dict)  # x-fake-fault name -> per-request probability
    kill_restart: tuple[KillRestart, ...] = ()
    backend_outage: tuple[Outage, ...] = ()


@dataclass(frozen=True)
class ChecksSpec:
    enabled: tuple[str, ...] = ("all",)
    liveness_bound_s: float = 30.0
    options: Mapping[str, Any] = field(default_factory=dict)  # free-form, passed to checkers
    strict: bool = False  # unknown verdicts and declared-but-not-exercised faults fail the run
    fail_on_unknown: bool = False  # an unknown verdict (or SLO without samples) makes the run "cannot judge", exit 3


@dataclass(frozen=True)
class BucketGate:
    """How ``harness compare`` judges one bucket: a regression is above BOTH bounds."""

    percentile: float = 99.0
    threshold: float = 0.10  # relative: current / baseline - 1
    floor_ms: float = 1.0  # absolute: current - baseline, so a near-zero bucket's noise is not a regression


@dataclass(frozen=True)
class GateSpec:
    """``[gate]``: the buckets the regression gate judges, each with its own bounds."""

    buckets: Mapping[str, BucketGate] = field(default_factory=lambda: {b: BucketGate() for b in GATE_BUCKETS})


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    seed: int = 0
    default: bool = False  # part of the default suite (`make run`)
    target: TargetSpec = field(default_factory=TargetSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    agent: AgentSpec = field(default_factory=AgentSpec)
    chaos: ChaosSpec = field(default_factory=ChaosSpec)
    checks: ChecksSpec = field(default_factory=ChecksSpec)
    slo: Mapping[str, float] = field(default_factory=dict)  # bucket -> p99 bound (ms)
    gate: GateSpec = field(default_factory=GateSpec)
    source: str = "<memory>"

    @property
    def variant_label(self) -> str:
        return "+".join(self.target.variants) or DEFAULT_VARIANT

    def to_plain(self) -> dict[str, Any]:
        """Plain JSON data for ``RunData.scenario`` (what checkers and reports read)."""
        d: dict[str, Any] = _plain(dataclasses.asdict(self))
        d["backend"]["faults"] = self.fault_classes()
        d["backend"]["plan"] = self.backend.plan()
        d["target"]["variant"] = self.variant_label
        d["target"]["process_control"] = self.target.process_control  # the runner may overwrite with what happened
        d["target"]["faults_applied"] = self.target.kind != "urls" or self.target.backend_url is not None
        d["checks"]["enabled"] = list(self.checks.enabled)
        return d

    def fault_classes(self) -> list[str]:
        """Every fault class this run may inject: plan rules, forced headers, outages."""
        out = set(self.backend.fault_classes())
        out.update(k for k, p in self.chaos.forced_faults.items() if p > 0)
        out.update(o.fault for o in self.chaos.backend_outage)
        return sorted(out)

    def with_variants(self, variants: Sequence[str]) -> Scenario:
        t = dataclasses.replace(self.target, variants=tuple(variants), compare=())
        return dataclasses.replace(self, target=t)

    def with_tokenizer(self, tokenizer: str | None) -> Scenario:
        """The same scenario with the fake and every server on ``tokenizer`` (a name or folder; None keeps it)."""
        if tokenizer is None:
            return self
        return dataclasses.replace(self, target=dataclasses.replace(self.target, tokenizer=tokenizer))


# Bounds for numbers that name no tighter one (docs/scenarios.md, "Bounds"): large enough for any real
# deployment, small enough that a typo cannot make the harness allocate or wait for ever.
MAX_NUMBER = 1e9
MAX_TURNS = 1000


def _check_finite(file: str, data: Any, path: str) -> None:
    """Every number anywhere in the file is finite (TOML allows nan and inf; nothing here means them)."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ScenarioError(file, path, f"must be a finite number, got {data!r}")
    if isinstance(data, Mapping):
        for k, v in data.items():
            _check_finite(file, v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_finite(file, v, f"{path}[{i}]")


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def expand_variants(sc: Scenario) -> list[Scenario]:
    """One scenario per ``target.compare`` entry ("a+b" = both variants), or the scenario itself."""
    if not sc.target.compare:
        return [sc]
    out = []
    for entry in sc.target.compare:
        vs = [] if entry == DEFAULT_VARIANT else [v for v in entry.split("+") if v]
        out.append(sc.with_variants(vs))
    return out


# ---------------------------------------------------------------- validation


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


class _Table:
    """Typed reads from one TOML table; unknown keys are errors at ``done()``."""

    def __init__(self, file: str, data: Mapping[str, Any], path: str) -> None:
        self.file = file
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def err(self, k: str, msg: str) -> ScenarioError:
        return ScenarioError(self.file, self.key(k), msg)

    def has(self, k: str) -> bool:
        return k in self.data

    def raw(self, k: str, default: Any = None) -> Any:
        self.seen.add(k)
        return self.data.get(k, default)

    def str_(self, k: str, default: str | None, choices: Sequence[str] | None = None) -> Any:
        v = self.raw(k, default)
        if v is None:
            return None
        if not isinstance(v, str):
            raise self.err(k, f"expected a string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.err(k, f"{v!r} is not allowed; {_did_you_mean(v, choices)}allowed: {', '.join(choices)}")
        return v

    def bool_(self, k: str, default: bool) -> bool:
        v = self.raw(k, default)
        if not isinstance(v, bool):
            raise self.err(k, f"expected true or false, got {v!r}")
        return v

    def int_(self, k: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        v = self.raw(k, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(k, f"expected an integer, got {v!r}")
        self._bounds(k, v, lo, hi)
        return v

    def float_(self, k: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        return self._num(k, self.raw(k, default), lo, hi)

    def prob(self, k: str, default: float = 0.0) -> float:
        return self.float_(k, default, 0.0, 1.0)

    def _num(self, k: str, v: Any, lo: float | None, hi: float | None) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.err(k, f"expected a number, got {v!r}")
        if not math.isfinite(v):
            raise self.err(k, f"must be a finite number, got {v!r}")
        self._bounds(k, v, lo, hi)
        return float(v)

    def _bounds(self, k: str, v: float, lo: float | None, hi: float | None) -> None:
        hi = MAX_NUMBER if hi is None else hi
        lo = -MAX_NUMBER if lo is None else lo
        if lo is not None and v < lo:
            raise self.err(k, f"must be >= {lo:g}, got {v!r}")
        if hi is not None and v > hi:
            raise self.err(k, f"must be <= {hi:g}, got {v!r}")

    def frange(self, k: str, default: tuple[float, float], lo: float = 0.0) -> tuple[float, float]:
        """A number, or ``[min, max]``."""
        v = self.raw(k, list(default))
        if isinstance(v, int | float) and not isinstance(v, bool):
            x = self._num(k, v, lo, None)
            return (x, x)
        if not isinstance(v, list) or len(v) != 2:
            raise self.err(k, f"expected a number or [min, max], got {v!r}")
        a, b = (self._num(k, x, lo, None) for x in v)
        if a > b:
            raise self.err(k, f"[min, max] with min <= max, got {v!r}")
        return (a, b)

    def irange(self, k: str, default: tuple[int, int], lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        v = self.raw(k, list(default))
        if isinstance(v, int) and not isinstance(v, bool):
            self._bounds(k, v, lo, hi)
            return (v, v)
        if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self.err(k, f"expected an integer or [min, max] of integers, got {v!r}")
        for x in v:
            self._bounds(k, x, lo, hi)
        if v[0] > v[1]:
            raise self.err(k, f"[min, max] with min <= max, got {v!r}")
        return (v[0], v[1])

    def strs(self, k: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        v = self.raw(k, list(default))
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err(k, f"expected a list of strings, got {v!r}")
        return tuple(v)

    def table(self, k: str) -> _Table:
        v = self.raw(k, {})
        if not isinstance(v, Mapping):
            raise self.err(k, f"expected a table ([{self.key(k)}]), got {v!r}")
        return _Table(self.file, v, self.key(k))

    def tables(self, k: str) -> list[_Table]:
        v = self.raw(k, [])
        if not isinstance(v, list) or not all(isinstance(x, Mapping) for x in v):
            raise self.err(k, f"expected an array of tables ([[{self.key(k)}]]), got {v!r}")
        return [_Table(self.file, x, f"{self.key(k)}[{i}]") for i, x in enumerate(v)]

    def done(self) -> None:
        for k in self.data:
            if k not in self.seen:
                allowed = sorted(self.seen)
                raise self.err(k, f"unknown key; {_did_you_mean(k, allowed)}allowed here: {', '.join(allowed)}")


def _known_variants() -> tuple[str, ...] | None:
    try:
        from reference_impl.config import VARIANTS
    except ImportError:  # pragma: no cover - reference server not built yet
        return None
    return tuple(sorted(VARIANTS))


def _known_checkers() -> tuple[str, ...] | None:
    try:
        from harness.checkers import CHECKERS  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    return tuple(CHECKERS)


def _tokenizer_key(t: _Table) -> str | None:
    """``tokenizer = "NAME|DIR"``: a shipped family or a tokenizer folder. A relative DIR is looked up beside
    the scenario file first (a scenario that ships its own tokenizer works from any working directory and
    from the installed library), then relative to the working directory; the folder found is kept absolute."""
    value = t.str_("tokenizer", None)
    if value is None:
        return None
    from harness.tokenizer import SHIPPED, TokenizerError, resolve_tokenizer

    if value not in SHIPPED and value.strip() and not Path(value).expanduser().is_absolute():
        beside = (Path(t.file).resolve().parent / value).resolve()
        if beside.is_dir():
            value = str(beside)
    try:
        resolve_tokenizer(value)
    except TokenizerError as exc:
        raise t.err("tokenizer", str(exc).removeprefix("--tokenizer ")) from None
    return str(value)


def _parse_logs(t: _Table) -> LogConfig:
    """``[target.logs]``: format, field and event name tables, free-text patterns (harness.serverlog)."""
    try:
        cfg = LogConfig.from_mapping(t.data)
    except LogConfigError as exc:
        fix = {
            "format": 'use format = "auto" (JSON or key=value), "json" or "kv"',
            "fields": 'map their field names to ours, e.g. fields = { request_id = "req_id", latency_ms = "total_ms" }',
            "events": 'map their event names to ours, e.g. events = { request_finished = "chat_done" }',
            "patterns": 'a regex per event, e.g. patterns = { state_changed_during_proxy = "moved on while" }',
        }.get(exc.key.split(".")[0], "")
        raise t.err(exc.key, exc.message + (f"; {fix}" if fix else "")) from None
    for k in t.data:
        t.seen.add(k)
    return cfg


def _parse_target(t: _Table) -> TargetSpec:
    logs = _parse_logs(t.table("logs"))
    kind = t.str_("kind", "reference", TARGET_KINDS)
    variants = t.strs("variants")
    compare = t.strs("compare")
    known = _known_variants()
    if known is not None:
        for key, names in (("variants", variants), ("compare", compare)):
            for entry in names:
                for v in entry.split("+"):
                    if v != DEFAULT_VARIANT and v not in known:
                        raise t.err(key, f"unknown variant {v!r}; {_did_you_mean(v, known)}allowed: {', '.join(known)}")
    if kind == "reference":
        spec = TargetSpec(
            kind=kind,
            processes=t.int_("processes", 1, 1, 64),
            variants=tuple(v for v in variants if v != DEFAULT_VARIANT),
            compare=compare,
            tokenizer=_tokenizer_key(t),
            server_args=t.strs("server_args"),
            startup_timeout_s=t.float_("startup_timeout_s", 20.0, 1.0, 300.0),
        )
    elif kind == "command":
        if compare:
            raise t.err("compare", 'compare needs kind = "reference" (the runner cannot switch your server\'s variant)')
        cmd, env, cwd = _parse_cmd(t), _parse_env(t), _parse_cwd(t)
        if not any("{port}" in a for a in (*cmd, *env.values())):
            raise t.err("cmd", "the harness picks a free port for each process: put {port} in cmd (or in an env value)")
        _check_executable(t, cmd[0], cwd, env)
        spec = TargetSpec(
            kind=kind,
            processes=t.int_("processes", 1, 1, 64),
            variants=tuple(v for v in variants if v != DEFAULT_VARIANT),
            tokenizer=_tokenizer_key(t),
            startup_timeout_s=t.float_("startup_timeout_s", 30.0, 1.0, 600.0),
            cmd=cmd,
            env=env,
            cwd=cwd,
            health_path=_parse_health_path(t),
        )
    else:
        urls = t.strs("urls")
        if not urls:
            raise t.err("urls", 'kind = "urls" needs urls = ["http://127.0.0.1:PORT", ...]')
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise t.err("urls", f"{u!r} is not an http(s) URL")
        if compare:
            raise t.err("compare", 'compare needs kind = "reference" (the runner cannot switch an external server)')
        nodes = t.strs("nodes")
        if nodes and (len(nodes) != len(urls) or not all(nodes)):
            raise t.err("nodes", f"one node name per url: {len(urls)} urls, {len(nodes)} nodes")
        spec = TargetSpec(
            kind=kind,
            processes=len(urls),
            urls=tuple(u.rstrip("/") for u in urls),
            nodes=nodes,
            backend_url=_parse_backend_url(t),
            variants=variants,
            health_path=_parse_health_path(t),
        )
    spec = dataclasses.replace(spec, protocol=_parse_protocol(t.table("protocol")), logs=logs)
    t.done()
    return spec


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CMD_EXAMPLE = 'cmd = "{python} -m your_server --port {port} --backend-url {backend_url}"'


def _check_placeholders(t: _Table, key: str, text: str) -> None:
    for name in _PLACEHOLDER.findall(text):
        if name not in COMMAND_PLACEHOLDERS:
            braced = ["{" + p + "}" for p in COMMAND_PLACEHOLDERS]
            raise t.err(
                key,
                f"unknown placeholder {{{name}}}; {_did_you_mean('{' + name + '}', braced)}"
                f"allowed: {', '.join(braced)}",
            )


def _parse_cmd(t: _Table) -> tuple[str, ...]:
    """``cmd``: a string (split like a shell would, but run without one) or a list of arguments."""
    raw = t.raw("cmd", None)
    if raw is None:
        raise t.err("cmd", f'kind = "command" needs the command that starts one server process, e.g. {_CMD_EXAMPLE}')
    if isinstance(raw, str):
        try:
            argv = shlex.split(raw)
        except ValueError as exc:
            raise t.err("cmd", f"cannot split the command into arguments ({exc}); check its quotes") from None
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        argv = list(raw)
    else:
        raise t.err("cmd", f"expected a string or a list of strings, e.g. {_CMD_EXAMPLE}")
    if not argv:
        raise t.err("cmd", f"the command is empty; e.g. {_CMD_EXAMPLE}")
    for a in argv:
        _check_placeholders(t, "cmd", a)
    return tuple(argv)


def _check_executable(t: _Table, program: str, cwd: str | None, env: Mapping[str, str]) -> None:
    """The program ``cmd`` starts must exist now, not only when the first process fails to start."""
    if _PLACEHOLDER.search(program) or "PATH" in env:
        return  # filled in per process, or looked up on a PATH of the scenario's own
    if "/" in program:
        path = Path(cwd or ".") / program
        if not path.is_file():
            raise t.err("cmd", f"{program!r} does not exist (relative to {cwd or 'where harness runs'})")
    elif shutil.which(program) is None:
        raise t.err("cmd", f"{program!r} is not on PATH; give its path, or {{python}} for the harness's Python")


def _parse_env(t: _Table) -> dict[str, str]:
    env_t = t.table("env")
    out: dict[str, str] = {}
    for k in env_t.data:
        v = env_t.raw(k)
        if not isinstance(v, str):
            raise env_t.err(k, f'expected a string (environment values are text, e.g. {k} = "1"), got {v!r}')
        if not k or "=" in k or "\0" in k:
            raise env_t.err(k, "not a valid environment variable name")
        _check_placeholders(env_t, k, v)
        out[k] = v
    env_t.done()
    return out


def _parse_cwd(t: _Table) -> str | None:
    cwd: str | None = t.str_("cwd", None)
    if cwd is not None and not Path(cwd).is_dir():
        raise t.err("cwd", f"{cwd!r} is not a directory (relative paths count from where harness runs)")
    return cwd


def _parse_health_path(t: _Table) -> str:
    hp = str(t.str_("health_path", "/health"))
    if not hp.startswith("/"):
        raise t.err("health_path", f"a path starting with '/', e.g. \"/health\", got {hp!r}")
    return hp


def _parse_backend_url(t: _Table) -> str | None:
    bu = t.str_("backend_url", None)
    if bu is not None and not bu.startswith(("http://", "https://")):
        raise t.err("backend_url", f"{bu!r} is not an http(s) URL")
    return bu.rstrip("/") if bu is not None else None


PROTOCOL_KEYS = {
    "token_ids_key": "the metadata key holding the accumulated token ids",
    "input_ids_key": "the key inside a record's request holding the prompt ids",
    "request_id_key": "the record field echoing the caller's x-request-id",
    "kind_key": "the record field saying committed or provisional",
}


def _parse_protocol(t: _Table) -> dict[str, str]:
    """``[target.protocol]``: where a server names things the protocol leaves open (docs/checkers.md)."""
    out: dict[str, str] = {}
    for k in PROTOCOL_KEYS:
        v = t.str_(k, None)
        if v is not None:
            if not v:
                raise t.err(k, f"expected a non-empty name: {PROTOCOL_KEYS[k]}")
            out[k] = v
    t.done()
    return out


def _parse_backend(t: _Table, seed: int) -> BackendSpec:
    latency = t.raw("latency", {})
    generation = t.raw("generation", {})
    rules = t.raw("rules", [])
    if not isinstance(latency, Mapping):
        raise t.err("latency", 'expected a table, e.g. latency = { model = "uniform", min_ms = 20, max_ms = 80 }')
    if not isinstance(generation, Mapping):
        raise t.err("generation", "expected a table, e.g. generation = { max_words = 24 }")
    if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
        raise t.err("rules", "expected an array of tables ([[backend.rules]])")
    spec = BackendSpec(
        seed=t.int_("seed", seed, 0),
        latency=dict(latency),
        generation=dict(generation),
        rules=tuple(dict(r) for r in rules),
    )
    t.done()
    _validate_plan(t.file, spec)
    return spec


def _validate_plan(file: str, spec: BackendSpec) -> None:
    """The fake's own plan validation, its errors re-anchored under ``backend.``."""
    try:
        from harness.fake_sglang.plan import PlanError, parse_plan
    except ImportError:  # pragma: no cover - fake not built yet
        return
    try:
        parse_plan(spec.plan(), "@")
    except PlanError as exc:
        msg = str(exc)
        key = ""
        if msg.startswith("@: key '"):
            key, _, rest = msg[len("@: key '") :].partition("': ")
            msg = rest
        elif msg.startswith("@: "):
            msg = msg[3:]
        raise ScenarioError(file, f"backend.{key}" if key else "backend", msg) from None


def _parse_script(t: _Table, processes: int) -> tuple[ScriptStep, ...]:
    steps = []
    for st in t.tables("script"):
        session = st.str_("session", None)
        if not session:
            raise st.err("session", 'a label is required, e.g. session = "s1"')
        kind = st.str_("kind", "chat", SCRIPT_KINDS)
        fault = st.str_("fault", None)
        if fault is not None:
            if kind != "chat":
                raise st.err("fault", "only a chat step sends a request to the backend")
            _validate_fault_names(st, [fault], key="fault")
        abort_after = st.float_("abort_after_ms", 0.0, 0.0) if st.has("abort_after_ms") else None
        if abort_after is not None and kind != "chat":
            raise st.err("abort_after_ms", "only a chat step has a generation to abort")
        expect = st.raw("expect", None)
        if expect is not None and not isinstance(expect, str | int):
            raise st.err("expect", f"expected an outcome name or a status, got {expect!r}")
        steps.append(
            ScriptStep(
                session=session,
                kind=kind,
                at_s=st.float_("at_s", 0.0, 0.0),
                done_s=st.float_("done_s", 0.0, 0.0) if st.has("done_s") else None,
                turn=st.int_("turn", 0, 0),
                attempt=st.int_("attempt", 0, 0),
                process=st.int_("process", 0, 0, processes - 1),
                fault=fault,
                abort_after_ms=abort_after,
                request_id=st.str_("request_id", None),
                expect=None if expect is None else str(expect),
            )
        )
        st.done()
    return tuple(steps)


def _parse_workload(t: _Table, tool_default: float, processes: int = 1) -> WorkloadSpec:
    script = _parse_script(t, processes)
    n_script = len(dict.fromkeys(s.session for s in script))
    if script and t.has("sessions") and t.data["sessions"] != n_script:
        raise t.err("sessions", f"the script names {n_script} session(s); leave sessions out or set it to that")
    spec = WorkloadSpec(
        sessions=t.int_("sessions", 10, 1, 100_000),
        concurrency=t.int_("concurrency", 10, 1, 10_000),
        turns=t.irange("turns", (2, 4), lo=1, hi=MAX_TURNS),
        arrival_rate=t.float_("arrival_rate", 0.0, 0.0),
        think_time_s=t.frange("think_time_s", (0.0, 0.0)),
        duration_s=t.float_("duration_s", 30.0, 0.1, 3600.0),
        tool_call_probability=t.prob("tool_call_probability", tool_default),
        tool_retry_probability=t.prob("tool_retry_probability"),
        first_turn_retry_probability=t.prob("first_turn_retry_probability"),
        delete_at_end=t.bool_("delete_at_end", True),
        script=script,
        fuzz=t.int_("fuzz", 0, 0, 10_000),
    )
    if script:  # the script is the workload: one agent per scripted session, all free to run at once
        spec = dataclasses.replace(spec, sessions=n_script, concurrency=max(spec.concurrency, n_script))
    t.done()
    return spec


def _parse_agent(t: _Table) -> AgentSpec:
    raw = t.raw("client", "httpx")
    clients: dict[str, float]
    if isinstance(raw, str):
        if raw not in CLIENT_KINDS:
            raise t.err("client", f"{raw!r}: {_did_you_mean(raw, CLIENT_KINDS)}allowed: {', '.join(CLIENT_KINDS)}")
        clients = {raw: 1.0}
    elif isinstance(raw, Mapping):
        clients = {}
        for k, w in raw.items():
            if k not in CLIENT_KINDS:
                raise t.err(
                    f"client.{k}", f"unknown client; {_did_you_mean(k, CLIENT_KINDS)}allowed: {', '.join(CLIENT_KINDS)}"
                )
            if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
                raise t.err(f"client.{k}", f"expected a non-negative weight, got {w!r}")
            clients[k] = float(w)
        if not any(w > 0 for w in clients.values()):
            raise t.err("client", "at least one client needs a positive weight")
    else:
        raise t.err(
            "client",
            'expected "httpx" | "openai" | "aiohttp" | "httpx-lib", or weights such as { httpx = 2, openai = 1 }',
        )
    spec = AgentSpec(
        clients=clients,
        litellm_remap=t.bool_("litellm_remap", False),
        max_retries=t.int_("max_retries", 3, 0, 100),
        timeout_s=t.float_("timeout_s", 10.0, 0.01, 600.0),
        timeout_retries=t.int_("timeout_retries", 1, 0, 100),
        stream_probability=t.prob("stream_probability"),
        chat_template_kwargs=_template_kwargs(t),
        template_kwargs_probability=t.prob("template_kwargs_probability", 1.0),
        send_reasoning=t.bool_("send_reasoning", False),
        demonstration=t.bool_("demonstration", False),
        upload_chunks=t.int_("upload_chunks", 1, 1, 64),
        upload_ms=t.frange("upload_ms", (0.0, 0.0)),
        upload_probability=t.prob("upload_probability", 1.0),
        reserialize_tool_arguments=t.prob("reserialize_tool_arguments"),
    )
    if spec.upload_chunks == 1:  # a knob of the slow upload without the slow upload: it would silently do nothing
        for k in ("upload_ms", "upload_probability"):
            if t.has(k):
                raise t.err(k, "applies only to a slow upload: set agent.upload_chunks > 1 too (4, say)")
    if spec.upload_ms[1] > 10_000.0:
        raise t.err("upload_ms", f"a slow upload is bounded: at most 10000 ms, got {spec.upload_ms[1]:g}")
    if spec.upload_ms[1] / 1000.0 >= spec.timeout_s:
        raise t.err(
            "upload_ms", f"must stay below the client timeout ({spec.timeout_s:g} s): the upload is the request"
        )
    t.done()
    return spec


def _template_kwargs(t: _Table) -> dict[str, Any]:
    """``chat_template_kwargs = { enable_thinking = false }``: identifier keys, scalar values."""
    raw = t.raw("chat_template_kwargs", {})
    if not isinstance(raw, Mapping):
        raise t.err("chat_template_kwargs", f"expected a table such as {{ enable_thinking = false }}, got {raw!r}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if not k.isidentifier():
            raise t.err(f"chat_template_kwargs.{k}", "a template variable name must be an identifier")
        if not isinstance(v, bool | int | float | str) or (isinstance(v, float) and not math.isfinite(v)):
            raise t.err(f"chat_template_kwargs.{k}", f"expected a boolean, number or string, got {v!r}")
        out[k] = v
    return out


def _parse_chaos(t: _Table, target: TargetSpec) -> ChaosSpec:
    forced_t = t.table("forced_faults")
    forced = {k: forced_t.prob(k) for k in forced_t.data}
    forced_t.done()
    _validate_fault_names(forced_t, list(forced))
    kills = []
    for kt in t.tables("kill_restart"):
        k = KillRestart(
            process=kt.int_("process", 0, 0, target.processes - 1),
            at_s=kt.float_("at_s", 1.0, 0.0),
            restart_after_s=kt.float_("restart_after_s", 0.5, 0.0),
        )
        kt.done()
        kills.append(k)
    outages = []
    for ot in t.tables("backend_outage"):
        o = Outage(
            at_s=ot.float_("at_s", 1.0, 0.0),
            duration_s=ot.float_("duration_s", 1.0, 0.0),
            fault=ot.str_("fault", "http_503"),
        )
        _validate_fault_names(ot, [o.fault], key="fault")
        ot.done()
        outages.append(o)
    spec = ChaosSpec(
        delete_during_proxy=t.prob("delete_during_proxy"),
        delete_delay_ms=t.frange("delete_delay_ms", (2.0, 20.0)),
        disconnect=t.prob("disconnect"),
        disconnect_after_ms=t.frange("disconnect_after_ms", (2.0, 20.0)),
        duplicate_inflight=t.prob("duplicate_inflight"),
        duplicate_delay_ms=t.frange("duplicate_delay_ms", (0.0, 10.0)),
        client_delay_ms=t.frange("client_delay_ms", (0.0, 0.0)),
        wrong_process_probes=t.prob("wrong_process_probes"),
        forced_faults=forced,
        kill_restart=tuple(kills),
        backend_outage=tuple(outages),
    )
    if spec.wrong_process_probes > 0 and target.processes < 2:
        raise t.err("wrong_process_probes", "needs at least 2 server processes (target.processes >= 2)")
    t.done()
    return spec


def _validate_fault_names(t: _Table, names: list[str], key: str | None = None) -> None:
    try:
        from harness.fake_sglang.plan import PlanError, parse_fault_header
    except ImportError:  # pragma: no cover
        return
    for n in names:
        try:
            parse_fault_header(n)
        except PlanError as exc:
            raise t.err(key or n, str(exc).split(": ", 2)[-1]) from None


def _parse_checks(t: _Table) -> ChecksSpec:
    enabled = t.strs("enabled", ("all",))
    known = _known_checkers()
    if known is not None:
        for n in enabled:
            if n != "all" and n not in known:
                raise t.err(
                    "enabled", f"unknown checker {n!r}; {_did_you_mean(n, known)}allowed: all, {', '.join(known)}"
                )
    opts = t.raw("options", {})
    if not isinstance(opts, Mapping):
        raise t.err("options", "expected a table")
    spec = ChecksSpec(
        enabled=enabled,
        liveness_bound_s=t.float_("liveness_bound_s", 30.0, 0.0),
        options=dict(opts),
        strict=t.bool_("strict", False),
        fail_on_unknown=t.bool_("fail_on_unknown", False),
    )
    t.done()
    return spec


def _parse_slo(t: _Table) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in list(t.data):
        if k.removeprefix("p99_") not in SLO_BUCKETS:
            allowed = [f"p99_{b}" for b in SLO_BUCKETS]
            raise t.err(k, f"unknown SLO; {_did_you_mean(k, allowed)}allowed: {', '.join(allowed)}")
        out[k.removeprefix("p99_")] = t.float_(k, 0.0, 0.0)
    return out


def _parse_gate(t: _Table) -> GateSpec:
    """``[gate]``: defaults for every bucket, ``buckets`` (which are judged), ``[gate.<bucket>]`` per bucket."""

    def bounds(tt: _Table, base: BucketGate) -> BucketGate:
        return BucketGate(
            percentile=tt.float_("percentile", base.percentile, 1.0, 99.99),
            threshold=tt.float_("threshold", base.threshold, 0.0, 100.0),
            floor_ms=tt.float_("floor_ms", base.floor_ms, 0.0),
        )

    default = bounds(t, BucketGate())
    names = t.strs("buckets", GATE_BUCKETS)
    if not names:
        raise t.err("buckets", f"an empty gate judges nothing; name some of: {', '.join(SLO_BUCKETS)}")
    for b in names:
        if b not in SLO_BUCKETS:
            hint = _did_you_mean(b, SLO_BUCKETS)
            raise t.err("buckets", f"unknown bucket {b!r}; {hint}allowed: {', '.join(SLO_BUCKETS)}")
    if len(set(names)) != len(names):
        raise t.err("buckets", f"a bucket is named twice: {list(names)!r}")
    out: dict[str, BucketGate] = {}
    for b in names:
        if t.has(b):
            sub = t.table(b)
            out[b] = bounds(sub, default)
            sub.done()
        else:
            out[b] = default
    for k in t.data:
        if k in GATE_KEYS or k == "buckets" or k in out:
            continue
        if k in SLO_BUCKETS:
            raise t.err(k, f"bucket {k!r} is not gated: add it to gate.buckets or remove [gate.{k}]")
        allowed = [*GATE_KEYS, "buckets", *out]
        raise t.err(k, f"unknown key; {_did_you_mean(k, allowed)}allowed here: {', '.join(allowed)}")
    return GateSpec(buckets=out)


_TOP = (
    "name",
    "description",
    "seed",
    "default",
    "target",
    "backend",
    "workload",
    "agent",
    "chaos",
    "checks",
    "slo",
    "gate",
)


def parse_scenario(data: Mapping[str, Any], file: str = "<memory>") -> Scenario:
    """Validate parsed TOML; raises ScenarioError naming file, key and fix."""
    top = _Table(file, data, "")
    name = top.str_("name", None)
    if not name:
        name = Path(file).stem if file != "<memory>" else None
        if not name:
            raise top.err("name", 'required: a short identifier such as name = "delete_during_proxy"')
    why = check_safe_name(name) or (None if "@" not in name and "+" not in name else "must not contain '@' or '+'")
    if why is not None:
        raise top.err("name", f'{name!r} {why} (it names the run folder), e.g. name = "delete_during_proxy"')
    _check_finite(file, data, "")
    seed = top.int_("seed", 0, 0)
    target = _parse_target(top.table("target"))
    backend_t = top.table("backend")
    backend = _parse_backend(backend_t, seed)
    gen_tool = backend.generation.get("tool_call_probability", 0.0)
    workload = _parse_workload(
        top.table("workload"), float(gen_tool) if isinstance(gen_tool, int | float) else 0.0, target.processes
    )
    if workload.tool_call_probability and "tool_call_probability" not in backend.generation:
        backend = dataclasses.replace(
            backend, generation={**backend.generation, "tool_call_probability": workload.tool_call_probability}
        )
    sc = Scenario(
        name=name,
        description=top.str_("description", "") or "",
        seed=seed,
        default=top.bool_("default", False),
        target=target,
        backend=backend,
        workload=workload,
        agent=_parse_agent(top.table("agent")),
        chaos=_parse_chaos(top.table("chaos"), target),
        checks=_parse_checks(top.table("checks")),
        slo=_parse_slo(top.table("slo")),
        gate=_parse_gate(top.table("gate")),
        source=file,
    )
    top.done()
    return sc


def _apply_override(data: dict[str, Any], dotted: str, value: Any, file: str) -> None:
    parts = dotted.split(".")
    if parts[0] not in _TOP:
        raise ScenarioError(
            file, dotted, f"override of an unknown key; {_did_you_mean(parts[0], _TOP)}allowed: {', '.join(_TOP)}"
        )
    cur = data
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ScenarioError(file, dotted, f"override goes through {p!r}, which is not a table")
        cur = nxt
    cur[parts[-1]] = value


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; ``overrides`` maps dotted keys to values (``{"seed": 3}``)."""
    p = Path(path)
    file = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(file, "", f"cannot read the scenario file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise ScenarioError(
            file, "", f"not UTF-8 text (byte {exc.start}, line {line}): save the file as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(file, "", f"not valid TOML: {exc}") from None
    for k, v in (overrides or {}).items():
        _apply_override(data, k, v, file)
    return parse_scenario(data, file)
