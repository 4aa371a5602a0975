"""Shrink a failing simulated run to a minimal scenario file that still fails the same way.

Why: the seed that explore finds usually runs twenty sessions, four kinds of
chaos and a dozen fault rules, of which one session, one DELETE and one
interleaving matter. A reader needs the small one; so does the regression
test it becomes. Hypothesis' lesson applies: a failure should print a minimal
program that replays it, and here the program is a scenario file.

How: greedy delta debugging over the scenario's knobs, on the raw TOML data
(so the written file stays close to the original): fewer sessions, less
concurrency, fewer turns, each chaos probability to zero, each forced fault,
kill/restart, outage and backend rule removed, tool calls, retries and
streaming off, fewer client fuzz requests, the agent's
``chat_template_kwargs`` dropped (or one variable of them, or sent on every
chat instead of by ``template_kwargs_probability``), one client kind, fewer
processes, and for ``pct`` fewer
priority change points (a smaller depth). A candidate is kept when the same
checker still says ``invalid`` (or the run still errors the same way) on the
same seed, or on one of two neighbouring seeds (a smaller workload shifts
every draw, and a neighbour often still hits the window); passes repeat until
nothing more can be removed or the run budget is spent. Every step is a
deterministic simulated run, so shrinking is itself reproducible.

Plans draw per session from (seed, purpose, session index), so removing
sessions keeps the survivors' plans: the shrinker can cut the workload
without reshuffling what is left.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.scenario import Scenario, ScenarioError, parse_scenario
from harness.sim.explore import SeedResult, run_seed
from harness.sim.runner import DEFAULT_DEPTH

__all__ = ["ShrinkResult", "dump_toml", "found_path", "shrink", "write_found"]

Data = dict[str, Any]
_CHAOS_KNOBS = ("delete_during_proxy", "disconnect", "duplicate_inflight", "wrong_process_probes")
_WORKLOAD_KNOBS = ("tool_retry_probability", "first_turn_retry_probability", "tool_call_probability")


@dataclass
class ShrinkResult:
    data: Data  # the shrunk scenario as TOML data
    seed: int
    strategy: str
    depth: int
    checker: str  # what still fails ("error" for a crashed or deadlocked run)
    message: str  # its first violation
    runs: int
    removed: list[str] = field(default_factory=list)


def _fails_same_way(r: SeedResult, checker: str) -> bool:
    if checker == "error":
        return r.status == "error"
    return any(v.get("checker") == checker for v in r.invalid)


def _first_message(r: SeedResult, checker: str) -> str:
    if checker == "error":
        return r.error or "error"
    for v in r.invalid:
        if v.get("checker") == checker:
            vs = v.get("violations") or []
            return str(vs[0].get("message") if vs else v.get("notes", ""))
    return ""


def _tbl(d: Data, key: str) -> Data:
    t = d.get(key)
    return t if isinstance(t, dict) else {}


def _candidates(d: Data, strategy: str, depth: int) -> Iterator[tuple[str, Data, int]]:
    """(what was removed, new data, new depth), smallest changes last so big cuts are tried first."""

    def edit(fn: Callable[[Data], None]) -> Data:
        nd = copy.deepcopy(d)
        fn(nd)
        return nd

    def put(section: str, key: str, value: Any) -> Data:
        return edit(lambda x: x.setdefault(section, {}).update({key: value}))

    def drop(*path: str | int) -> Data:
        nd = copy.deepcopy(d)
        cur: Any = nd
        for part in path[:-1]:
            cur = cur[part]
        cur.pop(path[-1])
        return nd

    w = _tbl(d, "workload")
    n = int(w.get("sessions", 10))
    for m in sorted({1, n // 4, n // 2, n - 1}):
        if 1 <= m < n:
            yield f"sessions {n} -> {m}", put("workload", "sessions", m), depth
    c = int(w.get("concurrency", 10))
    for m in sorted({1, c // 2}):
        if 1 <= m < c:
            yield f"concurrency {c} -> {m}", put("workload", "concurrency", m), depth
    turns = w.get("turns", [2, 4])
    lo, hi = (turns, turns) if isinstance(turns, int) else (int(turns[0]), int(turns[1]))
    for a, b in ((1, 1), (lo, lo), (lo, hi - 1)):
        if (a, b) != (lo, hi) and 1 <= a <= b <= hi:
            yield f"turns [{lo}, {hi}] -> [{a}, {b}]", put("workload", "turns", [a, b]), depth
    ch = _tbl(d, "chaos")
    for k in _CHAOS_KNOBS:
        if ch.get(k):
            yield f"chaos.{k} -> 0", put("chaos", k, 0.0), depth
    for k in list(_tbl(ch, "forced_faults")):
        yield f"chaos.forced_faults.{k} removed", drop("chaos", "forced_faults", k), depth
    for key in ("kill_restart", "backend_outage"):
        for i in range(len(ch.get(key) or [])):
            yield f"chaos.{key}[{i}] removed", drop("chaos", key, i), depth
    rules = _tbl(d, "backend").get("rules") or []
    for i in range(len(rules)):
        name = rules[i].get("name") or rules[i].get("fault")
        yield f"backend rule {name!r} removed", drop("backend", "rules", i), depth
    for k in _WORKLOAD_KNOBS:
        if w.get(k):
            yield f"workload.{k} -> 0", _zero_workload_knob(d, k), depth
    if w.get("think_time_s"):
        yield "workload.think_time_s -> 0", drop("workload", "think_time_s"), depth
    fz = w.get("fuzz")
    if isinstance(fz, int) and fz > 0:
        for m in sorted({0, fz // 2}):
            if m < fz:
                yield f"workload.fuzz {fz} -> {m}", put("workload", "fuzz", m), depth
    ag = _tbl(d, "agent")
    if ag.get("stream_probability"):
        yield "agent.stream_probability -> 0", put("agent", "stream_probability", 0.0), depth
    up = ag.get("upload_chunks")
    if isinstance(up, int) and up > 1:  # bodies at once: the failure did not need a slow link

        def whole(x: Data) -> None:  # the body at once: the slow upload's other knobs go with it (else refused)
            a = x.setdefault("agent", {})
            a["upload_chunks"] = 1
            a.pop("upload_ms", None)
            a.pop("upload_probability", None)

        yield f"agent.upload_chunks {up} -> 1", edit(whole), depth
    yield from _template_kwargs_candidates(d, depth)
    client = ag.get("client")
    if isinstance(client, dict) and len([k for k, v in client.items() if v]) > 1:
        for kind in sorted((k for k, v in client.items() if v), key=lambda k: (k != "httpx", k)):  # httpx: simplest
            yield f"agent.client -> {kind}", put("agent", "client", kind), depth
    p = int(_tbl(d, "target").get("processes", 1))
    for m in sorted({1, p - 1}):
        if 1 <= m < p:
            yield f"processes {p} -> {m}", put("target", "processes", m), depth
    if strategy == "pct":
        for dd in range(1, depth):
            yield f"pct depth {depth} -> {dd} (fewer change points)", copy.deepcopy(d), dd


def _template_kwargs_candidates(d: Data, depth: int) -> Iterator[tuple[str, Data, int]]:
    """The agent's ``chat_template_kwargs``: gone (with their probability, which means nothing
    without them), one variable at a time gone, or sent on every chat (no per-chat draw)."""
    ag = _tbl(d, "agent")
    kw = ag.get("chat_template_kwargs")
    if not isinstance(kw, dict) or not kw:
        if "template_kwargs_probability" in ag:
            x = copy.deepcopy(d)
            x["agent"].pop("template_kwargs_probability")
            yield "agent.template_kwargs_probability removed (no kwargs to send)", x, depth
        return
    x = copy.deepcopy(d)
    x["agent"].pop("chat_template_kwargs")
    x["agent"].pop("template_kwargs_probability", None)
    yield "agent.chat_template_kwargs removed", x, depth
    if len(kw) > 1:
        for k in kw:
            x = copy.deepcopy(d)
            x["agent"]["chat_template_kwargs"].pop(k)
            yield f"agent.chat_template_kwargs.{k} removed", x, depth
    p = ag.get("template_kwargs_probability", 1.0)
    if isinstance(p, int | float) and not isinstance(p, bool) and p < 1.0:
        x = copy.deepcopy(d)
        x["agent"]["template_kwargs_probability"] = 1.0
        yield f"agent.template_kwargs_probability {p} -> 1 (every chat sends them)", x, depth


def _zero_workload_knob(d: Data, k: str) -> Data:
    x = copy.deepcopy(d)
    x["workload"][k] = 0.0
    gen = _tbl(_tbl(x, "backend"), "generation")
    if k == "tool_call_probability" and "tool_call_probability" in gen:
        gen["tool_call_probability"] = 0.0
    return x


def normalize(raw: Data, seed: int, variant: str | None) -> Data:
    """The original TOML data pinned to one seed and one variant (no ``compare`` list)."""
    d = copy.deepcopy(raw)
    d["seed"] = seed
    d["default"] = False
    _tbl(d, "backend").pop("seed", None)
    if variant is not None:
        t = d.setdefault("target", {})
        t.pop("compare", None)
        t["variants"] = [] if variant == "default" else [v for v in variant.split("+") if v]
    return d


def shrink(
    raw: Data,
    source: str,
    seed: int,
    strategy: str,
    *,
    checker: str,
    depth: int = DEFAULT_DEPTH,
    variant: str | None = None,
    target: str | None = None,
    max_runs: int = 150,
    on_step: Callable[[str], None] | None = None,
) -> ShrinkResult:
    """Greedy shrink of ``raw`` (parsed TOML of ``source``) while ``checker`` stays invalid."""
    d = normalize(raw, seed, variant)
    runs = 0

    def attempt(data: Data, s: int, dd: int) -> SeedResult | None:
        nonlocal runs
        data = {**data, "seed": s}
        try:
            sc: Scenario = parse_scenario(data, source)
        except ScenarioError:
            return None
        runs += 1
        return run_seed(sc, s, strategy, depth=dd, target=target)

    first = attempt(d, seed, depth)
    if first is None or not _fails_same_way(first, checker):
        raise ValueError(f"{source} seed {seed} ({strategy}) does not fail {checker!r}: nothing to shrink")
    best = ShrinkResult(d, seed, strategy, depth, checker, _first_message(first, checker), runs)
    progress = True
    while progress and runs < max_runs:
        progress = False
        for what, cand, dd in _candidates(best.data, strategy, best.depth):
            if runs >= max_runs:
                break
            for s in (best.seed, best.seed + 1, best.seed + 2):
                r = attempt(cand, s, dd)
                if r is not None and _fails_same_way(r, checker):
                    best.removed.append(what if s == best.seed else f"{what} (and seed {best.seed} -> {s})")
                    best.data, best.seed, best.depth = {**cand, "seed": s}, s, dd
                    best.message = _first_message(r, checker)
                    if on_step is not None:
                        on_step(what)
                    progress = True
                    break
                if r is None:
                    break  # not a valid scenario: no seed will make it one
            if progress:
                break  # restart from the biggest cuts on the smaller scenario
    best.runs = runs
    return best


# ---------------------------------------------------------------- writing the file


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }" if v else "{}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise ValueError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "-_" for c in k) else json.dumps(k)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dump_toml(d: Data) -> str:
    """TOML for scenario data: scalars, then one ``[table]`` per section, ``[[array]]`` for lists of tables."""
    out: list[str] = []
    for k, v in d.items():
        if not isinstance(v, dict):
            out.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in d.items():
        if not isinstance(v, dict):
            continue
        out.append("")
        out.append(f"[{_key(k)}]")
        subtables: list[tuple[str, Any]] = []
        for sk, sv in v.items():
            if _is_table_array(sv) or (isinstance(sv, dict) and sk in ("forced_faults", "options")):
                subtables.append((sk, sv))
            else:
                out.append(f"{_key(sk)} = {_scalar(sv)}")
        for sk, sv in subtables:
            if isinstance(sv, dict):
                out.append(f"\n[{_key(k)}.{_key(sk)}]")
                out.extend(f"{_key(a)} = {_scalar(b)}" for a, b in sv.items())
                continue
            for item in sv:
                out.append(f"\n[[{_key(k)}.{_key(sk)}]]")
                out.extend(f"{_key(a)} = {_scalar(b)}" for a, b in item.items())
    return "\n".join(out).strip() + "\n"


def found_path(found_dir: Path, name: str, seed: int) -> Path:
    return found_dir / f"{name}-{seed}.toml"


def _repoint_tokenizer(data: Data, original: Path, found_dir: Path) -> Data:
    """A ``[target] tokenizer`` folder named relative to the original scenario file (it is looked up beside
    the file first, :func:`harness.scenario._tokenizer_key`), named again relative to the found file's folder,
    so the written scenario finds the same folder wherever it is run from."""
    target = data.get("target")
    if not isinstance(target, dict):
        return data
    value = target.get("tokenizer")
    if not isinstance(value, str) or not value.strip() or Path(value).expanduser().is_absolute():
        return data
    from harness.tokenizer import SHIPPED

    if value in SHIPPED:
        return data
    beside = original.resolve().parent / value
    if not beside.is_dir():
        return data  # a folder relative to the working directory: left as written
    again = Path(os.path.relpath(beside, found_dir.resolve())).as_posix()
    return {**data, "target": {**target, "tokenizer": again}}


def write_found(res: ShrinkResult, original: str, found_dir: Path, *, target: str | None = None) -> Path:
    """Write ``scenarios/found/<name>-<seed>.toml`` with a header naming where it came from."""
    base = str(res.data.get("name") or Path(original).stem)
    name = f"{base}-{res.seed}"
    data = {"name": name, **{k: v for k, v in res.data.items() if k != "name"}}
    data["seed"] = res.seed
    found_dir.mkdir(parents=True, exist_ok=True)
    path = found_path(found_dir, base, res.seed)
    data = _repoint_tokenizer(data, Path(original), found_dir)
    flags = f"--seed {res.seed} --strategy {res.strategy}" + (f" --depth {res.depth}" if res.strategy == "pct" else "")
    if target:
        flags += f" --target {target}"
    variants = _tbl(data, "target").get("variants") or []
    header = [
        "# Found by `harness explore`, then shrunk: a minimal scenario that fails the same way.",
        f"# original: {original}" + (f" (variant {'+'.join(variants)})" if variants else ""),
        f"# seed: {res.seed}   strategy: {res.strategy}" + (f"   depth: {res.depth}" if res.strategy == "pct" else ""),
        f"# checker: {res.checker}: {res.message[:200]}".replace("\n", " "),
        f"# shrunk in {res.runs} runs: " + ("; ".join(res.removed) if res.removed else "nothing could be removed"),
        f"# reproduce: harness run {path} --mode sim {flags}",
        "",
    ]
    text = "\n".join(header) + dump_toml(data)
    tomllib.loads(text)  # what we write must read back
    path.write_text(text)
    return path
