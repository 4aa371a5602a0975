"""Human and CI renderings of a summary: ``report.md``, ``report.html``, ``junit.xml``.

All three are pure functions of ``summary.json`` (plus the PNGs for HTML), so
they can be regenerated at any time and never disagree with each other.
``report.html`` is one self-contained file: CSS inline, images as base64
``data:`` URIs, no scripts, no external resources, so it can be attached to a
CI run, mailed, or opened from an artifact zip without a server.
JUnit: one test case per scenario x checker (``invalid`` is a failure,
``unknown`` is skipped, as JUnit has no "could not tell"), plus one per SLO bound.
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

__all__ = [
    "html_page",
    "junit_xml",
    "markdown_run",
    "markdown_suite",
    "run_html",
    "suite_html",
]

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


def markdown_run(summary: Mapping[str, Any]) -> str:
    sc = summary["scenario"]
    lines = [
        f"# Run `{_run_name(summary)}`: {summary['status'].upper()}",
        "",
        f"scenario `{sc['name']}`, variant `{sc['variant']}`, "
        f"seed {_fmt(sc.get('seed'))}, mode {_fmt(sc.get('mode'))}; "
        f"SLO: **{summary['slo']['status']}**; values out of histogram range: {summary['out_of_range']}.",
        "",
    ]
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
        for v in summary["verdicts"]:
            for ex in v.get("examples", [])[:5]:
                lines.append(f"- `{v['checker']}`: {ex['message']} (ops {ex['ops']}, session {ex['session']})")
    else:
        lines.append("No verdicts were recorded for this run.")
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
    lines += ["", "## Latency (ms)", ""]
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
    for p in summary["plots"]:
        lines.append(f"![{_PLOT_CAPTIONS.get(Path(p).name, p)}]({p})")
    c = summary["counts"]
    lines += [
        "",
        f"Counts: {c['chat_done']} chat_done lines, {c['client_requests']} client chat requests, "
        f"{c['client_turns']} turns, {c['chaos_events']} chaos events, {c['fault_events']} fault events, "
        f"{c['server_processes']} server processes.",
        "",
    ]
    return "\n".join(lines)


def _suite_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    return [
        [
            r["name"],
            r["variant"],
            r["status"],
            r["violations"],
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
    "violations",
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


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def run_html(summary: Mapping[str, Any], run_dir: Path) -> str:
    sc = summary["scenario"]
    status = summary["status"]
    parts = [
        f'<h1>Run <code>{html.escape(_run_name(summary))}</code>: <span class="{status}">{status.upper()}</span></h1>',
        f"<p>scenario <code>{html.escape(str(sc['name']))}</code>, "
        f"variant <code>{html.escape(str(sc['variant']))}</code>, seed {html.escape(_fmt(sc.get('seed')))}; "
        f'SLO <span class="{summary["slo"]["status"]}">{summary["slo"]["status"]}</span>; '
        f"values out of histogram range: {summary['out_of_range']}.</p>",
    ]
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
            )
        )
        examples = [
            f"<li><code>{html.escape(v['checker'])}</code>: {html.escape(ex['message'])} "
            f"(ops {html.escape(str(ex['ops']))}, session {html.escape(str(ex['session']))})</li>"
            for v in summary["verdicts"]
            for ex in v.get("examples", [])[:5]
        ]
        if examples:
            parts.append("<ul>" + "".join(examples) + "</ul>")
    else:
        parts.append("<p>No verdicts were recorded for this run.</p>")
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
    return html_page(f"{_run_name(summary)}: {status}", "".join(parts))


def suite_html(summary: Mapping[str, Any], suite_dir: Path) -> str:
    c = summary["counts"]
    rows = _suite_rows(summary)
    for row in rows:
        name = str(row[0])
        href = html.escape(quote(f"{name}/report.html"), quote=True)
        row[0] = _Html(f'<a href="{href}">{html.escape(name)}</a>')
    status = summary["status"]
    body = (
        f'<h1>Scenario suite: <span class="{status}">{status.upper()}</span></h1>'
        f"<p>{c['scenarios']} scenarios: {c['valid']} valid, {c['invalid']} invalid, {c['unknown']} unknown; "
        f"{summary['slo_failed']} with a failed SLO.</p>"
        + _html_table(_SUITE_HEADER, rows)
        + "<p>Each run's own report: follow its name (<code>&lt;run&gt;/report.html</code>, a relative link).</p>"
        + _figures(summary, suite_dir)
    )
    return html_page(f"suite: {status}", body)


# ---------------------------------------------------------------- junit


def _testsuite(summary: Mapping[str, Any]) -> ET.Element:
    name = _run_name(summary)
    suite = ET.Element("testsuite", name=name)
    failures = skipped = 0
    cases: list[ET.Element] = []
    for v in summary["verdicts"]:
        case = ET.Element("testcase", classname=f"scenario.{name}", name=v["checker"], time="0")
        if v["status"] == "invalid":
            failures += 1
            fail = ET.SubElement(
                case, "failure", message=f"{v['violations']} violation(s): {v['notes']}"[:500], type="invalid"
            )
            fail.text = "\n".join(
                f"{ex['message']} (ops {ex['ops']}, session {ex['session']})" for ex in v.get("examples", [])
            )
        elif v["status"] != "valid":
            skipped += 1
            ET.SubElement(case, "skipped", message=f"{v['status']}: {v['notes']}"[:500])
        cases.append(case)
    if not summary["verdicts"]:
        case = ET.Element("testcase", classname=f"scenario.{name}", name="checkers", time="0")
        ET.SubElement(case, "skipped", message="no verdicts.json in the run folder")
        skipped += 1
        cases.append(case)
    for c in summary["slo"]["checks"]:
        case = ET.Element("testcase", classname=f"scenario.{name}", name=f"slo:{c['series']}:{c['key']}", time="0")
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
        case = ET.Element("testcase", classname=f"scenario.{name}", name="verdict", time="0")
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
    suite.set("time", "0")
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
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
