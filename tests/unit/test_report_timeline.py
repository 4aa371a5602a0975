"""The timeline's ops and lanes, the fixed palette, and plots that keep outcomes and series apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from harness.report import plots
from harness.report.buckets import extract
from harness.report.meta import clock_kind, replay_command
from harness.report.palette import OUTCOME_COLORS, outcome_color, series_style
from harness.report.timeline import NO_SESSION, build_timeline, ops_from_history

try:
    from tests.unit.report_fixtures import make_run
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import make_run  # type: ignore[no-redef]


def _ev(index: int, kind: str, op: int, t: float, **kw: Any) -> dict[str, Any]:
    return {"index": index, "type": kind, "op": op, "time": t, "f": "chat", "process": "agent-0", **kw}


HISTORY = [
    _ev(0, "invoke", 1, 0.0, f="create", session=None),
    _ev(1, "ok", 1, 0.1, f="create", session="s1", status=200),
    _ev(2, "invoke", 2, 0.2, session="s1", turn=0, attempt=0),
    _ev(3, "invoke", 3, 0.3, session="s1", turn=0, attempt=1, process="agent-1"),  # overlaps op 2
    _ev(4, "ok", 2, 0.5, session="s1", status=200, aborted=True),
    _ev(5, "ok", 3, 0.6, session="s1", status=502),
    _ev(6, "invoke", 4, 0.4, f="chaos", process="nemesis", session=None, value={"kind": "delete_during_proxy"}),
    _ev(7, "info", 4, 0.45, f="chaos", process="nemesis", session=None),
    _ev(8, "invoke", 5, 0.7, session="s2"),
    _ev(9, "fail", 6, 0.8, f="create", session=None, error="ConnectError"),  # a completion with no invoke
]


def test_ops_pair_invokes_with_completions() -> None:
    ops = {op.index: op for op in ops_from_history(HISTORY)}
    assert sorted(ops) == [0, 2, 3, 6, 8, 9]
    assert ops[0].indices == [0, 1] and ops[0].session == "s1" and ops[0].outcome == "ok"
    assert ops[2].outcome == "aborted" and ops[2].duration_ms == pytest.approx(300.0)
    assert ops[3].outcome == "http_5xx" and ops[3].status == 502
    assert ops[8].end is None and ops[8].outcome == "unknown"
    assert ops[9].outcome == "fail" and ops[9].detail == "ConnectError"


def test_lanes_stack_overlapping_ops_and_put_named_sessions_first() -> None:
    tl, _ = build_timeline(HISTORY, {}, {5: [1]}, virtual=True)
    lanes = {lane.session: lane for lane in tl.lanes}
    assert set(lanes) == {"s1", "s2", NO_SESSION}
    s1 = lanes["s1"]
    assert s1.violated and s1.n_tracks == 2  # ops 2 and 3 overlap: two rows
    assert dict(zip([o.index for o in s1.ops], s1.tracks, strict=True)) == {0: 0, 2: 0, 3: 1}
    assert [c.index for c in tl.chaos] == [6]
    assert tl.violation_indices == {3: [1]}  # history index 5 is op 3's completion: anchored at 3
    assert tl.anchored() == [3]
    svg = tl.svg()
    assert 'id="tl-3"' in svg and 'href="#op-3"' in svg and "virtual s (simulation)" in svg
    # too few lanes allowed: the named session is kept, others dropped
    small, _ = build_timeline(HISTORY, {}, {8: [1]}, virtual=False, max_lanes=1)
    assert [lane.session for lane in small.lanes] == ["s2"] and small.anchored() == [8]


def test_a_capped_timeline_spreads_its_lanes_over_the_run() -> None:
    history = []
    for k in range(40):  # 40 sessions, one after the other
        history += [
            _ev(2 * k, "invoke", k, float(k), session=f"s{k:02d}"),
            _ev(2 * k + 1, "ok", k, k + 0.5, status=200),
        ]
    tl, _ = build_timeline(history, {}, {}, virtual=False, max_lanes=8)
    starts = [lane.ops[0].start for lane in tl.lanes]
    assert len(starts) == 8 and starts == sorted(starts)
    assert starts[0] == 0.0 and starts[-1] >= 30.0  # not just the first eight sessions


def test_backend_faults_join_chat_ops_by_request_id() -> None:
    history = [
        _ev(0, "invoke", 1, 0.0, session="s", request_id="r1"),
        _ev(1, "ok", 1, 0.2, session="s", request_id="r1", status=502),
    ]
    tl, _ = build_timeline(history, {"s": [{"request_id": "r1", "fault": "http_502"}]}, {}, virtual=False)
    assert [(op.index, f) for op, f in tl.backend_faults] == [(0, "http_502")]
    assert 'class="fault"' in tl.svg()


def test_outcome_colours_do_not_depend_on_order_or_company() -> None:
    assert outcome_color("aborted") == OUTCOME_COLORS["aborted"] == outcome_color("aborted")
    assert outcome_color("committed") == outcome_color("ok")
    odd = outcome_color("brand_new_outcome")
    assert odd == outcome_color("brand_new_outcome") and odd not in OUTCOME_COLORS.values()
    styles = [series_style(s)[1:] for s in ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "total_ms")]
    assert len(set(styles)) == len(styles)  # line style + marker differ, not only the colour


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    figs: list[Figure] = []

    def save(fig: Figure, path: Path) -> Path:
        figs.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", save)
    return figs


def test_timeline_png_uses_the_palette_whatever_outcomes_a_run_has(monkeypatch: pytest.MonkeyPatch) -> None:
    figs = _capture(monkeypatch)
    for kwargs in ({"abort_rate": 0.0, "error_rate": 0.2}, {"abort_rate": 0.3, "error_rate": 0.0}):
        run, _ = make_run(seed=2, sessions=6, **kwargs)
        plots.plot_timeline(extract(run), Path("unused.png"))
    seen: set[str] = set()
    for fig in figs:
        for coll in fig.axes[0].collections:
            if isinstance(coll, PathCollection) and coll.get_label():
                outcome = coll.get_label().split(" (")[0]
                assert to_hex(coll.get_facecolor()[0]).lower() == OUTCOME_COLORS[outcome].lower(), outcome
                seen.add(outcome)
    assert {"ok", "aborted", "http_5xx"} <= seen


def test_cdf_lines_differ_in_style_and_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    figs = _capture(monkeypatch)
    series = {"total_ms": [1.0, 2.0, 3.0, 50.0], "proxy_elapsed_ms": [0.9, 1.9, 2.9, 49.0], "lock_wait_ms": [0.1] * 4}
    plots.plot_cdfs(series, Path("unused.png"))
    lines = figs[0].axes[0].get_lines()
    drawn = [(ln.get_linestyle(), ln.get_marker()) for ln in lines if ln.get_label().split(" ")[0] in series]
    assert len(drawn) == 3 and len(set(drawn)) == 3


def test_replay_command_and_clock_from_the_run_folder() -> None:
    live = {"source": "scenarios/x.toml", "seed": 7, "target": {"kind": "reference"}}
    assert (
        replay_command(live, None, "lock_restoration")
        == "harness run scenarios/x.toml --seed 7 --variant lock_restoration"
    )
    command = {**live, "target": {"kind": "command"}}
    assert replay_command(command, None, "default") == "harness run scenarios/x.toml --seed 7"
    sim = {"source": "scenarios/x.toml", "seed": 3, "strategy": "pct", "depth": 2}
    assert (
        replay_command(live, sim, "v")
        == "harness replay scenarios/x.toml --seed 3 --strategy pct --depth 2 --variant v"
    )
    assert replay_command({}, None, "default") is None
    assert clock_kind(live, None) == "wall" and clock_kind({"mode": "sim"}, None) == "virtual"
    assert clock_kind(live, sim) == "virtual"
