"""Human and CI renderings of a summary: ``report.md``, ``report.html``, ``junit.xml``.

All three are pure functions of ``summary.json`` (plus the PNGs for HTML), so
they can be regenerated at any time and never disagree with each other.
``report.html`` is one self-contained file: CSS inline, images as base64
``data:`` URIs, no scripts, no external resources, so it can be attached to a
CI run, mailed, or opened from an artifact zip without a server.
The run page shows the cause after Jepsen: every violation (up to the 20 per
checker summary.json keeps, then how many more, with ``verdicts.json`` linked),
each op index a link to its row of the op table and to its bar on the timeline
(plots/timeline.svg, inlined), the replay command, the scenario description,
the run metadata, and a badge when the numbers are virtual (simulation) time.
JUnit: one test case per scenario x checker (``invalid`` is a failure naming the
checker, ``unknown`` is skipped, as JUnit has no "could not tell"), plus one per
SLO bound; every case carries the run's duration (its history's span).
"""

from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.report.buckets import CLIENT_SERIES, SERVER_BUCKETS
from harness.report.palette import OUTCOME_COLORS
from harness.report.summary import coverage_line, unknown_line
from harness.report.timeline import numbered_violations

__all__ = [
    "html_page",
    "junit_xml",
    "markdown_run",
    "markdown_suite",
    "run_html",
    "suite_html",
]

SHOWN_PER_CHECKER = 20  # violations a page lists per checker (summary.json's examples); the rest: verdicts.json
VIRTUAL_NOTE = (
    "Simulation: every time and latency here is virtual time (the simulated clock), not a measurement "
    "of this machine; compare it only with other simulation runs."
)
WALL_NOTE = "Live run: times are measured on this machine's clock (seconds since the runner started)."
_PCOLS = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")
_PLOT_CAPTIONS = {
    "breakdown.png": "Server time breakdown for the requests at p50 and p99 of total_ms",
    "cdf.png": "Per-bucket latency CDFs (log axis)",
    "timeline.png": "Client latency from intended start, in-flight count, chaos and fault events",
    "variants.png": "Variant comparison with 95% bootstrap confidence intervals",
    "load.png": "Load per server process",
    "suite_variants.png": "Scenarios and variants: server total_ms p50 / p99 with 95% bootstrap CIs",
}


def _run_name(summary: Mapping[str, Any]) -> str:
    """The run folder's name: unique in a suite, unlike the scenario name (one scenario, several variants)."""
    sc = summary["scenario"]
    return str(sc.get("run") or sc["name"])


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if x < 10 else f"{x:.1f}"
    return str(x)


def _ci(stats: Mapping[str, Any], key: str) -> str:
    ci = (stats.get("ci") or {}).get(key)
    if not ci or None in ci:
        return ""
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


# ---------------------------------------------------------------- markdown


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _latency_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    lat = summary["latency"]
    for side, names in (("server", SERVER_BUCKETS), ("client", CLIENT_SERIES)):
        for name in names:
            st = lat[side][name]["all"]
            rows.append([name, st["n"], *(st.get(c) for c in _PCOLS), _ci(st, "p99_ms"), st["out_of_range"]])
    return rows


_LAT_HEADER = ("series", "n", "p50", "p90", "p99", "p99.9", "max", "p99 95% CI", "out of range")


def _split_rows(summary: Mapping[str, Any], split: str) -> list[list[Any]]:
    rows = []
    lat = summary["latency"]
    for side, name in (("server", "total_ms"), ("client", "client_request_ms")):
        for key, st in lat[side][name][split].items():
            rows.append([name, key, st["n"], st.get("p50_ms"), st.get("p99_ms"), st.get("max_ms")])
    return rows


def _attention(summary: Mapping[str, Any]) -> list[str]:
    """The UNKNOWN line and the declared-but-not-exercised line (what the run left undecided)."""
    lines = [unknown_line(list(summary["verdicts"])), coverage_line(dict(summary.get("faults") or {}))]
    return [x for x in lines if x]


def _clock_note(summary: Mapping[str, Any]) -> str:
    return VIRTUAL_NOTE if summary.get("clock") == "virtual" else WALL_NOTE


def _meta_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    meta = summary.get("meta") or {}
    rows: list[list[Any]] = [
        ["harness version", meta.get("harness_version")],
        ["git commit", meta.get("git_commit") or "not a git checkout"],
        ["host", meta.get("host")],
        ["cores", meta.get("cores")],
        ["python", meta.get("python")],
        ["platform", meta.get("platform")],
        ["date (first report of this run)", meta.get("date")],
        ["clock", "virtual (simulation)" if summary.get("clock") == "virtual" else "wall (live)"],
    ]
    tl = summary.get("timeline") or {}
    if tl.get("end_s") is not None:
        rows.append(["run duration (history span)", f"{_duration_s(summary):.3f} s"])
    return rows


def _duration_s(summary: Mapping[str, Any]) -> float:
    """The run's duration: from its first history event to its last (the run's own clock)."""
    tl = summary.get("timeline") or {}
    start, end = tl.get("start_s"), tl.get("end_s")
    if isinstance(start, int | float) and isinstance(end, int | float):
        return max(0.0, float(end) - float(start))
    span = summary.get("time_span") or {}
    start, end = span.get("start_s"), span.get("end_s")
    if isinstance(start, int | float) and isinstance(end, int | float):
        return max(0.0, float(end) - float(start))
    return 0.0


def _ops_text(ops: Sequence[Any]) -> str:
    return ", ".join(f"#{o}" for o in ops) if ops else "none named"


def markdown_run(summary: Mapping[str, Any]) -> str:
    sc = summary["scenario"]
    lines = [
        f"# Run `{_run_name(summary)}`: {summary['status'].upper()}",
        "",
    ]
    if summary.get("clock") == "virtual":
        lines += [f"> **SIMULATION, virtual time.** {VIRTUAL_NOTE}", ""]
    if sc.get("description"):
        lines += ["> " + line for line in str(sc["description"]).splitlines()] + [""]
    lines += [
        f"scenario `{sc['name']}`, variant `{sc['variant']}`, "
        f"seed {_fmt(sc.get('seed'))}, mode {_fmt(sc.get('mode'))}; "
        f"SLO: **{summary['slo']['status']}**; values out of histogram range: {summary['out_of_range']}.",
        "",
    ]
    failing = [v["checker"] for v in summary["verdicts"] if v["status"] == "invalid"]
    if failing:
        lines += [f"**Failing checkers: {', '.join(failing)}.**", ""]
    for line in _attention(summary):
        lines += [f"**{line}**", ""]
    if summary.get("replay"):
        lines += ["Replay (rebuilt from the run folder):", "", "```", str(summary["replay"]), "```", ""]
    note = (summary.get("harness") or {}).get("note")
    if note:
        lines += [f"> **Warning: {note}.** Server-side buckets (from the server's own log lines) still hold.", ""]
    lines += [
        "## Checkers",
        "",
    ]
    if summary["verdicts"]:
        lines += _md_table(
            ("checker", "status", "violations", "notes"),
            [[v["checker"], v["status"], v["violations"], v["notes"]] for v in summary["verdicts"]],
        )
        numbered = numbered_violations(summary["verdicts"])
        if numbered:
            lines += ["", "## Violations", ""]
        for v in summary["verdicts"]:
            mine = [(n, ex) for n, c, ex in numbered if c == v["checker"]]
            if not mine:
                continue
            lines.append(f"### `{v['checker']}`: {v['violations']} violation(s)")
            lines.append("")
            for n, ex in mine:
                lines.append(f"{n}. {ex['message']} (ops {_ops_text(ex['ops'])}, session {ex['session']})")
            more = int(v["violations"]) - len(mine)
            if more > 0:
                lines.append(f"\n{more} more: the full list is in [verdicts.json](verdicts.json).")
            lines.append("")
    else:
        lines.append("No verdicts were recorded for this run.")
    ops = summary.get("violation_ops") or []
    if ops:
        lines += ["## Operations named by violations", ""]
        lines += _md_table(
            ("op", "history", "f", "process", "session", "turn", "attempt", "invoke s", "complete s", "ms", "outcome",
             "status", "detail"),
            [
                [f"#{o['index']}", ",".join(map(str, o["indices"])), o["f"], o["process"], o["session"], o["turn"],
                 o["attempt"], o["start_s"], o["end_s"], o["duration_ms"], o["outcome"], o["status"], o["detail"]]
                for o in ops
            ],
        )  # fmt: skip
        lines.append("")
    lines += ["", "## SLOs", ""]
    if summary["slo"]["checks"]:
        lines += _md_table(
            ("series", "bound", "threshold ms", "observed ms", "n", "status"),
            [
                [c["series"], c["key"], c["threshold_ms"], c.get("observed_ms"), c.get("n"), c["status"]]
                for c in summary["slo"]["checks"]
            ],
        )
    else:
        lines.append("The scenario sets no latency SLO.")
    lines += ["", "## Latency (ms)", "", _clock_note(summary), ""]
    lines += _md_table(_LAT_HEADER, _latency_rows(summary))
    lines += [
        "",
        "Client latency is measured from each request's *intended* start (open loop), so stalls count; "
        "a turn includes its retries. Server buckets come from `chat_done` log lines.",
        "",
    ]
    for split, title in (("by_outcome", "outcome"), ("by_variant", "variant"), ("by_process", "process")):
        lines += [f"### By {title}", ""]
        lines += _md_table(("series", title, "n", "p50", "p99", "max"), _split_rows(summary, split))
        lines.append("")
    lines += ["## Breakdown at p50 and p99 of total_ms", ""]
    bd = summary["breakdown"]
    parts = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "other_ms", "total_ms")
    lines += _md_table(("at", "n", *parts), [[k, v.get("n"), *(v.get(p) for p in parts)] for k, v in bd.items()])
    lines += ["", "## Plots", ""]
    tl = summary.get("timeline") or {}
    if tl.get("svg"):
        lines.append(f"![Timeline: a lane per session, ops from invoke to completion]({tl['svg']})")
    for p in summary["plots"]:
        lines.append(f"![{_PLOT_CAPTIONS.get(Path(p).name, p)}]({p})")
    c = summary["counts"]
    lines += [
        "",
        f"Counts: {c['chat_done']} chat_done lines, {c['client_requests']} client chat requests, "
        f"{c['client_turns']} turns, {c['chaos_events']} chaos events, {c['fault_events']} fault events, "
        f"{c['server_processes']} server processes.",
        "",
        "## Run metadata",
        "",
    ]
    lines += _md_table(("", "value"), _meta_rows(summary))
    lines.append("")
    return "\n".join(lines)


def _suite_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    return [
        [
            r["name"],
            r["variant"],
            r["status"],
            ", ".join(r.get("failing") or []) or "-",
            r["violations"],
            r.get("unknown", 0),
            r.get("not_exercised", 0),
            r["slo"],
            r["total_ms"]["n"],
            r["total_ms"].get("p50_ms"),
            r["total_ms"].get("p99_ms"),
            _ci(r["total_ms"], "p99_ms"),
            r["client_request_ms"].get("p99_ms"),
        ]
        for r in summary["scenarios"]
    ]


_SUITE_HEADER = (
    "run",
    "variant",
    "status",
    "failing checkers",
    "violations",
    "unknown",
    "not exercised",
    "SLO",
    "n",
    "total p50",
    "total p99",
    "p99 95% CI",
    "client p99",
)


def markdown_suite(summary: Mapping[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"# Scenario suite: {summary['status'].upper()}",
        "",
        f"{c['scenarios']} scenarios: {c['valid']} valid, {c['invalid']} invalid, {c['unknown']} unknown; "
        f"{summary['slo_failed']} with a failed SLO.",
        "",
    ]
    lines += _md_table(_SUITE_HEADER, _suite_rows(summary))
    attention = [(r["name"], line) for r in summary["scenarios"] for line in r.get("attention") or []]
    if attention:
        lines += ["", "## Not decided", ""]
        lines += [f"- `{name}`: {line}" for name, line in attention]
    if any(r.get("clock") == "virtual" for r in summary["scenarios"]):
        lines += ["", f"*{VIRTUAL_NOTE}*"]
    lines += ["", "Each run's own report: `<run>/report.md`.", ""]
    for p in summary["plots"]:
        lines.append(f"![{_PLOT_CAPTIONS.get(Path(p).name, p)}]({p})")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.valid,.pass{color:#17692b;font-weight:600}.invalid,.fail{color:#b00020;font-weight:600}
.unknown,.no_data,.none{color:#8a6d00;font-weight:600}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:13px;color:#555}
code{background:#f5f5f5;padding:0 3px}
pre.replay{background:#f5f5f5;border:1px solid #ddd;padding:.5em;white-space:pre-wrap;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:13px;font-weight:600;vertical-align:middle}
.badge.virtual{background:#5b2c83;color:#fff}.badge.wall{background:#e8e8e8;color:#333}
.attention{border-left:4px solid #8a6d00;background:#fff8e1;padding:.4em .8em;margin:.6em 0}
.failing{border-left:4px solid #b00020;background:#fdecee;padding:.4em .8em;margin:.6em 0}
.description{border-left:3px solid #bbb;color:#444;padding:.2em .8em;margin:.5em 0;white-space:pre-line}
.timeline-box{max-height:760px;overflow:auto;border:1px solid #ddd}
ol.violations li{margin:.2em 0}ol.violations li:target,tr:target{background:#fce4f1}
details>summary{cursor:pointer;font-weight:600;margin:.3em 0}
.swatch{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:baseline}
td.attention-cell{text-align:left;max-width:420px}
"""


class _Html(str):
    """Markup built here from escaped parts: a table cell puts it in as is."""


def _cell(x: Any) -> str:
    if isinstance(x, _Html):
        return f"<td>{x}</td>"
    text = html.escape(_fmt(x))
    if isinstance(x, str) and x in ("valid", "invalid", "unknown", "pass", "fail", "no_data", "none"):
        return f'<td class="{x}">{text}</td>'
    return f"<td>{text}</td>"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    ident = f' id="{html.escape(table_id, quote=True)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    cap = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _figures(summary: Mapping[str, Any], base_dir: Path) -> str:
    return "".join(_img(base_dir / p, _PLOT_CAPTIONS.get(Path(p).name, p)) for p in summary["plots"])


def _badge(clock: Any) -> str:
    if clock == "virtual":
        title = html.escape(VIRTUAL_NOTE, quote=True)
        return f' <span class="badge virtual" id="clock-badge" title="{title}">SIMULATION · virtual time</span>'
    return ' <span class="badge wall" id="clock-badge">live · wall clock</span>'


def _op_links(ops: Sequence[Any], known: set[int], anchor: Mapping[int, int]) -> str:
    """History indices as links to the op table (``#op-<anchor>``); an index the history lacks stays text."""
    if not ops:
        return "none named"
    out = []
    for o in ops:
        if isinstance(o, int) and o in anchor and anchor[o] in known:
            out.append(f'<a class="op-link" href="#op-{anchor[o]}">#{o}</a>')
        else:
            out.append(f'<span title="not in the history">#{html.escape(str(o))}</span>')
    return ", ".join(out)


def _violations_html(summary: Mapping[str, Any]) -> str:
    ops = summary.get("violation_ops") or []
    anchor = {i: int(o["index"]) for o in ops for i in o.get("indices") or []}
    known = {int(o["index"]) for o in ops}
    numbered = numbered_violations(summary["verdicts"])
    if not numbered and not any(v["violations"] for v in summary["verdicts"]):
        return ""
    parts = ['<h2 id="violations">Violations</h2>']
    for v in summary["verdicts"]:
        mine = [(n, ex) for n, c, ex in numbered if c == v["checker"]]
        total = int(v["violations"])
        if not total:
            continue
        shown = f"all {total}" if len(mine) == total else f"first {len(mine)} of {total}"
        items = "".join(
            f'<li id="v-{n}" value="{n}">{html.escape(str(ex["message"]))} '
            f"(ops {_op_links(ex.get('ops') or [], known, anchor)}, "
            f"session <code>{html.escape(str(ex['session']))}</code>)</li>"
            for n, ex in mine
        )
        more = ""
        if total > len(mine):
            more = (
                f'<p class="more">{total - len(mine)} more: the full list is in '
                f'<a href="verdicts.json">verdicts.json</a> (this run folder).</p>'
            )
        checker = html.escape(v["checker"])
        parts.append(
            f'<details open class="checker-violations" data-checker="{checker}"><summary><code>{checker}</code>: '
            f'{total} violation(s), {shown} shown</summary><ol class="violations">{items}</ol>{more}</details>'
        )
    return "".join(parts)


def _op_table(summary: Mapping[str, Any]) -> str:
    ops = summary.get("violation_ops") or []
    if not ops:
        return ""
    anchored = set((summary.get("timeline") or {}).get("anchored") or [])
    refs: dict[int, list[int]] = {}
    for n, _c, ex in numbered_violations(summary["verdicts"]):
        for i in ex.get("ops") or []:
            refs.setdefault(i, []).append(n)
    rows = []
    for o in ops:
        nums = sorted({n for i in o.get("indices") or [] for n in refs.get(i, [])})
        back = ", ".join(f'<a href="#v-{n}">{n}</a>' for n in nums)
        color = OUTCOME_COLORS.get(str(o["outcome"]))
        sw = f'<span class="swatch" style="background:{color}"></span>' if color else ""
        first = f"#{o['index']}"
        if o["index"] in anchored:
            first = f'<a href="#tl-{o["index"]}" title="its bar on the timeline">#{o["index"]}</a>'
        cells = [
            first,
            ",".join(map(str, o.get("indices") or [])),
            *(
                html.escape(_fmt(o.get(k)))
                for k in ("f", "process", "session", "turn", "attempt", "start_s", "end_s", "duration_ms")
            ),
            sw + html.escape(str(o["outcome"])),
            html.escape(_fmt(o.get("status"))),
            html.escape(str(o.get("detail") or "")),
            back,
        ]
        rows.append(f'<tr id="op-{o["index"]}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("op", "history", "f", "process", "session", "turn", "attempt", "invoke s", "complete s", "ms",
                  "outcome", "status", "detail", "violations")
    )  # fmt: skip
    return (
        '<h2 id="ops">Operations named by violations</h2>'
        "<p>One row per operation (its invoke and completion events, by history index); "
        "<em>op</em> jumps to its bar on the timeline, <em>violations</em> back to the list.</p>"
        f'<table id="op-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _timeline_html(summary: Mapping[str, Any], run_dir: Path) -> str:
    tl = summary.get("timeline") or {}
    path = run_dir / str(tl.get("svg") or "")
    if not tl.get("svg") or not path.is_file():
        return ""
    svg = path.read_text().strip()
    sessions, lanes = tl.get("sessions", 0), tl.get("lanes", 0)
    left = ""
    if tl.get("ops_drawn", 0) < tl.get("ops", 0):
        left = (
            f" {tl['ops'] - tl['ops_drawn']} of {tl['ops']} operations are in lanes not drawn "
            "(sessions a violation names come first)."
        )
    clock = "virtual seconds of the simulation" if summary.get("clock") == "virtual" else "seconds on the run's clock"
    return (
        '<h2 id="timeline">Timeline</h2>'
        f"<p>A lane per session ({lanes} lanes for {sessions} sessions, plus sessionless operations), each "
        "operation a bar from invoke to completion coloured by outcome; overlapping operations of one session "
        f"stack. Backend faults are black triangles, chaos a yellow band. Time axis: {clock}.{left} "
        "Operations a violation names are outlined in magenta and link to their row below.</p>"
        f'<div class="timeline-box">{svg}</div>'
    )


def run_html(summary: Mapping[str, Any], run_dir: Path) -> str:
    sc = summary["scenario"]
    status = summary["status"]
    parts = [
        f'<h1>Run <code>{html.escape(_run_name(summary))}</code>: <span class="{status}">{status.upper()}</span>'
        f"{_badge(summary.get('clock'))}</h1>",
    ]
    if sc.get("description"):
        parts.append(f'<p class="description" id="description">{html.escape(str(sc["description"]))}</p>')
    parts.append(
        f"<p>scenario <code>{html.escape(str(sc['name']))}</code>, "
        f"variant <code>{html.escape(str(sc['variant']))}</code>, seed {html.escape(_fmt(sc.get('seed')))}, "
        f"mode {html.escape(_fmt(sc.get('mode')))}; "
        f'SLO <span class="{summary["slo"]["status"]}">{summary["slo"]["status"]}</span>; '
        f"values out of histogram range: {summary['out_of_range']}.</p>"
    )
    if summary.get("clock") == "virtual":
        parts.append(f'<p class="attention" id="virtual-note"><strong>{html.escape(VIRTUAL_NOTE)}</strong></p>')
    failing = [v["checker"] for v in summary["verdicts"] if v["status"] == "invalid"]
    if failing:
        names = ", ".join(f"<code>{html.escape(c)}</code>" for c in failing)
        parts.append(
            f'<p class="failing" id="failing">Failing checkers: {names} (<a href="#violations">violations</a>).</p>'
        )
    for k, line in enumerate(_attention(summary)):
        parts.append(f'<p class="attention" id="attention-{k}"><strong>{html.escape(line)}</strong></p>')
    if summary.get("replay"):
        parts.append(
            '<h2 id="replay-heading">Replay</h2><p>This run again (rebuilt from the run folder: scenario file, seed, '
            "variant; a target given on the command line must be given again):</p>"
            f'<pre class="replay" id="replay"><code>{html.escape(str(summary["replay"]))}</code></pre>'
        )
    note = (summary.get("harness") or {}).get("note")
    if note:
        parts.append(
            f'<p class="warning" id="harness-saturated"><strong>Warning: {html.escape(str(note))}.</strong> '
            "Server-side buckets (from the server's own log lines) still hold.</p>"
        )
    parts += [
        "<h2>Checkers</h2>",
    ]
    if summary["verdicts"]:
        parts.append(
            _html_table(
                ("checker", "status", "violations", "notes"),
                [[v["checker"], v["status"], v["violations"], v["notes"]] for v in summary["verdicts"]],
                table_id="checkers",
            )
        )
        parts.append(_violations_html(summary))
    else:
        parts.append("<p>No verdicts were recorded for this run.</p>")
    parts.append(_timeline_html(summary, run_dir))
    parts.append(_op_table(summary))
    parts.append("<h2>SLOs</h2>")
    if summary["slo"]["checks"]:
        parts.append(
            _html_table(
                ("series", "bound", "threshold ms", "observed ms", "n", "status"),
                [
                    [c["series"], c["key"], c["threshold_ms"], c.get("observed_ms"), c.get("n"), c["status"]]
                    for c in summary["slo"]["checks"]
                ],
            )
        )
    else:
        parts.append("<p>The scenario sets no latency SLO.</p>")
    parts.append("<h2>Latency (ms)</h2>")
    parts.append(f'<p class="clock-note">{html.escape(_clock_note(summary))}</p>')
    parts.append(_html_table(_LAT_HEADER, _latency_rows(summary)))
    parts.append(
        "<p>Client latency is measured from each request's <em>intended</em> start (open loop), so stalls "
        "count; a turn includes its retries. Server buckets come from <code>chat_done</code> log lines.</p>"
    )
    for split, title in (("by_outcome", "outcome"), ("by_variant", "variant"), ("by_process", "process")):
        parts.append(f"<h3>By {title}</h3>")
        parts.append(_html_table(("series", title, "n", "p50", "p99", "max"), _split_rows(summary, split)))
    parts.append("<h2>Plots</h2>")
    parts.append(_figures(summary, run_dir))
    parts.append('<h2 id="metadata">Run metadata</h2>')
    parts.append(_html_table(("", "value"), _meta_rows(summary), table_id="meta"))
    return html_page(f"{_run_name(summary)}: {status}", "".join(parts))


def suite_html(summary: Mapping[str, Any], suite_dir: Path) -> str:
    c = summary["counts"]
    rows = _suite_rows(summary)
    for row, r in zip(rows, summary["scenarios"], strict=True):
        name = str(row[0])
        href = html.escape(quote(f"{name}/report.html"), quote=True)
        row[0] = _Html(f'<a href="{href}">{html.escape(name)}</a>')
        failing = r.get("failing") or []
        if failing:
            links = ", ".join(
                f'<a class="failing-checker" href="{href}#violations">{html.escape(f)}</a>' for f in failing
            )
            row[3] = _Html(f'<span class="invalid">{links}</span>')
    status = summary["status"]
    attention = [(r["name"], line) for r in summary["scenarios"] for line in r.get("attention") or []]
    att_html = ""
    if attention:
        items = "".join(
            f'<li class="attention-line"><a href="{html.escape(quote(f"{name}/report.html"), quote=True)}">'
            f"{html.escape(name)}</a>: {html.escape(line)}</li>"
            for name, line in attention
        )
        att_html = f'<h2 id="not-decided">Not decided</h2><ul class="attention" id="attention">{items}</ul>'
    virtual = ""
    if any(r.get("clock") == "virtual" for r in summary["scenarios"]):
        virtual = f'<p class="attention" id="virtual-note"><strong>{html.escape(VIRTUAL_NOTE)}</strong></p>'
    body = (
        f'<h1>Scenario suite: <span class="{status}">{status.upper()}</span></h1>'
        f"<p>{c['scenarios']} scenarios: {c['valid']} valid, {c['invalid']} invalid, {c['unknown']} unknown; "
        f"{summary['slo_failed']} with a failed SLO.</p>"
        + virtual
        + _html_table(_SUITE_HEADER, rows, table_id="suite")
        + att_html
        + "<p>Each run's own report: follow its name (<code>&lt;run&gt;/report.html</code>, a relative link).</p>"
        + _figures(summary, suite_dir)
    )
    return html_page(f"suite: {status}", body)


# ---------------------------------------------------------------- junit


def _secs(x: float) -> str:
    return f"{x:.3f}"


def _testsuite(summary: Mapping[str, Any]) -> ET.Element:
    name = _run_name(summary)
    duration = _duration_s(summary)
    t = _secs(duration)
    suite = ET.Element("testsuite", name=name)
    props = ET.SubElement(suite, "properties")
    meta = summary.get("meta") or {}
    for key, value in (
        ("clock", summary.get("clock", "wall")),
        ("replay", summary.get("replay")),
        ("harness_version", meta.get("harness_version")),
        ("git_commit", meta.get("git_commit")),
        ("host", meta.get("host")),
        ("cores", meta.get("cores")),
        ("date", meta.get("date")),
    ):
        if value is not None:
            ET.SubElement(props, "property", name=key, value=str(value))
    failures = skipped = 0
    cases: list[ET.Element] = []
    for v in summary["verdicts"]:
        # each checker judged the whole run: its case carries the run's duration
        case = ET.Element("testcase", classname=f"scenario.{name}", name=v["checker"], time=t)
        if v["status"] == "invalid":
            failures += 1
            first = next((ex["message"] for ex in v.get("examples", [])), "")
            msg = f"checker {v['checker']} failed: {v['violations']} violation(s)"
            msg += f"; first: {first}" if first else ""
            msg += f" ({v['notes']})" if v["notes"] else ""
            fail = ET.SubElement(case, "failure", message=msg[:500], type="invalid")
            text = [f"{ex['message']} (ops {ex['ops']}, session {ex['session']})" for ex in v.get("examples", [])]
            more = int(v["violations"]) - len(text)
            if more > 0:
                text.append(f"... {more} more in verdicts.json")
            if summary.get("replay"):
                text.append(f"replay: {summary['replay']}")
            fail.text = "\n".join(text)
        elif v["status"] != "valid":
            skipped += 1
            ET.SubElement(case, "skipped", message=f"checker {v['checker']} {v['status']}: {v['notes']}"[:500])
        cases.append(case)
    if not summary["verdicts"]:
        case = ET.Element("testcase", classname=f"scenario.{name}", name="checkers", time=t)
        ET.SubElement(case, "skipped", message="no verdicts.json in the run folder")
        skipped += 1
        cases.append(case)
    for c in summary["slo"]["checks"]:
        case = ET.Element("testcase", classname=f"scenario.{name}", name=f"slo:{c['series']}:{c['key']}", time=t)
        msg = f"{c['series']} {c['key']}: observed {c.get('observed_ms')} ms vs bound {c['threshold_ms']} ms"
        if c["status"] in ("fail", "error"):
            failures += 1
            ET.SubElement(case, "failure", message=(msg + " " + c.get("note", "")).strip(), type="slo")
        elif c["status"] != "pass":
            skipped += 1
            ET.SubElement(case, "skipped", message=f"{c['status']}: {c.get('note', '')}")
        cases.append(case)
    verdict = summary.get("verdict")
    if isinstance(verdict, Mapping):  # the run's one verdict (harness/verdict.py): fails exactly when the run does
        case = ET.Element("testcase", classname=f"scenario.{name}", name="verdict", time=t)
        if verdict.get("exit_code") not in (0, None):
            failures += 1
            reasons = "; ".join(str(r) for r in verdict.get("reasons") or [])
            msg = f"{verdict.get('verdict')} (exit {verdict.get('exit_code')}): {reasons}"[:500]
            ET.SubElement(case, "failure", message=msg, type=str(verdict.get("verdict")).replace(" ", "_"))
        cases.append(case)
    suite.extend(cases)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", t)
    return suite


def junit_xml(run_summaries: Sequence[Mapping[str, Any]], *, name: str = "harness") -> str:
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in run_summaries:
        suite = _testsuite(s)
        root.append(suite)
        for k in totals:
            totals[k] += int(suite.get(k, "0"))
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", _secs(sum(_duration_s(s) for s in run_summaries)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
