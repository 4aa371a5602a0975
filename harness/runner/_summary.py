"""The end-of-run summary ``harness run`` prints, after k6's: one block per run, then the suite's line.

Each block says the run's verdict (from harness/verdict.py, the one every
command uses), the failing checkers by name with their first violation,
failed SLO bounds, unknown verdicts with their reasons, declared faults that
never fired, p50/p99 per bucket with the SLO bound beside it, the path to
report.html and the replay command.

Written for logs as much as terminals: every mark is a word (``FAIL``,
``PASS``, ``UNKNOWN``, ``ok``), so nothing depends on colour; colour only
repeats it. Lines are wrapped here, at word boundaries, to the console's
width (80 in a CI log), with continuation lines indented, so a narrow
terminal never cuts a mark off. What people copy or
scripts grep stays whole on one line and may overflow: the paths
(``report:``, ``history:``), the ``replay:`` command, a run error (often a
process's own output), ``note:`` lines (such as the sim's history digest),
and a single word wider than the line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness.verdict import EXIT_CANNOT_JUDGE, EXIT_FAIL, SUMMARY_BUCKETS, Judgement

__all__ = ["render_run", "render_suite"]

_STYLE = {"FAIL": "bold red", "PASS": "green", "UNKNOWN": "yellow", "CANNOT JUDGE": "bold yellow", "ok": "green"}


def _mark(word: str) -> str:
    style = _STYLE.get(word)
    return f"[{style}]{escape(word)}[/]" if style else escape(word)


def _wrap(mark: str, text: str, width: int, indent: int = 2) -> list[str]:
    """``mark`` (a plain word, coloured) then ``text``, wrapped at word boundaries to ``width``."""
    lead = " " * indent
    first = f"{lead}{mark} " if mark else lead
    plain = textwrap.wrap(
        text,
        width=max(width, 40),
        initial_indent=first,
        subsequent_indent=lead + "    ",
        break_long_words=False,  # a path or command overflows rather than being cut (copy-paste)
        break_on_hyphens=False,
    ) or [first.rstrip()]
    out = [escape(line) for line in plain]
    if mark:
        out[0] = out[0].replace(escape(first), f"{lead}{_mark(mark)} ", 1)
    return out


def _ms(x: Any) -> str:
    if not isinstance(x, int | float):
        return "-"
    if x >= 1000:
        return f"{x / 1000:.2f}s"
    if x >= 100:
        return f"{x:.0f}ms"
    if x >= 10:
        return f"{x:.1f}ms"
    return f"{x:.2f}ms"


def _verdict_word(j: Judgement) -> str:
    if j.exit_code == EXIT_FAIL:
        return "FAIL"
    if j.exit_code == EXIT_CANNOT_JUDGE:
        return "CANNOT JUDGE"
    return "PASS"


def _first_violation(v: dict[str, Any]) -> str:
    vs = v.get("violations") or []
    n = len(vs)
    first = vs[0].get("message", "") if vs and isinstance(vs[0], dict) else ""
    return f"{n} violation(s); first: {first}" if first else f"{n} violation(s)"


def _latency_rows(j: Judgement, width: int) -> list[str]:
    bounds: dict[str, list[dict[str, Any]]] = {}
    for c in j.slo.get("checks") or []:
        bounds.setdefault(str(c.get("series")), []).append(c)
    buckets = [b for b in SUMMARY_BUCKETS if b in j.latency] + sorted(set(bounds) - set(j.latency))
    if not buckets:
        return ["  latency: no samples"]
    head = f"  {'latency' + (' (virtual)' if j.virtual_time else ''):<22}{'n':>7}{'p50':>10}{'p99':>10}  SLO"
    rows = [escape(head)]
    for b in buckets:
        st = j.latency.get(b, {})
        slo_parts, plain_len = [], 0
        for c in bounds.get(b, []):
            status = str(c.get("status"))
            word = {"pass": "ok", "fail": "FAIL", "error": "FAIL", "no_data": "UNKNOWN"}.get(status, status)
            bound = f"{str(c.get('key', '')).removesuffix('_ms')}<={c.get('threshold_ms')}ms"
            slo_parts.append(f"{escape(bound)} {_mark(word)}")
            plain_len += len(bound) + len(word) + 3
        line = f"  {b:<22}{st.get('n', 0):>7}{_ms(st.get('p50_ms')):>10}{_ms(st.get('p99_ms')):>10}"
        if not slo_parts:
            rows.append(escape(line))
        elif len(line) + plain_len <= width:
            rows.append(escape(line) + "  " + ", ".join(slo_parts))
        else:  # too narrow for the bounds beside the figures: one bound per line under them, never cut
            rows.append(escape(line))
            rows += [f"{' ' * 6}SLO {part}" for part in slo_parts]
    return rows


def render_run(
    j: Judgement,
    *,
    width: int = 80,
    duration_s: float | None = None,
    report: Path | None = None,
    replay: str | None = None,
    history: Path | None = None,
    notes: Sequence[str] = (),
) -> list[str]:
    """The block for one run, as rich-markup lines no wider than ``width`` (the marks are words)."""
    word = _verdict_word(j)
    took = f" in {duration_s:.1f} s" if duration_s is not None else ""
    title = f"{j.run}: "
    out = [f"{escape(title)}{_mark(word)} (exit {j.exit_code}){escape(took)}"]
    if j.error:  # whole: often a process's own output, which people and scripts search for
        first, *rest = str(j.error).splitlines() or [""]
        out.append(f"  {_mark('FAIL')} {escape('run error: ' + first)}")
        out += [escape(f"      {ln}") for ln in rest]
    by_name = {str(v.get("checker")): v for v in j.verdicts}
    for name in j.failing:
        out += _wrap("FAIL", f"{name}: {_first_violation(by_name.get(name, {}))}", width)
    for c in j.slo.get("checks") or []:
        if c.get("status") in ("fail", "error"):
            bound = f"{c.get('series')} {c.get('key')} <= {c.get('threshold_ms')} ms"
            what = f"SLO {bound}: observed {c.get('observed_ms')} ms"
            out += _wrap("FAIL", f"{what} {c.get('note', '')}".rstrip(), width)
    for line in j.gate:
        out += _wrap("FAIL" if j.gate_code == EXIT_FAIL else "", f"gate: {line}", width)
    unknown_mark = "FAIL" if j.strict else "UNKNOWN"
    for checker, reason in j.unknown:
        out += _wrap(unknown_mark, f"{checker}: {reason}", width)
    if j.not_exercised:
        mark = "FAIL" if j.strict else "UNKNOWN"
        out += _wrap(mark, f"declared but not exercised: {', '.join(j.not_exercised)}", width)
    if j.coverage_note:
        out += _wrap("FAIL" if j.strict else "UNKNOWN", f"fault coverage unknown: {j.coverage_note}", width)
    valid = sum(1 for v in j.verdicts if v.get("status") == "valid")
    if j.verdicts:
        counts = f"checks: {valid} valid, {len(j.failing)} invalid, {len(j.unknown)} unknown of {len(j.verdicts)}"
        out += _wrap("", counts, width)
    out += _latency_rows(j, width)
    for reason in j.reasons:
        if reason.startswith(("cannot judge", "not decided", "strict")):
            out += _wrap("", reason, width)
    for n in [*j.notes, *notes]:  # free text other modules write and scripts grep: one line each, not wrapped
        out.append(escape(f"  note: {n}"))
    # paths and the replay command stay on one line each: copied and pasted, never split
    if report is not None:
        out.append(escape(f"  report: {report}"))
    if replay:
        out.append(escape(f"  replay: {replay}"))
        if history is not None:
            out.append(escape(f"  history: {history}"))
    return out


def render_suite(
    judgements: Sequence[Judgement], code: int, *, out_dir: Path, report: bool, width: int = 80
) -> list[str]:
    """The last lines: how many runs passed, failed, could not be judged; the exit code; the suite report."""
    n_fail = sum(1 for j in judgements if j.exit_code == EXIT_FAIL)
    n_cj = sum(1 for j in judgements if j.exit_code == EXIT_CANNOT_JUDGE)
    n_pass = len(judgements) - n_fail - n_cj
    word = {EXIT_FAIL: "FAIL", EXIT_CANNOT_JUDGE: "CANNOT JUDGE"}.get(code, "PASS")
    text = f"{len(judgements)} run(s): {n_pass} pass, {n_fail} fail, {n_cj} cannot judge; exit {code}"
    lines = [f"{_mark(word)} {escape(text)}"]
    failing = [j.run for j in judgements if j.exit_code == EXIT_FAIL]
    if failing:
        lines += _wrap("", f"failed: {', '.join(failing)}", width, indent=0)
    where = f"suite report: {out_dir / 'report.html'}" if report else f"run folders under {out_dir}/"
    lines += _wrap("", where, width, indent=0)
    return lines
