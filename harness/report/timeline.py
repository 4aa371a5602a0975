"""A Jepsen-style timeline of one run: a lane per session, each operation a bar from invoke to completion.

The history (docs/contracts.md) is a list of invoke and completion events
matched by ``op``; a checker's violation names history indices. This module
turns the history into :class:`Op` s (one per invoke/completion pair), and
draws them as one static SVG (no script, nothing fetched): every op a bar
coloured by its outcome with the fixed palette of :mod:`harness.report.palette`,
ops of one session that overlap in time stacked in the same lane, backend
faults black triangles, chaos a pale yellow band across every lane, and the
ops a violation names outlined in magenta, each one a link to its row of the
op table (``#op-<index>``) and the target of the table's ``#tl-<index>`` link.

Times are the run's own clock (the history's ``time``): seconds since the
runner started in a live run, *virtual* seconds in a simulation.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.report.buckets import client_outcome
from harness.report.palette import CHAOS_COLOR, CHAOS_EDGE, FAULT_COLOR, VIOLATION_COLOR, outcome_color

__all__ = [
    "MAX_LANES",
    "Op",
    "Timeline",
    "build_timeline",
    "numbered_violations",
    "op_row",
    "ops_from_history",
]

MAX_LANES = 120  # sessions drawn: those a violation names first, then sessions spread over the run
MAX_OPS = 6000  # bars drawn; lanes past it are left out (and counted)
NO_SESSION = "(no session)"
_MARKS = ("chaos", "fault")  # nemesis operations: drawn as marks, not bars

# geometry (SVG user units = CSS px at 100%)
_W = 1060
_LABEL_W = 170
_RIGHT = 12
_TOP = 44  # legend + axis labels
_BOTTOM = 26
_TRACK_H = 9  # one track of a lane (one bar high)
_LANE_PAD = 3
_MAX_TRACKS = 4  # overlapping ops of one session stack up to this many rows


@dataclass(slots=True)  # one per operation of the run: a slot each instead of a dict each
class Op:
    """One operation: its invoke and its completion (``end`` None: never completed)."""

    index: int  # the history index of its first event: the op's anchor (``op-<index>``)
    indices: list[int]
    op: Any
    f: str
    process: str
    session: str | None
    start: float
    end: float | None
    outcome: str
    status: int | None = None
    detail: str = ""  # error, finish reason, value: what a reader wants on hover
    turn: Any = None
    attempt: Any = None
    request_id: str | None = None

    @property
    def duration_ms(self) -> float | None:
        return None if self.end is None else (self.end - self.start) * 1000.0

    def label(self) -> str:
        what = self.f
        if self.turn is not None:
            what += f" turn {self.turn}"
        if self.attempt is not None:
            what += f" attempt {self.attempt}"
        status = f" {self.status}" if self.status is not None else ""
        dur = f", {self.duration_ms:.1f} ms" if self.duration_ms is not None else ", never completed"
        detail = f" ({self.detail})" if self.detail else ""
        return f"#{self.index} {what}: {self.outcome}{status}{dur}{detail} by {self.process}"


def _float(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def _detail(ev: Mapping[str, Any]) -> str:
    for key in ("error", "finish_reason"):
        if ev.get(key):
            return str(ev[key])[:80]
    value = ev.get("value")
    if isinstance(value, dict):
        return str(next((value[k] for k in ("kind", "action", "fault", "name") if value.get(k)), ""))[:80]
    return "" if value is None else str(value)[:80]


def _outcome(f: str, completion: Mapping[str, Any] | None) -> str:
    if completion is None:
        return "unknown"
    if f in _MARKS:
        return f
    return client_outcome(dict(completion))


def _iter_ops(history: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, Op]]:
    """``(n, op)`` for every op, ``n`` its place in :func:`ops_from_history`'s order, each yielded once it is
    final (at its completion, else at the end of the history): only the open ops are held meanwhile."""
    current: dict[Any, tuple[int, Op]] = {}
    made = 0
    for pos, ev in enumerate(history):
        idx = ev.get("index")
        index = idx if isinstance(idx, int) and not isinstance(idx, bool) else pos
        key = ev.get("op")
        if key is None:
            key = ("event", index)
        t = _float(ev.get("time")) or 0.0
        invoke = ev.get("type") == "invoke"
        got = current.get(key)
        if invoke or got is None:
            if got is not None:  # a new invoke of an op still open: the open one is final (never completed)
                yield got
            op = Op(
                index=index,
                indices=[],
                op=ev.get("op"),
                f=str(ev.get("f")),
                process=str(ev.get("process")),
                session=None,
                start=t,
                end=None,
                outcome="unknown",
                turn=ev.get("turn"),
                attempt=ev.get("attempt"),
                request_id=ev.get("request_id"),
            )
            got = current[key] = (made, op)
            made += 1
        n, op = got
        op.indices.append(index)
        if ev.get("session") and op.session is None:
            op.session = str(ev.get("session"))
        if invoke:
            op.detail = _detail(ev)
        else:
            op.end = t
            op.outcome = _outcome(op.f, ev)
            status = ev.get("status")
            op.status = status if isinstance(status, int) and not isinstance(status, bool) else None
            op.detail = _detail(ev) or op.detail
            del current[key]  # final: a later event of this key starts a new op
            yield n, op
    yield from sorted(current.values(), key=lambda x: x[0])


def ops_from_history(history: Iterable[Mapping[str, Any]]) -> list[Op]:
    """One :class:`Op` per invoke (and per completion without one), in history order; never completed: ``end`` None."""
    return [op for _, op in sorted(_iter_ops(history), key=lambda x: x[0])]


def numbered_violations(verdicts: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, Mapping[str, Any]]]:
    """(number from 1, checker, example) for every violation summary.json lists: the report's ``#v-<number>``."""
    out: list[tuple[int, str, Mapping[str, Any]]] = []
    for v in verdicts:
        for ex in v.get("examples") or []:
            out.append((len(out) + 1, str(v.get("checker")), ex))
    return out


def op_row(op: Op) -> dict[str, Any]:
    """The op as summary.json's ``violation_ops`` row."""
    return {
        "index": op.index,
        "indices": list(op.indices),
        "op": op.op,
        "f": op.f,
        "process": op.process,
        "session": op.session,
        "turn": op.turn,
        "attempt": op.attempt,
        "start_s": round(op.start, 6),
        "end_s": None if op.end is None else round(op.end, 6),
        "duration_ms": None if op.duration_ms is None else round(op.duration_ms, 3),
        "outcome": op.outcome,
        "status": op.status,
        "detail": op.detail,
        "request_id": op.request_id,
    }


@dataclass
class Lane:
    session: str
    ops: list[Op] = field(default_factory=list)
    marks: list[Op] = field(default_factory=list)  # fault operations on this session
    tracks: list[int] = field(default_factory=list)  # per op: its row within the lane
    n_tracks: int = 1
    violated: bool = False


@dataclass
class Timeline:
    lanes: list[Lane]
    chaos: list[Op]
    backend_faults: list[tuple[Op, str]]  # (the chat op, the fault the backend applied)
    t0: float
    t1: float
    sessions: int  # sessions in the run (lanes drawn may be fewer)
    ops_total: int
    ops_drawn: int
    violation_indices: dict[int, list[int]]  # op anchor index -> violation numbers that name it
    virtual: bool

    def anchored(self) -> list[int]:
        """The named ops drawn with an ``id="tl-<index>"`` (a named op in a lane left out has none)."""
        drawn = {op.index for lane in self.lanes for op in [*lane.ops, *lane.marks]} | {c.index for c in self.chaos}
        return sorted(i for i in self.violation_indices if i in drawn)

    def to_json(self) -> dict[str, Any]:
        return {
            "lanes": len(self.lanes),
            "sessions": self.sessions,
            "ops": self.ops_total,
            "ops_drawn": self.ops_drawn,
            "chaos": len(self.chaos),
            "faults": sum(len(lane.marks) for lane in self.lanes) + len(self.backend_faults),
            "start_s": round(self.t0, 6),
            "end_s": round(self.t1, 6),
            "clock": "virtual" if self.virtual else "run",
            "anchored": self.anchored(),
        }

    # ------------------------------------------------------------ svg

    def _x(self, t: float) -> float:
        span = self.t1 - self.t0
        return _LABEL_W + (t - self.t0) / span * (_W - _LABEL_W - _RIGHT) if span > 0 else _LABEL_W

    def svg(self) -> str:
        """The timeline as one ``<svg>`` element (inline in report.html; also a standalone file)."""
        y = _TOP
        lane_y: list[tuple[Lane, float, float]] = []
        for lane in self.lanes:
            h = lane.n_tracks * _TRACK_H + 2 * _LANE_PAD
            lane_y.append((lane, y, h))
            y += h
        height = y + _BOTTOM
        plot_top, plot_bottom = _TOP, y
        out = [
            '<svg xmlns="http://www.w3.org/2000/svg" class="timeline" id="timeline-svg" '
            f'viewBox="0 0 {_W} {height:.0f}" width="{_W}" height="{height:.0f}" role="img" '
            'font-family="system-ui,sans-serif" font-size="9">',
            "<title>Operations per session: bars from invoke to completion, coloured by outcome</title>",
        ]
        for lane, ly, lh in lane_y:  # lane backgrounds: violated sessions tinted
            fill = "#FCE4F1" if lane.violated else ("#F7F7F7" if lane_y.index((lane, ly, lh)) % 2 else "#FFFFFF")
            out.append(f'<rect x="0" y="{ly:.1f}" width="{_W}" height="{lh:.1f}" fill="{fill}"/>')
            label = html.escape(_short(lane.session))
            who = html.escape(", ".join(sorted({o.process for o in lane.ops}))[:28])
            weight = ' font-weight="bold"' if lane.violated else ""
            out.append(
                f'<text x="4" y="{ly + lh / 2 + 3:.1f}"{weight}><title>{html.escape(lane.session)}</title>'
                f'{label} <tspan fill="#777">{who}</tspan></text>'
            )
        for c in self.chaos:  # chaos: one band across every lane
            x0 = self._x(c.start)
            x1 = max(self._x(c.end if c.end is not None else self.t1), x0 + 2)
            ident = f' id="tl-{c.index}"' if c.index in self.violation_indices else ""
            out.append(
                f'<rect class="chaos"{ident} x="{x0:.1f}" y="{plot_top}" width="{x1 - x0:.1f}" '
                f'height="{plot_bottom - plot_top:.1f}" fill="{CHAOS_COLOR}" fill-opacity="0.75" '
                f'stroke="{CHAOS_EDGE}" stroke-dasharray="3 2" stroke-width="0.8">'
                f"<title>chaos #{c.index}: {html.escape(c.detail or 'chaos')}</title></rect>"
            )
        out.append(self._axis(plot_top, plot_bottom))
        faults_by_op = {id(op): f for op, f in self.backend_faults}
        for lane, ly, _lh in lane_y:
            for op, track in zip(lane.ops, lane.tracks, strict=True):
                out.append(self._bar(op, ly + _LANE_PAD + track * _TRACK_H))
                fault = faults_by_op.get(id(op))
                if fault is not None and op.end is not None:
                    out.append(
                        _triangle(
                            self._x(op.end), ly + _LANE_PAD + track * _TRACK_H, f"backend fault {fault} in #{op.index}"
                        )
                    )
            for m in lane.marks:
                ident = f"tl-{m.index}" if m.index in self.violation_indices else ""
                out.append(
                    _triangle(self._x(m.start), ly + _LANE_PAD, f"fault #{m.index}: {m.detail or 'fault'}", ident)
                )
        out.append(self._legend())
        out.append("</svg>")
        return "".join(out)

    def _bar(self, op: Op, y: float) -> str:
        x0 = self._x(op.start)
        x1 = max(self._x(op.end if op.end is not None else self.t1), x0 + 1.5)
        color = outcome_color(op.outcome)
        title = f"<title>{html.escape(op.label())}</title>"
        open_end = ' stroke-dasharray="2 1" stroke="#555" stroke-width="0.6"' if op.end is None else ""
        h = _TRACK_H - 2
        box = (
            f'data-outcome="{html.escape(op.outcome)}" x="{x0:.1f}" y="{y:.1f}" width="{x1 - x0:.1f}" height="{h}" '
            f'fill="{color}"'
        )
        if op.index in self.violation_indices:
            refs = ", ".join(f"violation {n}" for n in self.violation_indices[op.index])
            return (
                f'<a href="#op-{op.index}"><rect class="op violation-op" id="tl-{op.index}" {box} '
                f'stroke="{VIOLATION_COLOR}" stroke-width="2.5">'
                f"<title>{html.escape(op.label())}: {refs}</title></rect></a>"
            )
        return f'<rect class="op" {box}{open_end}>{title}</rect>'

    def _axis(self, top: float, bottom: float) -> str:
        parts = []
        unit = "virtual s (simulation)" if self.virtual else "s on the run clock"
        for t in _ticks(self.t0, self.t1):
            x = self._x(t)
            parts.append(
                f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="#DDD" stroke-width="0.6"/>'
            )
            parts.append(f'<text x="{x:.1f}" y="{top - 6}" text-anchor="middle" fill="#555">{_fmt_t(t)}</text>')
            parts.append(f'<text x="{x:.1f}" y="{bottom + 12}" text-anchor="middle" fill="#555">{_fmt_t(t)}</text>')
        parts.append(f'<text x="{_W - _RIGHT}" y="{bottom + 22}" text-anchor="end" fill="#555">{unit}</text>')
        return "".join(parts)

    def _legend(self) -> str:
        present = sorted({op.outcome for lane in self.lanes for op in lane.ops}, key=_outcome_order)
        x = 4.0
        parts = ['<g class="legend">']
        for o in present:
            parts.append(f'<rect x="{x:.0f}" y="6" width="12" height="8" fill="{outcome_color(o)}"/>')
            parts.append(f'<text x="{x + 15:.0f}" y="13">{html.escape(o)}</text>')
            x += 22 + 5.5 * len(o)
        parts.append(_triangle(x + 5, 6, "backend fault"))
        parts.append(f'<text x="{x + 13:.0f}" y="13">fault</text>')
        x += 44
        parts.append(
            f'<rect x="{x:.0f}" y="5" width="12" height="10" fill="{CHAOS_COLOR}" stroke="{CHAOS_EDGE}" '
            'stroke-dasharray="3 2" stroke-width="0.8"/>'
        )
        parts.append(f'<text x="{x + 15:.0f}" y="13">chaos</text>')
        x += 50
        parts.append(
            f'<rect x="{x:.0f}" y="6" width="12" height="8" fill="#FFF" stroke="{VIOLATION_COLOR}" stroke-width="2.5"/>'
        )
        parts.append(f'<text x="{x + 17:.0f}" y="13">named by a violation (click: its row)</text>')
        parts.append("</g>")
        return "".join(parts)


_ORDER = ("ok", "aborted", "http_4xx", "http_5xx", "fail", "unknown")


def _outcome_order(o: str) -> tuple[int, str]:
    return (_ORDER.index(o) if o in _ORDER else len(_ORDER), o)


def _triangle(x: float, y: float, title: str, ident: str = "") -> str:
    pts = f"{x - 3.5:.1f},{y:.1f} {x + 3.5:.1f},{y:.1f} {x:.1f},{y + 6:.1f}"
    attrs = f' id="{ident}" stroke="{VIOLATION_COLOR}" stroke-width="1.5"' if ident else ""
    tip = f"<title>{html.escape(title)}</title>"
    return f'<polygon class="fault" points="{pts}" fill="{FAULT_COLOR}"{attrs}>{tip}</polygon>'


def _short(session: str) -> str:
    return session if len(session) <= 14 else session[:12] + ".."


def _fmt_t(t: float) -> str:
    return f"{t:.3f}".rstrip("0").rstrip(".") if abs(t) < 100 else f"{t:.0f}"


def _ticks(t0: float, t1: float, n: int = 8) -> list[float]:
    span = t1 - t0
    if span <= 0:
        return [t0]
    raw = span / n
    mag = 10 ** _floor_log10(raw)
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = -(-t0 // step) * step
    out: list[float] = []
    t = first
    while t <= t1 + 1e-12 and len(out) < 4 * n:
        out.append(round(t, 9))
        t += step
    return out


def _floor_log10(x: float) -> int:
    k = 0
    while x >= 10:
        x /= 10
        k += 1
    while x < 1:
        x *= 10
        k -= 1
    return k


def _assign_tracks(ops: Sequence[Op], t_end: float) -> tuple[list[int], int]:
    """Greedy interval packing: an op goes on the first row free at its start (rows past the cap share the last)."""
    ends: list[float] = []
    tracks = []
    for op in ops:
        end = op.end if op.end is not None else t_end
        for k, e in enumerate(ends):
            if e <= op.start:
                ends[k] = end
                tracks.append(k)
                break
        else:
            if len(ends) < _MAX_TRACKS:
                ends.append(end)
                tracks.append(len(ends) - 1)
            else:
                k = min(range(len(ends)), key=lambda i: ends[i])
                ends[k] = max(ends[k], end)
                tracks.append(k)
    return tracks, max(1, len(ends))


@dataclass(slots=True)
class _LaneStats:
    """What choosing the drawn lanes needs of a session's lane, without its ops."""

    first_seen: int  # the op number that made the lane (lanes in the order the ops made them)
    ops: int = 0  # bars (not fault marks)
    first: float | None = None  # earliest start of its ops and marks
    violated: bool = False


def build_timeline(
    history: Sequence[Mapping[str, Any]],
    backend_executions: Mapping[str, Any],
    violation_ops: Mapping[int, list[int]],
    *,
    virtual: bool,
    max_lanes: int = MAX_LANES,
    max_ops: int = MAX_OPS,
) -> tuple[Timeline, list[Op]]:
    """The timeline, and the ops a violation names (for the op table), in history order.
    ``violation_ops``: history index -> violation numbers.

    Two walks of the history, never every op at once: the first counts each session's lane (ops, earliest
    start, whether a violation names it), the run's time span and the ops each violation names; the lanes to
    draw are chosen from those counts; the second keeps the drawn lanes' ops and the chaos ops only. So the
    memory is the drawn ops plus a few numbers per session, whatever the run's length."""
    named = set(violation_ops)
    anchor_of: dict[int, tuple[int, int]] = {}  # violation index -> (op number, op anchor) of the last op holding it
    stats: dict[str, _LaneStats] = {}
    named_ops: list[tuple[int, Op]] = []
    t0 = t1 = None
    for n, op in _iter_ops(history):
        for t in (op.start, op.end):
            if t is not None:
                t0 = t if t0 is None or t < t0 else t0
                t1 = t if t1 is None or t > t1 else t1
        hit = named.intersection(op.indices)
        if hit:
            named_ops.append((n, op))
            for i in hit:
                if i not in anchor_of or anchor_of[i][0] < n:
                    anchor_of[i] = (n, op.index)
        if op.f == "chaos":
            continue
        key = op.session or NO_SESSION
        st = stats.get(key)
        if st is None:
            st = stats[key] = _LaneStats(n)
        elif n < st.first_seen:
            st.first_seen = n
        if op.f != "fault":
            st.ops += 1
        if st.first is None or op.start < st.first:
            st.first = op.start
    anchors: dict[int, list[int]] = defaultdict(list)
    for idx, numbers in violation_ops.items():
        got = anchor_of.get(idx)
        if got is not None:
            for num in numbers:
                if num not in anchors[got[1]]:
                    anchors[got[1]].append(num)
    # a lane is violated when one of its ops is an anchor
    for _, op in named_ops:
        if op.index in anchors and op.f != "chaos":
            stats[op.session or NO_SESSION].violated = True
    lanes_in_order = sorted(stats.items(), key=lambda kv: kv[1].first_seen)
    if t0 is None or t1 is None:
        t0, t1 = 0.0, 1.0
    if t1 <= t0:
        t1 = t0 + 1e-3

    def first_of(kv: tuple[str, _LaneStats]) -> float:
        return kv[1].first if kv[1].first is not None else 0.0

    # named sessions (and the sessionless lane) first; the other slots go to sessions spread evenly over
    # the run (not the earliest ones), so a capped timeline still covers the whole time axis
    first = sorted(
        (kv for kv in lanes_in_order if kv[1].violated or kv[0] == NO_SESSION),
        key=lambda kv: (not kv[1].violated, kv[0] != NO_SESSION, first_of(kv)),
    )
    rest = sorted((kv for kv in lanes_in_order if not (kv[1].violated or kv[0] == NO_SESSION)), key=first_of)
    slots = max(0, max_lanes - len(first))
    if len(rest) > slots:
        rest = [rest[int(k * len(rest) / slots)] for k in range(slots)] if slots else []
    chosen: list[str] = []
    n_ops = 0
    for key, st in [*first, *rest]:
        if len(chosen) >= max_lanes or (n_ops + st.ops > max_ops and not st.violated and chosen):
            continue
        chosen.append(key)
        n_ops += st.ops
    lanes = {key: Lane(key, violated=stats[key].violated) for key in chosen}
    kept: list[tuple[int, Op]] = []
    chaos_kept: list[tuple[int, Op]] = []
    for n, op in _iter_ops(history):
        if op.f == "chaos":
            chaos_kept.append((n, op))
        elif (op.session or NO_SESSION) in lanes:
            kept.append((n, op))
    kept.sort(key=lambda x: x[0])
    for _, op in kept:
        lane = lanes[op.session or NO_SESSION]
        (lane.marks if op.f == "fault" else lane.ops).append(op)
    drawn = list(lanes.values())
    drawn.sort(key=lambda ln: (ln.session != NO_SESSION, _first(ln)))  # drawn in time order, as Jepsen does
    for lane in drawn:
        lane.ops.sort(key=lambda o: (o.start, o.index))
        lane.tracks, lane.n_tracks = _assign_tracks(lane.ops, t1)
    by_request = {op.request_id: op for lane in drawn for op in lane.ops if op.request_id}
    faults: list[tuple[Op, str]] = []
    for executions in backend_executions.values():
        for ex in executions if isinstance(executions, list) else []:
            if isinstance(ex, dict) and ex.get("fault") and ex.get("request_id") in by_request:
                faults.append((by_request[ex["request_id"]], str(ex["fault"])))
    tl = Timeline(
        lanes=drawn,
        chaos=[op for _, op in sorted(chaos_kept, key=lambda x: x[0])],
        backend_faults=faults,
        t0=t0,
        t1=t1,
        sessions=sum(1 for k in stats if k != NO_SESSION),
        ops_total=sum(st.ops for st in stats.values()),
        ops_drawn=n_ops,
        violation_indices=dict(anchors),
        virtual=virtual,
    )
    return tl, [op for _, op in sorted(named_ops, key=lambda x: x[0])]


def _priority(lane: Lane) -> tuple[bool, bool, float]:
    return (not lane.violated, lane.session != NO_SESSION, _first(lane))


def _first(lane: Lane) -> float:
    starts = [o.start for o in lane.ops] + [m.start for m in lane.marks]
    return min(starts) if starts else 0.0
