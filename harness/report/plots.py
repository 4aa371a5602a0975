"""PNG plots for a run report (matplotlib, Agg, no pyplot global state).

Each function draws one figure and writes it to ``path``; with no data it
still writes a figure that says so, so a report never has a broken image.
Figures are built with ``matplotlib.figure.Figure`` on an explicit Agg
canvas: no pyplot, no global backend switch (a notebook importing this keeps
its own backend), no global figure registry to leak between reports.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.report.buckets import SERVER_BUCKETS, SERVER_PARTS, LatencyData
from harness.report.palette import CHAOS_COLOR, CHAOS_EDGE, FAULT_COLOR, outcome_color, series_style

__all__ = [
    "MAX_CDF_POINTS",
    "MAX_TIMELINE_MARKS",
    "MAX_TIMELINE_POINTS",
    "PLOT_FILES",
    "cdf_ranks",
    "new_figure",
    "plot_breakdown",
    "plot_cdfs",
    "plot_load",
    "plot_run",
    "plot_timeline",
    "plot_variants",
    "png_bytes",
    "timeline_sample",
]

PLOT_FILES = {
    "breakdown": "breakdown.png",
    "cdf": "cdf.png",
    "timeline": "timeline.png",
    "variants": "variants.png",
    "load": "load.png",
}
_OTHER_COLOR = "#BBBBBB"  # breakdown: time no bucket accounts for
_FLOOR_MS = 1e-3  # 1 us: the histogram's floor, and where a log axis must stop
DPI = 90


def new_figure(width: float, height: float) -> Figure:
    """A Figure drawn by Agg, whatever backend the process has chosen."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_breakdown(breakdown: Mapping[str, Mapping[str, Any]], path: Path, *, title: str = "") -> Path:
    """Stacked bars: the buckets of the requests at p50 and at p99 of total_ms."""
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    labels = [k for k, v in breakdown.items() if v.get("n")]
    if not labels:
        _no_data(ax, "no chat_done lines")
    else:
        x = np.arange(len(labels))
        bottom = np.zeros(len(labels))
        for part in (*SERVER_PARTS, "other_ms"):
            vals = np.array([max(0.0, float(breakdown[k].get(part) or 0.0)) for k in labels])
            ax.bar(
                x,
                vals,
                bottom=bottom,
                color=_OTHER_COLOR if part == "other_ms" else series_style(part)[0],
                label=part,
                width=0.55,
            )
            bottom += vals
        totals = [float(breakdown[k]["total_ms"]) for k in labels]
        ax.scatter(x, totals, marker="_", s=900, color="black", label="total_ms", zorder=3)
        ax.set_xticks(x, [f"{k} of total\n(n={breakdown[k]['n']} around it)" for k in labels])
        ax.set_ylabel("ms (mean over the requests at that percentile)")
        ax.set_ylim(0, max(max(totals), 1e-3) * 1.45)  # room for the legend above the bars
        ax.legend(fontsize=7, loc="upper left", ncol=3, markerscale=0.3)
    ax.set_title(title or "Server time breakdown at p50 and p99", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _markevery(n: int) -> list[int]:
    """Indices of ~8 markers along a line of ``n`` points, always the last one (the max)."""
    if n <= 8:
        return list(range(n))
    return sorted({int(i * (n - 1) / 7) for i in range(8)})


MAX_CDF_POINTS = 20_000  # points a CDF line draws; past it, the exact CDF at cdf_ranks()


def cdf_ranks(n: int, k: int = MAX_CDF_POINTS) -> np.ndarray:
    """Which of ``n`` sorted values a CDF line draws: ``k // 2`` ranks spread evenly over all of them plus the
    top ``k // 2`` (the tail, where 1 - CDF on a log axis needs every value), the last one always."""
    if n <= k:
        return np.arange(n)
    body = np.linspace(0, n - 1, k // 2).round().astype(np.int64)
    tail = np.arange(n - k // 2, n, dtype=np.int64)
    return np.unique(np.concatenate([body, tail]))


def plot_cdfs(series: Mapping[str, Sequence[float | None]], path: Path, *, title: str = "") -> Path:
    """Per series: the CDF on a log latency axis (left) and the tail, 1 - CDF on log-log (right).

    The left panel shows the body; p99 and p99.9 are invisible there, so the
    right panel plots the fraction of requests slower than x on a log scale,
    where each decade down is one more "nine".
    """
    fig = new_figure(11, 4.5)
    ax, tail = fig.subplots(1, 2)
    drawn = 0
    for name, raw in series.items():
        arr = np.asarray(raw, dtype=float)  # None reads as NaN: dropped with NaN and negatives, as a list filter
        vals = np.sort(arr[~np.isnan(arr) & (arr >= 0)])
        if vals.size == 0:
            continue
        vals = np.maximum(vals, _FLOOR_MS)
        y = np.arange(1, vals.size + 1) / vals.size
        n_all = vals.size
        if vals.size > MAX_CDF_POINTS:  # the exact CDF at a bounded set of ranks (its whole tail kept)
            keep = cdf_ranks(vals.size)
            vals, y = vals[keep], y[keep]
        color, ls, marker = series_style(name)
        # a line style and a marker per series as well as a colour: overlapping lines stay apart
        style = {"color": color, "ls": ls, "marker": marker, "markevery": _markevery(vals.size), "ms": 4, "lw": 1.3}
        drawn_note = "" if vals.size == n_all else f", {vals.size} ranks drawn"
        ax.step(vals, y, where="post", label=f"{name} (n={n_all}{drawn_note})", **style)
        exceed = 1.0 - y + 1.0 / n_all  # fraction >= x, never 0 on a log axis
        tail.step(vals, exceed, where="post", **style)
        drawn += 1
    if not drawn:
        _no_data(ax, "no latency samples")
        _no_data(tail, "no latency samples")
    else:
        ax.set_xscale("log")
        for q in (0.5, 0.99):
            ax.axhline(q, color="#bbb", lw=0.8, ls="--")
        ax.set_xlabel("latency, ms (log; below 1 us drawn at 1 us)")
        ax.set_ylabel("fraction of requests <= x")
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=7, loc="lower right")
        tail.set_xscale("log")
        tail.set_yscale("log")
        for q, label in ((0.5, "p50"), (0.01, "p99"), (0.001, "p99.9")):
            tail.axhline(q, color="#bbb", lw=0.8, ls="--")
            tail.text(1.0, q, f" {label}", transform=tail.get_yaxis_transform(), fontsize=7, va="center")
        tail.set_xlabel("latency, ms (log)")
        tail.set_ylabel("fraction of requests >= x (log)")
    ax.set_title(title or "Per-bucket latency CDFs", fontsize=10)
    tail.set_title("Tail: 1 - CDF", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_timeline(data: LatencyData, path: Path, *, title: str = "", seed: int = 0) -> Path:
    """Client latency (from intended start) over time, in-flight count, and chaos/fault marks.

    Up to :data:`MAX_TIMELINE_POINTS` requests and :data:`MAX_TIMELINE_MARKS` chaos/fault events this draws
    every one (:func:`_timeline_all`). Past either, a bounded figure (:func:`_timeline_sampled`): a seeded
    uniform sample of the requests (the same run and seed always draw the same points; the title says what
    fraction), the in-flight curve as its maximum per time bin, and below it every fault, chaos event and
    non-ok request of the run counted per time bin, so none is lost to the sample.
    """
    n = len(data.requests)
    if n > MAX_TIMELINE_POINTS or len(data.events) > MAX_TIMELINE_MARKS:
        fig = _timeline_sampled(data, title=title, seed=seed)
    else:
        fig = _timeline_all(data, title=title)
    return _save(fig, path)


MAX_TIMELINE_POINTS = 20_000  # requests the timeline scatter draws (a seeded sample past it)
MAX_TIMELINE_MARKS = 400  # chaos/fault events drawn one line each (counted per time bin past it)
TIMELINE_BINS = 200  # time bins of the bounded timeline's counts and in-flight envelope
_NOT_OK = ("aborted", "http_4xx", "http_5xx", "fail", "unknown")


def _timeline_all(data: LatencyData, *, title: str) -> Figure:
    fig = new_figure(9, 4.5)
    ax = fig.add_subplot()
    if not data.requests:
        _no_data(ax, "no chat requests in the history")
    else:
        by_outcome: dict[str, list[tuple[float, float]]] = defaultdict(list)
        r = data.requests
        for end, intended, outcome in zip(r.col("end"), r.col("intended"), r.col("outcome"), strict=True):
            by_outcome[outcome].append((end, max((end - intended) * 1000.0, _FLOOR_MS)))
        for outcome, pts in sorted(by_outcome.items()):
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=6, alpha=0.7, color=outcome_color(outcome), label=f"{outcome} (n={len(pts)})")
        ax.set_yscale("log")
        ax.set_xlabel("run time, s (request end)")
        ax.set_ylabel("request latency from intended start, ms")
        twin = ax.twinx()
        if data.inflight:
            ts, levels = zip(*data.inflight, strict=True)
            twin.fill_between(ts, levels, step="post", color="#999", alpha=0.2, lw=0, label="in flight")
            twin.set_ylim(0, max(max(levels), 1) * 1.1)
        twin.set_ylabel("chats in flight (client, shaded)")
        ax.set_zorder(twin.get_zorder() + 1)  # the points above the shading
        ax.patch.set_visible(False)
        marked: set[str] = set()
        for ev in data.events:
            label = ev.kind if ev.kind not in marked else None
            marked.add(ev.kind)
            if ev.kind == "chaos":  # a pale band with dark edges: no outcome is yellow
                ax.axvline(ev.time, color=CHAOS_EDGE, lw=1.0, ls="--", label=label)
                ax.axvspan(ev.time, ev.time + 0.01, color=CHAOS_COLOR, alpha=0.8, lw=0)
            else:  # backend faults: black, dotted, with a triangle on top
                ax.axvline(ev.time, color=FAULT_COLOR, lw=0.6, ls=":", label=label)
                ax.plot([ev.time], [1.0], marker="v", color=FAULT_COLOR, ms=4, transform=ax.get_xaxis_transform())
        ax.legend(fontsize=7, loc="upper left", markerscale=2)
    ax.set_title(
        title or "Latency and load over time (chaos: yellow dashed, backend faults: black dotted)", fontsize=10
    )
    fig.tight_layout()
    return fig


def timeline_sample(n: int, k: int, seed: int) -> np.ndarray:
    """Which of ``n`` requests the bounded timeline draws: ``min(n, k)`` row numbers, sorted, a uniform sample
    without replacement from a generator seeded by the run's seed and ``n`` (the same run draws the same)."""
    if n <= k:
        return np.arange(n)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, n])
    return np.sort(rng.choice(n, size=k, replace=False))


def _bins(t0: float, t1: float) -> np.ndarray:
    return np.linspace(t0, t1 if t1 > t0 else t0 + 1e-3, TIMELINE_BINS + 1)


def _timeline_sampled(data: LatencyData, *, title: str, seed: int) -> Figure:
    fig = new_figure(9, 5.6)
    ax, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    r = data.requests
    n = len(r)
    end = np.fromiter(r.col("end"), dtype=float, count=n)
    intended = np.fromiter(r.col("intended"), dtype=float, count=n)
    outcomes = list(r.col("outcome"))
    pick = timeline_sample(n, MAX_TIMELINE_POINTS, seed)
    ev_t = np.array([e.time for e in data.events], dtype=float)
    finite = np.concatenate([end[np.isfinite(end)], ev_t[np.isfinite(ev_t)]])
    t0, t1 = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    edges = _bins(t0, t1)
    if n:
        lat = np.maximum((end[pick] - intended[pick]) * 1000.0, _FLOOR_MS)
        totals: dict[str, int] = defaultdict(int)
        for o in outcomes:
            totals[o] += 1
        picked = [outcomes[int(i)] for i in pick]
        for outcome in sorted(totals):
            mask = np.array([o == outcome for o in picked], dtype=bool)
            label = f"{outcome} (n={totals[outcome]}, {int(mask.sum())} drawn)"
            ax.scatter(end[pick][mask], lat[mask], s=6, alpha=0.7, color=outcome_color(outcome), label=label)
        ax.set_yscale("log")
        twin = ax.twinx()
        if data.inflight:
            # the in-flight curve: its highest level in each time bin (every step read, a bin's worth drawn)
            times, levels = data.inflight.times, data.inflight.levels
            ok = np.isfinite(times)
            which = np.clip(np.searchsorted(edges, times[ok], side="right") - 1, 0, TIMELINE_BINS - 1)
            peak = np.zeros(TIMELINE_BINS, dtype=np.int64)
            np.maximum.at(peak, which, levels[ok])
            twin.fill_between(edges[:-1], peak, step="post", color="#999", alpha=0.2, lw=0, label="in flight")
            twin.set_ylim(0, max(int(peak.max()), 1) * 1.1)
        twin.set_ylabel("chats in flight\n(max per bin, shaded)", fontsize=8)
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.legend(fontsize=7, loc="upper left", markerscale=2)
    else:
        _no_data(ax, "no chat requests in the history")
    ax.set_ylabel("request latency from\nintended start, ms", fontsize=8)
    # every fault, chaos event and non-ok request of the run, counted per time bin (none sampled away)
    drawn_any = False
    rows: list[tuple[str, np.ndarray, str, str]] = []
    for kind, color, ls in (("fault", FAULT_COLOR, ":"), ("chaos", CHAOS_EDGE, "--")):
        ts = np.array([e.time for e in data.events if e.kind == kind], dtype=float)
        if ts.size:
            rows.append((f"{kind} events", ts, color, ls))
    for o in _NOT_OK:
        ts = end[np.array([x == o for x in outcomes], dtype=bool)] if n else np.array([])
        if ts.size:
            rows.append((f"{o} requests", ts, outcome_color(o), "-"))
    for label, ts, color, ls in rows:
        h, _ = np.histogram(ts[np.isfinite(ts)], bins=edges)
        counts.step(edges[:-1], h, where="post", color=color, ls=ls, lw=1.0, label=f"{label} ({ts.size})")
        drawn_any = True
    counts.set_ylabel(f"count per bin\n({(edges[1] - edges[0]):.3g} s)", fontsize=8)
    counts.set_xlabel("run time, s (request end)")
    if drawn_any:
        counts.legend(fontsize=6, loc="upper left", ncol=3)
    frac = pick.size / n if n else 1.0
    head = title or "Latency and load over time"
    ax.set_title(
        f"{head}: {pick.size:,} of {n:,} requests drawn ({frac:.1%}, seeded sample)\n"
        "below: every fault, chaos event and non-ok request, counted per time bin",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_variants(
    groups: Mapping[str, Mapping[str, Any]],
    path: Path,
    *,
    percentiles: Sequence[str] = ("p50", "p99"),
    title: str = "",
) -> Path:
    """Grouped bars per label (variant or scenario) at p50 and p99, with bootstrap CI whiskers.

    ``groups`` maps a label to a stats dict from summary.json (``p99_ms``, ``n``, ``ci``).
    """
    fig = new_figure(max(6.0, 1.6 * len(groups) + 2), 4.8)
    ax = fig.add_subplot()
    labels = [k for k, v in groups.items() if v.get("n")]
    if not labels:
        _no_data(ax, "no samples")
    else:
        x = np.arange(len(labels))
        width = 0.8 / len(percentiles)
        for i, p in enumerate(percentiles):
            vals = np.array([float(groups[k].get(f"{p}_ms") or 0.0) for k in labels])
            lo_err, hi_err = [], []
            for k, v in zip(labels, vals, strict=True):
                ci = (groups[k].get("ci") or {}).get(f"{p}_ms")
                lo, hi = ci if ci and None not in ci else (v, v)
                lo_err.append(max(0.0, v - lo))
                hi_err.append(max(0.0, hi - v))
            ax.bar(x + (i - (len(percentiles) - 1) / 2) * width, vals, width, yerr=[lo_err, hi_err], capsize=3, label=p)
        ticks = [f"{k.replace('@', chr(10) + '@')}\n(n={groups[k]['n']})" for k in labels]
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_ylabel("ms (whiskers: 95% bootstrap CI)")
        ax.legend(fontsize=7)
    ax.set_title(title or "Variant comparison", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_load(data: LatencyData, path: Path, *, title: str = "") -> Path:
    """Per server process: chat requests by outcome (bars) and p99 total_ms (dots)."""
    s = data.server
    fig = new_figure(max(6.0, 0.9 * len(set(s.col("process"))) + 3), 4.5)
    ax = fig.add_subplot()
    if not data.server:
        _no_data(ax, "no chat_done lines")
    else:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        totals: dict[str, list[float]] = defaultdict(list)
        for process, outcome, total in zip(s.col("process"), s.col("outcome"), s.col("total_ms"), strict=True):
            counts[process][outcome] += 1
            if total is not None:
                totals[process].append(float(total or 0.0))
        procs = sorted(counts)
        outcomes = sorted({o for c in counts.values() for o in c})
        x = np.arange(len(procs))
        bottom = np.zeros(len(procs))
        for o in outcomes:
            vals = np.array([counts[p].get(o, 0) for p in procs], dtype=float)
            ax.bar(x, vals, bottom=bottom, label=o, width=0.6, color=outcome_color(o))
            bottom += vals
        ax.set_xticks(x, procs, fontsize=7, rotation=20)
        ax.set_ylabel("chat requests (chat_done lines)")
        ax.set_xlabel("server process (pid@port)")
        ax.legend(fontsize=7, loc="upper left", title="outcome", title_fontsize=7, ncol=3)
        ax.set_ylim(0, max(float(bottom.max()), 1.0) * 1.5)  # room for the legend above the bars
        twin = ax.twinx()
        p99 = [float(np.quantile(totals[p], 0.99, method="inverted_cdf")) if totals[p] else 0.0 for p in procs]
        twin.plot(x, p99, "kD", label="p99 total_ms")
        twin.set_ylabel("p99 total_ms (diamonds)")
        twin.set_ylim(0, max(max(p99), 1e-3) * 1.2)
    ax.set_title(title or "Load per server process", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_run(
    data: LatencyData,
    summary_latency: Mapping[str, Any],
    breakdown: Mapping[str, Any],
    plots_dir: Path,
    *,
    seed: int = 0,
) -> list[Path]:
    """Every run plot; returns the written paths in report order."""
    server = summary_latency["server"]
    client = summary_latency["client"]
    variant_groups: dict[str, Mapping[str, Any]] = {}
    for v, st in server["total_ms"]["by_variant"].items():
        variant_groups[f"{v}\nserver total_ms"] = st
    for v, st in client["client_request_ms"]["by_variant"].items():
        variant_groups[f"{v}\nclient request"] = st
    # float arrays (NaN: no value), not lists of floats: 8 bytes a sample instead of ~32
    cdf_series: dict[str, Sequence[float | None]] = {b: data.array(b) for b in SERVER_BUCKETS}  # type: ignore[misc]
    cdf_series["client_request_ms"] = data.array("client_request_ms")  # type: ignore[assignment]
    cdf_series["client_turn_ms"] = data.array("client_turn_ms")  # type: ignore[assignment]
    return [
        plot_breakdown(breakdown, plots_dir / PLOT_FILES["breakdown"]),
        plot_cdfs(cdf_series, plots_dir / PLOT_FILES["cdf"]),
        plot_timeline(data, plots_dir / PLOT_FILES["timeline"], seed=seed),
        plot_variants(variant_groups, plots_dir / PLOT_FILES["variants"]),
        plot_load(data, plots_dir / PLOT_FILES["load"]),
    ]
