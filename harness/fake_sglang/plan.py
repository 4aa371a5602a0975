"""The fault plan: which requests the fake SGLang answers badly, how slowly, and with what.

Why a plan is data: a scenario names its backend faults in a TOML file so the
same faults replay in live and simulated runs, and so a plan can be swapped at
run time (``PUT /admin/plan``) to model an incident that starts mid-run. A plan
is validated completely before it is used: an error names the file, the key
and what is allowed, because a typo in a fault name that silently matches
nothing is a test that proves nothing.

Rules match on request identity only (routing key, turn, attempt, the
per-session request ordinal, a seeded probability), never on wall-clock or
arrival order across sessions, so a plan's effect is a pure function of the
seed. ``global_ordinal`` is the one deliberate exception and says so.

The same fault vocabulary is used by the ``x-fake-fault`` request header
(``NAME[;param=value...]``), parsed and validated here too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.strict_json import JsonInputError, loads_strict

__all__ = [
    "FAULTS",
    "MALFORMED_FAULTS",
    "FaultPlan",
    "FaultSpec",
    "GenerationSpec",
    "IntMatch",
    "LatencySpec",
    "PlanError",
    "Rule",
    "load_plan",
    "parse_fault_header",
    "parse_plan",
    "plan_from_text",
]

# Bounds (docs/fake_sglang.md, "Bounds"): every number in a plan or a fault header is finite and within these,
# so a typo cannot make the fake sleep for ever or build a billion-word answer.
HANG_MAX_S = 600.0  # hang and slow_drip seconds
MAX_MS = 600_000.0  # any latency or spike, in milliseconds
MAX_WORDS = 4096  # generation.min_words / max_words
MAX_CONTEXT = 10_000_000  # generation.context_length
MAX_TOKENS = 10_000_000  # abort / length tokens
MAX_CHUNKS = 100_000  # slow_drip chunks
MAX_TOOL_CALLS = 64  # tool_calls count
PLAN_MAX_DEPTH = 32  # nesting of a JSON plan


class PlanError(ValueError):
    """A plan (or an ``x-fake-fault`` header) that cannot be used: file, key, what is allowed."""


# fault name -> {param: (type, default)}; a default of None means "drawn per request" or "not set".
_Float = float
_Int = int
_Str = str
FAULTS: dict[str, dict[str, tuple[type, Any]]] = {
    "none": {},
    "abort": {"fraction": (_Float, None), "tokens": (_Int, None)},
    "length": {"tokens": (_Int, None)},
    "http_400": {"message": (_Str, None)},
    "http_429": {"message": (_Str, None)},
    "http_500": {"message": (_Str, None)},
    "http_503": {"message": (_Str, None)},
    "reset": {},
    "close_mid_body": {"fraction": (_Float, 0.5)},
    "sse_cut": {"fraction": (_Float, 0.5)},
    "hang": {"seconds": (_Float, 60.0)},
    "slow_drip": {"seconds": (_Float, 5.0), "chunks": (_Int, 20)},
    "no_meta_info": {},
    "null_content": {},
    "null_first_choice": {},  # choices = [null, the answer]: a malformed body (choices[0] is not an object)
    "empty_choices": {},  # choices = []: an answer with no choice at all
    # the message's tool_calls hold a call whose function.name is null (a tool-call parser that lost the name)
    "bad_tool_call": {},
    "logprob_mismatch": {},
    # output_token_logprobs entries as objects ({"logprob": x, "token_id": n}, another engine's shape), not pairs
    "logprob_objects": {},
    "invalid_json": {},
    "spike": {"ms": (_Float, None)},
    "tool_calls": {"count": (_Int, 1)},
    # a re-tokenizing backend: meta_info.prompt_token_ids differs from the input_ids sent, from token ``at`` on
    # (replaced by token id ``alt`` when given, else by the first token of " retokenized" that differs);
    # ``from_end = k`` (when set, in place of ``at``): the k-th token from the end of the stored checkpoint the
    # prompt extends (1: its last token, e.g. the end-of-turn token), else of the prompt (docs/fake_sglang.md)
    "retokenized_prompt": {"at": (_Int, 0), "alt": (_Int, None), "from_end": (_Int, None)},
}
# the faults whose 200 answer is malformed (the session server must answer 502, never 500): one list for the fake,
# the checkers (harness/checkers/errors.py TRANSPORT_FAULTS) and the tests
MALFORMED_FAULTS = (
    "no_meta_info",
    "null_content",
    "null_first_choice",
    "empty_choices",
    "bad_tool_call",
    "logprob_mismatch",
    "logprob_objects",
    "invalid_json",
)
# http_<code> for any other 4xx/5xx code is accepted too (see _fault_params).


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault to apply to one request: a name from FAULTS and its validated params."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        if key in self.params:
            return self.params[key]
        table = _fault_params(self.name, "fault", "<internal>")
        return table[key][1] if key in table else None

    @property
    def status(self) -> int | None:
        return int(self.name[5:]) if self.name.startswith("http_") else None

    def to_json(self) -> str:
        if not self.params:
            return self.name
        return self.name + "".join(f";{k}={v}" for k, v in sorted(self.params.items()))


@dataclass(frozen=True, slots=True)
class IntMatch:
    """Matches an int: any of ``values``, or within ``[lo, hi]`` (either may be open)."""

    values: frozenset[int] | None = None
    lo: int | None = None
    hi: int | None = None

    def __call__(self, x: int) -> bool:
        if self.values is not None:
            return x in self.values
        return (self.lo is None or x >= self.lo) and (self.hi is None or x <= self.hi)


@dataclass(frozen=True, slots=True)
class Rule:
    fault: FaultSpec
    session: tuple[str, ...] | None = None
    turn: IntMatch | None = None
    attempt: IntMatch | None = None
    ordinal: IntMatch | None = None
    global_ordinal: IntMatch | None = None
    probability: float = 1.0
    paths: tuple[str, ...] | None = None
    name: str = ""

    def matches(self, *, session: str, turn: int, attempt: int, ordinal: int, global_ordinal: int, path: str) -> bool:
        """Every condition but the probability, which the caller draws from the request's seed."""
        if self.session is not None and not any(fnmatch.fnmatchcase(session, p) for p in self.session):
            return False
        if self.turn is not None and not self.turn(turn):
            return False
        if self.attempt is not None and not self.attempt(attempt):
            return False
        if self.ordinal is not None and not self.ordinal(ordinal):
            return False
        if self.global_ordinal is not None and not self.global_ordinal(global_ordinal):
            return False
        return self.paths is None or path in self.paths


LATENCY_MODELS = ("none", "fixed", "uniform", "lognormal", "per_token")


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """How long an answer takes; see latency.py for the draws. All values in milliseconds."""

    model: str = "none"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    median_ms: float = 0.0
    p99_ms: float = 0.0
    cap_ms: float | None = None
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    spike_probability: float = 0.0
    spike_ms: float = 0.0


# the arguments after ``query`` of a tool call with ``generation.tool_argument_keys`` > 1, in the model's order
TOOL_ARGUMENT_KEYS: tuple[tuple[str, object], ...] = (("query", ""), ("limit", 5), ("offset", 0), ("format", "text"))


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """What answers look like: length in words, how often tool calls, the context limit."""

    min_words: int = 3
    max_words: int = 24
    tool_call_probability: float = 0.0
    context_length: int = 32768
    # SGLang's --reasoning-parser: a thinking model's message carries ``reasoning_content`` apart from the
    # content; the completion ids still hold the whole generated text (harness/fake_sglang/generate.py)
    reasoning_parser: bool = False
    # keys of a tool call's arguments: ``query`` and then ``limit``, ``offset``, ``format`` (fixed values, no
    # draw), in that order: not sorted, as a model writes them
    tool_argument_keys: int = 1


@dataclass(frozen=True, slots=True)
class FaultPlan:
    latency: LatencySpec = field(default_factory=LatencySpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    rules: tuple[Rule, ...] = ()
    source: str = "<default>"

    def describe(self) -> dict[str, Any]:
        """A JSON view of the plan (``GET /admin/plan``)."""

        def im(m: IntMatch | None) -> Any:
            if m is None:
                return None
            if m.values is not None:
                return sorted(m.values)
            return {"min": m.lo, "max": m.hi}

        return {
            "source": self.source,
            "latency": dataclasses.asdict(self.latency),
            "generation": {  # the reasoning parser only when on: plans without it describe as before
                k: v for k, v in dataclasses.asdict(self.generation).items() if k != "reasoning_parser" or v
            },
            "rules": [
                {
                    "name": r.name,
                    "fault": r.fault.to_json(),
                    "session": list(r.session) if r.session else None,
                    "turn": im(r.turn),
                    "attempt": im(r.attempt),
                    "ordinal": im(r.ordinal),
                    "global_ordinal": im(r.global_ordinal),
                    "probability": r.probability,
                    "paths": list(r.paths) if r.paths else None,
                }
                for r in self.rules
            ],
        }


# ---------------------------------------------------------------- parsing


def _err(source: str, key: str, msg: str) -> PlanError:
    return PlanError(f"{source}: key {key!r}: {msg}")


def _fault_params(name: str, key: str, source: str) -> dict[str, tuple[type, Any]]:
    if name in FAULTS:
        return FAULTS[name]
    if name.startswith("http_") and name[5:].isdigit() and 400 <= int(name[5:]) <= 599:
        return FAULTS["http_500"]
    allowed = ", ".join([*FAULTS, "http_<4xx|5xx>"])
    raise _err(source, key, f"unknown fault {name!r}; allowed: {allowed}")


def _coerce(value: Any, typ: type, key: str, source: str) -> Any:
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _err(source, key, f"expected a finite number, got {value!r}")
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is str and isinstance(value, str):
        return value
    raise _err(source, key, f"expected {typ.__name__}, got {value!r}")


def _check_param_range(name: str, p: str, v: Any, key: str, source: str) -> None:
    if p == "fraction" and not 0.0 <= v <= 1.0:
        raise _err(source, key, f"must be within [0, 1], got {v}")
    if p == "at" and v < 0:
        raise _err(source, key, f"must be >= 0, got {v}")
    if p == "from_end" and v < 1:
        raise _err(source, key, f"must be >= 1 (1 is the last token), got {v}")
    if p in ("tokens", "chunks", "count") and v < (1 if p in ("chunks", "count") else 0):
        raise _err(source, key, f"must be >= {1 if p in ('chunks', 'count') else 0}, got {v}")
    if p in ("seconds", "ms") and v < 0:
        raise _err(source, key, f"must be >= 0, got {v}")
    if name == "hang" and p == "seconds" and v > HANG_MAX_S:
        raise _err(source, key, f"hang is bounded: at most {HANG_MAX_S:g} s, got {v}")
    top = {
        "seconds": HANG_MAX_S,
        "ms": MAX_MS,
        "tokens": MAX_TOKENS,
        "at": MAX_CONTEXT,
        "from_end": MAX_CONTEXT,
        "chunks": MAX_CHUNKS,
        "count": MAX_TOOL_CALLS,
    }
    if p in top and v > top[p]:
        raise _err(source, key, f"must be at most {top[p]:g}, got {v}")


def make_fault(name: str, params: Mapping[str, Any], key: str, source: str) -> FaultSpec:
    table = _fault_params(name, key, source)
    out: dict[str, Any] = {}
    for p, v in params.items():
        if p not in table:
            allowed = ", ".join(table) or "none"
            raise _err(source, f"{key}.{p}", f"unknown parameter for fault {name!r}; allowed: {allowed}")
        out[p] = _coerce(v, table[p][0], f"{key}.{p}", source)
        _check_param_range(name, p, out[p], f"{key}.{p}", source)
    return FaultSpec(name, out)


def parse_fault_header(value: str, source: str = "header x-fake-fault") -> FaultSpec:
    """``NAME[;param=value...]`` -> FaultSpec; values are parsed as int, float or string."""
    parts = [p.strip() for p in value.split(";")]
    name = parts[0].lower()
    params: dict[str, Any] = {}
    for part in parts[1:]:
        if not part:
            continue
        k, sep, raw = part.partition("=")
        if not sep:
            raise _err(source, name, f"parameter {part!r} is not key=value")
        params[k.strip()] = _parse_scalar(raw.strip())
    return make_fault(name, params, name, source)


def _parse_scalar(raw: str) -> Any:
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


def _int_match(value: Any, key: str, source: str) -> IntMatch:
    def as_int(v: Any, k: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _err(source, k, f"expected a non-negative integer, got {v!r}")
        return v

    if isinstance(value, list):
        return IntMatch(values=frozenset(as_int(v, f"{key}[{i}]") for i, v in enumerate(value)))
    if isinstance(value, dict):
        extra = set(value) - {"min", "max"}
        if extra:
            raise _err(source, f"{key}.{sorted(extra)[0]}", "unknown key; allowed: min, max")
        lo = as_int(value["min"], f"{key}.min") if "min" in value else None
        hi = as_int(value["max"], f"{key}.max") if "max" in value else None
        return IntMatch(lo=lo, hi=hi)
    return IntMatch(values=frozenset([as_int(value, key)]))


def _num(table: Mapping[str, Any], k: str, key: str, source: str, default: float, hi: float = MAX_MS) -> float:
    if k not in table:
        return default
    v = table[k]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise _err(source, f"{key}.{k}", f"expected a finite non-negative number, got {v!r}")
    if v > hi:
        raise _err(source, f"{key}.{k}", f"must be at most {hi:g}, got {v!r}")
    return float(v)


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], key: str, source: str) -> None:
    for k in table:
        if k not in allowed:
            where = f"{key}.{k}" if key else k
            raise _err(source, where, f"unknown key; allowed: {', '.join(allowed)}")


_LATENCY_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "fixed": ("ms",),
    "uniform": ("min_ms", "max_ms"),
    "lognormal": ("median_ms", "p99_ms", "cap_ms"),
    "per_token": ("ttft_ms", "itl_ms"),
}


def _parse_latency(raw: Any, source: str) -> LatencySpec:
    if not isinstance(raw, dict):
        raise _err(source, "latency", "expected a table")
    model = raw.get("model", "none")
    if model not in LATENCY_MODELS:
        raise _err(source, "latency.model", f"unknown model {model!r}; allowed: {', '.join(LATENCY_MODELS)}")
    allowed = ("model", "spikes", *_LATENCY_KEYS[model])
    _check_keys(raw, allowed, "latency", source)
    vals = {k: _num(raw, k, "latency", source, 0.0) for k in _LATENCY_KEYS[model]}
    if model == "uniform" and vals["min_ms"] > vals["max_ms"]:
        raise _err(source, "latency.min_ms", "must be <= latency.max_ms")
    if model == "lognormal" and (vals["median_ms"] <= 0 or vals["p99_ms"] < vals["median_ms"]):
        raise _err(source, "latency.p99_ms", "lognormal needs 0 < median_ms <= p99_ms")
    cap_raw = vals.pop("cap_ms", None)
    cap = cap_raw if "cap_ms" in raw else None
    spikes = raw.get("spikes", {})
    if not isinstance(spikes, dict):
        raise _err(source, "latency.spikes", "expected a table with probability and ms")
    _check_keys(spikes, ("probability", "ms"), "latency.spikes", source)
    prob = _num(spikes, "probability", "latency.spikes", source, 0.0)
    if prob > 1:
        raise _err(source, "latency.spikes.probability", f"must be within [0, 1], got {prob}")
    return LatencySpec(
        model=model,
        cap_ms=cap,
        spike_probability=prob,
        spike_ms=_num(spikes, "ms", "latency.spikes", source, 0.0),
        **vals,
    )


def _parse_generation(raw: Any, source: str) -> GenerationSpec:
    if not isinstance(raw, dict):
        raise _err(source, "generation", "expected a table")
    allowed = (
        "min_words",
        "max_words",
        "tool_call_probability",
        "context_length",
        "reasoning_parser",
        "tool_argument_keys",
    )
    _check_keys(raw, allowed, "generation", source)
    d = GenerationSpec()
    ints = {}
    for k in ("min_words", "max_words", "context_length"):
        v = raw.get(k, getattr(d, k))
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "min_words" else 1):
            raise _err(source, f"generation.{k}", f"expected a positive integer, got {v!r}")
        top = MAX_CONTEXT if k == "context_length" else MAX_WORDS
        if v > top:
            raise _err(source, f"generation.{k}", f"must be at most {top}, got {v}")
        ints[k] = v
    if ints["min_words"] > ints["max_words"]:
        raise _err(source, "generation.min_words", "must be <= generation.max_words")
    p = _num(raw, "tool_call_probability", "generation", source, 0.0)
    if p > 1:
        raise _err(source, "generation.tool_call_probability", f"must be within [0, 1], got {p}")
    parser = raw.get("reasoning_parser", False)
    if not isinstance(parser, bool):
        raise _err(source, "generation.reasoning_parser", f"expected true or false, got {parser!r}")
    keys = raw.get("tool_argument_keys", 1)
    if isinstance(keys, bool) or not isinstance(keys, int) or not 1 <= keys <= len(TOOL_ARGUMENT_KEYS):
        raise _err(source, "generation.tool_argument_keys", f"expected 1..{len(TOOL_ARGUMENT_KEYS)}, got {keys!r}")
    return GenerationSpec(tool_call_probability=p, reasoning_parser=parser, tool_argument_keys=keys, **ints)


_RULE_KEYS = (
    "name",
    "fault",
    "params",
    "session",
    "turn",
    "attempt",
    "ordinal",
    "global_ordinal",
    "probability",
    "paths",
)
_PATHS = ("/v1/chat/completions", "/generate")


def _parse_rule(raw: Any, i: int, source: str) -> Rule:
    key = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise _err(source, key, "expected a table ([[rules]])")
    _check_keys(raw, _RULE_KEYS, key, source)
    if "fault" not in raw or not isinstance(raw["fault"], str):
        raise _err(source, f"{key}.fault", f"required, a fault name; allowed: {', '.join(FAULTS)}, http_<code>")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise _err(source, f"{key}.params", "expected a table, e.g. params = { fraction = 0.5 }")
    fault = make_fault(raw["fault"], params, f"{key}.fault", source)
    session: tuple[str, ...] | None = None
    if "session" in raw:
        s = raw["session"]
        if isinstance(s, str):
            session = (s,)
        elif isinstance(s, list) and all(isinstance(x, str) for x in s):
            session = tuple(s)
        else:
            raise _err(source, f"{key}.session", "expected a glob string or a list of them")
    paths: tuple[str, ...] | None = None
    if "paths" in raw:
        p = raw["paths"]
        if not isinstance(p, list) or not all(x in _PATHS for x in p):
            raise _err(source, f"{key}.paths", f"expected a list drawn from {', '.join(_PATHS)}")
        paths = tuple(p)
    prob = _num(raw, "probability", key, source, 1.0)
    if prob > 1:
        raise _err(source, f"{key}.probability", f"must be within [0, 1], got {prob}")
    name = raw.get("name", f"rule{i}")
    if not isinstance(name, str):
        raise _err(source, f"{key}.name", "expected a string")
    ims = {
        k: _int_match(raw[k], f"{key}.{k}", source)
        for k in ("turn", "attempt", "ordinal", "global_ordinal")
        if k in raw
    }
    return Rule(fault=fault, session=session, probability=prob, paths=paths, name=name, **ims)


def parse_plan(data: Mapping[str, Any], source: str = "<plan>") -> FaultPlan:
    """Validate a plan given as a mapping (parsed TOML or JSON)."""
    if not isinstance(data, Mapping):
        raise PlanError(f"{source}: the plan must be a table / JSON object")
    _check_keys(data, ("latency", "generation", "rules"), "", source)
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list):
        raise _err(source, "rules", "expected an array of tables ([[rules]])")
    return FaultPlan(
        latency=_parse_latency(data.get("latency", {}), source),
        generation=_parse_generation(data.get("generation", {}), source),
        rules=tuple(_parse_rule(r, i, source) for i, r in enumerate(rules_raw)),
        source=source,
    )


def plan_from_text(text: str, source: str = "<plan>", *, fmt: str = "toml") -> FaultPlan:
    """Parse TOML (``fmt="toml"``) or JSON (``fmt="json"``) text into a validated plan."""
    try:
        if fmt == "json":  # NaN / Infinity pass here: every number is checked below, naming its key
            data = loads_strict(text.encode("utf-8"), max_depth_limit=PLAN_MAX_DEPTH, allow_non_finite=True)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, JsonInputError, UnicodeEncodeError) as exc:
        raise PlanError(f"{source}: not valid {fmt.upper()}: {exc}") from exc
    except RecursionError:
        raise PlanError(f"{source}: not valid {fmt.upper()}: nests too deep") from None
    if not isinstance(data, dict):
        raise PlanError(f"{source}: the plan must be a table / JSON object")
    return parse_plan(data, source)


def load_plan(path: str | Path) -> FaultPlan:
    """Load and validate a TOML (or ``.json``) plan file; raises PlanError naming file and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{p}: cannot read the plan file: {exc.strerror}") from exc
    return plan_from_text(text, str(p), fmt="json" if p.suffix == ".json" else "toml")
