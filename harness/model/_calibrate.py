"""Fit the model's CPU costs from what a live run logged.

A ``chat_done`` line says how long each bucket took and how many tokens went
in and out, which is exactly what a linear cost model needs:

- ``tokenize_in_ms  ~ a + b * prompt_tokens``
- ``tokenize_out_ms ~ a + b * completion_tokens``
- ``http``  = ``total_ms`` minus the four buckets (body read and parse,
  request build, answer validation, response) ``~ a + b * prompt_tokens``
- ``proxy`` = ``proxy_elapsed_ms`` minus the latency the backend itself
  drew for that request (the fake's ``backend_executions.json``, joined on
  the caller's request id) ``~ a + b * prompt_tokens``

Least squares, with an honest report of how well each line fits (R^2, n)
and a plot of observed against fitted. Two estimators: ``ols`` fits every
line; ``median`` fits the medians of token-count bins, which ignores the
contention tail (a thread waiting for the GIL, the OS descheduling the
server on a shared machine) that the *model* is meant to produce from
queueing rather than inherit as a cost. Calibrate on a lightly loaded run
(concurrency 1-2) for costs that are service times; a loaded run's costs
include its own queueing.

The prompt-growth figures (first prompt, tokens appended per turn, tokens
per generated word) are measured from the same lines so a calibrated model
sends prompts of the same size as the live agents.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.rundata import RunData

from ._params import Costs, ModelParams, ParamsError, Stalls, Tokens

__all__ = ["Calibration", "Fit", "StallFit", "calibrate", "find_stalls", "load_calibration"]

STALL_THRESHOLD_MS = 10.0

METHODS = ("ols", "median")
NOISE_LEVELS = np.linspace(0.0, 1.0, 201)
_FITS = (
    ("tokenize_in", "prompt_tokens"),
    ("tokenize_out", "completion_tokens"),
    ("http", "prompt_tokens"),
    ("proxy", "prompt_tokens"),
    ("client", "prompt_tokens"),
)


@dataclass
class Fit:
    """``y_ms ~ intercept_ms + slope_ms * x`` over ``n`` lines."""

    name: str
    x: str
    intercept_ms: float
    slope_ms: float
    r2: float
    n: int
    method: str
    xs: list[float] = field(default_factory=list, repr=False)
    ys: list[float] = field(default_factory=list, repr=False)
    residuals: tuple[float, ...] = ()  # observed - fitted at NOISE_LEVELS quantiles (ms)

    def predict(self, x: float) -> float:
        return self.intercept_ms + self.slope_ms * x

    def to_json(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "intercept_ms": round(self.intercept_ms, 6),
            "slope_ms_per_token": round(self.slope_ms, 8),
            "r2": None if math.isnan(self.r2) else round(self.r2, 4),
            "n": self.n,
            "method": self.method,
            "residual_quantiles_ms": [round(r, 4) for r in self.residuals],
        }


@dataclass
class StallFit:
    """Whole-process stalls found in a run: requests on one process delayed together past a threshold.

    A committed request's *excess* is ``total_ms`` minus the latency the backend drew for it (joined
    on the caller's request id); its *extra* is the excess minus the median excess (the usual handler
    and proxy overhead). Requests whose extra exceeds ``threshold_ms`` are stalled; stalled requests on
    the same process whose [start, end] intervals overlap are one stall, whose duration is the median
    extra of its requests. ``rate_per_s`` is stalls per second of each process's span of chat lines.
    """

    rate_per_s: float = 0.0
    durations_ms: tuple[float, ...] = ()
    events: int = 0
    stalled_requests: int = 0
    requests: int = 0
    span_s: float = 0.0  # process-seconds observed
    threshold_ms: float = STALL_THRESHOLD_MS

    @property
    def stalls(self) -> Stalls:
        return Stalls(rate_per_s=self.rate_per_s, durations_ms=self.durations_ms)

    def describe(self) -> str:
        if not self.events:
            return (
                f"stalls: none (no requests delayed together by > {self.threshold_ms:g} ms over the median; "
                f"{self.requests} requests, {self.span_s:.1f} process-s)"
            )
        d = np.asarray(self.durations_ms)
        return (
            f"stalls: {self.events} in {self.span_s:.1f} process-s = {self.rate_per_s:.3f}/s per process; "
            f"duration ms p50 {float(np.median(d)):.1f} max {float(d.max()):.1f}; "
            f"{self.stalled_requests} of {self.requests} requests delayed > {self.threshold_ms:g} ms over the median"
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["durations_ms"] = [round(x, 4) for x in self.durations_ms]
        return out


@dataclass
class Calibration:
    costs: Costs
    tokens: Tokens
    fits: dict[str, Fit]
    source: str
    tokenize_in_thread: bool | None = None
    notes: list[str] = field(default_factory=list)
    stall_fit: StallFit = field(default_factory=StallFit)

    def noise(self) -> dict[str, tuple[float, ...]]:
        """The residual tables for :attr:`ModelParams.noise`."""
        return {k: f.residuals for k, f in self.fits.items() if f.residuals}

    def apply(self, params: ModelParams, *, noise: bool = True, stalls: bool = True) -> ModelParams:
        """``params`` with these costs, prompt sizes and (unless switched off) residual noise and stalls."""
        return params.replace(
            costs=self.costs,
            tokens=self.tokens,
            noise=self.noise() if noise else {},
            stalls=self.stall_fit.stalls if stalls else Stalls(),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tokenize_in_thread": self.tokenize_in_thread,
            "costs": self.costs.to_json(),
            "tokens": dataclasses.asdict(self.tokens),
            "fits": {k: f.to_json() for k, f in self.fits.items()},
            "stalls": self.stall_fit.to_json(),
            "notes": self.notes,
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        return p

    def table(self) -> str:
        lines = [f"{'fit':<14}{'x':<19}{'intercept ms':>13}{'ms/token':>12}{'R^2':>8}{'n':>7}"]
        for k, f in self.fits.items():
            r2 = "n/a" if math.isnan(f.r2) else f"{f.r2:.3f}"
            lines.append(f"{k:<14}{f.x:<19}{f.intercept_ms:>13.4f}{f.slope_ms:>12.6f}{r2:>8}{f.n:>7}")
        lines.append(self.stall_fit.describe())
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Observed against fitted, one panel per fit (y against its token count, the line drawn)."""
        from harness.report.plots import new_figure, png_bytes

        fig = new_figure(11, 11)
        for i, (k, f) in enumerate(self.fits.items()):
            ax = fig.add_subplot(3, 2, i + 1)
            if f.xs:
                ax.scatter(f.xs, f.ys, s=6, alpha=0.35, color="#1f77b4", label="observed")
                lo, hi = min(f.xs), max(f.xs)
                ax.plot([lo, hi], [f.predict(lo), f.predict(hi)], color="#d62728", lw=2, label="fitted")
                top = float(np.percentile(f.ys, 99)) * 1.2 if f.ys else 1.0
                ax.set_ylim(0, max(top, f.predict(hi) * 1.2, 1e-3))
                ax.legend(loc="upper left", fontsize=8)
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            r2 = "n/a" if math.isnan(f.r2) else f"{f.r2:.3f}"
            ax.set_title(
                f"{k}: {f.intercept_ms:.3f} ms + {f.slope_ms * 1000:.3f} us/token  R^2={r2} n={f.n}", fontsize=9
            )
            ax.set_xlabel(f.x)
            ax.set_ylabel("ms")
        fig.suptitle(f"calibration ({self.fits['tokenize_in'].method}) from {self.source}", fontsize=10)
        fig.tight_layout()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png_bytes(fig))
        return p


def load_calibration(path: str | Path) -> Calibration:
    """Read a saved calibration JSON (``calibration.json``) or calibrate a run folder."""
    p = Path(path)
    if p.is_dir():
        saved = p / "calibration.json"
        if saved.exists() and not (p / "server_logs.jsonl").exists():
            p = saved
        else:
            return calibrate(p)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ParamsError(f"{p}: cannot read a calibration: {exc}") from None
    fits = {
        k: Fit(
            k,
            v["x"],
            v["intercept_ms"],
            v["slope_ms_per_token"],
            math.nan if v["r2"] is None else v["r2"],
            v["n"],
            v["method"],
            residuals=tuple(v.get("residual_quantiles_ms", ())),
        )
        for k, v in data.get("fits", {}).items()
    }
    return Calibration(
        costs=Costs.from_json(data["costs"], str(p)),
        tokens=Tokens(**data["tokens"]),
        fits=fits,
        source=str(data.get("source", p)),
        tokenize_in_thread=data.get("tokenize_in_thread"),
        notes=list(data.get("notes", [])),
        stall_fit=_stall_fit_from_json(data.get("stalls")),
    )


def _stall_fit_from_json(d: Any) -> StallFit:
    if not isinstance(d, Mapping):
        return StallFit()
    allowed = {f.name for f in dataclasses.fields(StallFit)}
    kw = {k: v for k, v in d.items() if k in allowed}
    kw["durations_ms"] = tuple(float(x) for x in kw.get("durations_ms", ()))
    return StallFit(**kw)


def find_stalls(
    lines: Iterable[Mapping[str, Any]],
    backend_latency_ms: Mapping[str, float],
    threshold_ms: float = STALL_THRESHOLD_MS,
) -> StallFit:
    """Stalls in ``chat_done`` lines (see :class:`StallFit`); needs the backend's drawn latencies."""
    rows: list[tuple[Any, float, float, float]] = []  # (pid, start s, end s, excess ms)
    for ln in lines:
        if ln.get("event") != "chat_done" or ln.get("outcome") != "committed":
            continue
        total, ts = _num(ln.get("total_ms")), _num(ln.get("ts"))
        drawn = backend_latency_ms.get(str(ln.get("caller_request_id")))
        if total is None or ts is None or drawn is None:
            continue
        rows.append((ln.get("pid", ln.get("worker_port")), ts - total / 1000.0, ts, total - drawn))
    if not rows:
        return StallFit(threshold_ms=threshold_ms)
    med = float(np.median([r[3] for r in rows]))
    by_pid: dict[Any, list[tuple[Any, float, float, float]]] = defaultdict(list)
    for r in rows:
        by_pid[r[0]].append(r)
    span = 0.0
    durations: list[float] = []
    stalled = 0
    for seq in by_pid.values():
        span += max(r[2] for r in seq) - min(r[1] for r in seq)
        big = sorted((r for r in seq if r[3] - med > threshold_ms), key=lambda r: r[1])
        stalled += len(big)
        # a stall at time s delays exactly the requests in flight at s: group the stalled requests by
        # the fewest points that stab all their [start, end] intervals (greedy, in order of start)
        hi = -math.inf
        cluster: list[float] = []
        for r in big:
            if cluster and r[1] > hi:
                durations.append(max(cluster))
                cluster = []
            hi = r[2] if not cluster else min(hi, r[2])
            cluster.append(r[3] - med)
        if cluster:
            durations.append(max(cluster))
    rate = len(durations) / span if span > 0 else 0.0
    return StallFit(
        rate_per_s=rate,
        durations_ms=tuple(sorted(round(d, 4) for d in durations)),
        events=len(durations),
        stalled_requests=stalled,
        requests=len(rows),
        span_s=span,
        threshold_ms=threshold_ms,
    )


def _fit(name: str, xname: str, xs: Sequence[float], ys: Sequence[float], method: str) -> Fit:
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    n = int(x.size)
    if n == 0:
        return Fit(name, xname, 0.0, 0.0, math.nan, 0, method)
    fx, fy = x, y
    if method == "median":
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)))
        bx, by = [], []
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(0, len(edges) - 2))
        for b in np.unique(idx):
            m = idx == b
            bx.append(float(np.median(x[m])))
            by.append(float(np.median(y[m])))
        fx, fy = np.asarray(bx), np.asarray(by)
    if fx.size >= 2 and float(np.ptp(fx)) > 0:
        slope, intercept = (float(v) for v in np.polyfit(fx, fy, 1))
    else:
        slope, intercept = 0.0, float(np.median(fy) if method == "median" else np.mean(fy))
    if slope < 0 or intercept < 0:
        # costs cannot be negative: refit the other coefficient alone
        if slope < 0:
            slope, intercept = 0.0, float(np.median(fy) if method == "median" else np.mean(fy))
        else:
            slope = max(0.0, float(np.sum(fx * fy) / max(np.sum(fx * fx), 1e-12)))
            intercept = 0.0
    pred = intercept + slope * x
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else math.nan
    res = tuple(float(r) for r in np.quantile(y - pred, NOISE_LEVELS))
    return Fit(
        name, xname, max(0.0, intercept), slope, r2, n, method, [float(v) for v in x], [float(v) for v in y], res
    )


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _tokens(lines: Sequence[Mapping[str, Any]], generation: Mapping[str, Any]) -> tuple[Tokens, list[str]]:
    notes: list[str] = []
    by_session: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for ln in lines:
        if ln.get("outcome") == "committed" and isinstance(ln.get("session_id"), str):
            by_session[ln["session_id"]].append(ln)
    firsts: list[float] = []
    steps: list[float] = []
    completions: list[float] = []
    for seq in by_session.values():
        seq = sorted(seq, key=lambda ln: (float(ln.get("prompt_tokens") or 0), float(ln.get("ts") or 0)))
        firsts.append(float(seq[0]["prompt_tokens"]))
        for a, b in itertools.pairwise(seq):
            step = float(b["prompt_tokens"]) - float(a["prompt_tokens"]) - float(a["completion_tokens"])
            if step > 0:
                steps.append(step)
        completions.extend(float(ln["completion_tokens"]) for ln in seq)
    d = Tokens()
    lo = int(generation.get("min_words", 3))
    hi = int(generation.get("max_words", 24))
    words = (lo + hi) / 2.0
    tpw = (float(np.mean(completions)) - 1.0) / words if completions and words > 0 else d.tokens_per_word
    if not firsts:
        notes.append("no committed chat_done lines: token figures are defaults")
    return (
        Tokens(
            first_prompt_tokens=round(float(np.median(firsts))) if firsts else d.first_prompt_tokens,
            turn_tokens=round(float(np.median(steps))) if steps else d.turn_tokens,
            tokens_per_word=round(max(tpw, 0.1), 4),
        ),
        notes,
    )


def calibrate(
    source: str | Path | RunData | Iterable[Mapping[str, Any]],
    *,
    backend_latency_ms: Mapping[str, float] | None = None,
    generation: Mapping[str, Any] | None = None,
    method: str = "median",
    base: Costs | None = None,
    stall_threshold_ms: float = STALL_THRESHOLD_MS,
) -> Calibration:
    """Fit :class:`Costs` from a run folder, a :class:`RunData`, a JSON-lines log file, or log lines.

    ``backend_latency_ms`` maps a caller request id to the latency the backend drew (read from a
    run folder's ``backend_executions.json``); without it the proxy overhead is not fitted and
    keeps ``base``'s value. ``generation`` is the fake's generation table (words per answer),
    read from the run's scenario when there is one.
    """
    if method not in METHODS:
        raise ParamsError(f"calibrate: method {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    name = "<log lines>"
    thread: bool | None = None
    gen: Mapping[str, Any] = generation or {}
    lat = dict(backend_latency_ms or {})
    client: dict[str, float] = {}
    if isinstance(source, str | Path):
        p = Path(source)
        name = str(p)
        if p.is_file():
            lines: Sequence[Mapping[str, Any]] = [json.loads(t) for t in p.read_text().splitlines() if t.strip()]
        else:
            source = RunData.load(p)
            if not source.server_logs:
                raise ParamsError(f"{p}: no server_logs.jsonl with chat_done lines: not a run folder?")
    if isinstance(source, RunData):
        lines = source.server_logs
        backend = source.scenario.get("backend") or {}
        if not gen:
            gen = backend.get("generation") or {}
        args = (source.scenario.get("target") or {}).get("server_args") or []
        thread = "--no-tokenize-thread" not in args
        if not lat:
            for execs in source.backend_executions.values():
                for e in execs:
                    rid, ms = e.get("request_id"), _num(e.get("latency_ms"))
                    if isinstance(rid, str) and ms is not None:
                        lat[rid] = ms
        client = client_times(source.history)
    elif not isinstance(source, str | Path):
        lines = list(source)
    cal = _calibrate_lines(lines, lat, client, gen, method, base or Costs(), name, thread)
    if lat:
        cal.stall_fit = find_stalls(lines, lat, stall_threshold_ms)
    else:
        cal.notes.append("stalls not fitted: no backend latencies to join (backend_executions.json)")
    return cal


def client_times(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The server's req_id (``x-req-id``) -> how long the agent waited for that chat call, ms."""
    invoked: dict[Any, float] = {}
    out: dict[str, float] = {}
    for ev in history:
        if ev.get("f") != "chat":
            continue
        if ev.get("type") == "invoke":
            t = _num(ev.get("time"))
            if t is not None:
                invoked[ev.get("op")] = t
            continue
        t0 = invoked.pop(ev.get("op"), None)
        t1 = _num(ev.get("time"))
        rid = (ev.get("headers") or {}).get("x-req-id")
        if t0 is not None and t1 is not None and isinstance(rid, str):
            out[rid] = (t1 - t0) * 1000.0
    return out


def _calibrate_lines(
    lines: Sequence[Mapping[str, Any]],
    lat: Mapping[str, float],
    client: Mapping[str, float],
    gen: Mapping[str, Any],
    method: str,
    base: Costs,
    name: str,
    thread: bool | None,
) -> Calibration:
    done = [ln for ln in lines if ln.get("event") == "chat_done" and ln.get("outcome") == "committed"]
    cols: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k, _ in _FITS}
    for ln in done:
        v = {k: _num(ln.get(k)) for k in (*_BUCKETS, "prompt_tokens", "completion_tokens")}
        if any(x is None for x in v.values()):
            continue
        pt, ct = float(v["prompt_tokens"] or 0), float(v["completion_tokens"] or 0)
        parts = sum(float(v[k] or 0) for k in _BUCKETS[:-1])
        cols["tokenize_in"][0].append(pt)
        cols["tokenize_in"][1].append(float(v["tokenize_in_ms"] or 0))
        cols["tokenize_out"][0].append(ct)
        cols["tokenize_out"][1].append(float(v["tokenize_out_ms"] or 0))
        cols["http"][0].append(pt)
        cols["http"][1].append(max(0.0, float(v["total_ms"] or 0) - parts))
        drawn = lat.get(str(ln.get("caller_request_id")))
        if drawn is not None:
            cols["proxy"][0].append(pt)
            cols["proxy"][1].append(max(0.0, float(v["proxy_elapsed_ms"] or 0) - drawn))
        seen = client.get(str(ln.get("req_id")))
        if seen is not None:
            cols["client"][0].append(pt)
            cols["client"][1].append(max(0.0, seen - float(v["total_ms"] or 0) - base.untimed_ms))
    fits = {k: _fit(k, x, *cols[k], method) for k, x in _FITS}
    notes: list[str] = []
    if not done:
        notes.append("no committed chat_done lines: costs are defaults")
    changes: dict[str, float] = {}
    for k in ("tokenize_in", "tokenize_out", "http", "proxy", "client"):
        f = fits[k]
        if f.n == 0:
            if k == "proxy":
                notes.append("proxy overhead not fitted: no backend latencies to join (backend_executions.json)")
            if k == "client":
                notes.append("client overhead not fitted: no history to join (history.jsonl with x-req-id)")
            continue
        a = f.intercept_ms
        if thread and k.startswith("tokenize"):
            a = max(0.0, a - base.thread_hop_ms)  # measured across the thread hop, which the model adds back
        changes[f"{k}_ms"] = a
        changes[f"{k}_per_token_ms"] = f.slope_ms
    tokens, tnotes = _tokens(done, gen)
    return Calibration(
        costs=dataclasses.replace(base, **changes),
        tokens=tokens,
        fits=fits,
        source=name,
        tokenize_in_thread=thread,
        notes=notes + tnotes,
    )


_BUCKETS = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
