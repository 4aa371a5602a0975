"""One fixed colour per outcome, and marks for faults, chaos and violations that no outcome uses.

Colours used to come from matplotlib's cycle in the order outcomes appeared,
so ``aborted`` was orange in one run and green in the next, and the chaos
and fault markers (red, orange) looked like outcomes. Here every outcome a
report knows has its own colour (Okabe-Ito, readable by the colour-blind),
the same in every run, every plot and the HTML timeline; an outcome nobody
listed gets one from a reserve chosen by a hash of its name, so it too is
stable. Faults are black, chaos a pale yellow band, a violation a magenta
outline: none of them is an outcome colour.
"""

from __future__ import annotations

import zlib

__all__ = [
    "CHAOS_COLOR",
    "CHAOS_EDGE",
    "FAULT_COLOR",
    "OUTCOME_COLORS",
    "SERIES_STYLES",
    "VIOLATION_COLOR",
    "outcome_color",
    "series_style",
]

_GREEN, _ORANGE, _SKY, _VERMILLION, _BLUE, _GREY = "#009E73", "#E69F00", "#56B4E9", "#D55E00", "#0072B2", "#999999"

# Client outcomes (buckets.client_outcome) and the server's chat_done outcomes (CONTEXT.md) share one meaning
# per colour: green done, orange aborted, sky blue refused/skipped, vermillion server/upstream error,
# blue transport failure, grey unknown (timed out, cancelled, cut).
OUTCOME_COLORS: dict[str, str] = {
    "ok": _GREEN,
    "committed": _GREEN,
    "provisional": "#7FCDB4",  # a lighter green: done, but not yet confirmed
    "aborted": _ORANGE,
    "http_4xx": _SKY,
    "closing_skip": _SKY,
    "state_changed_skip": _SKY,
    "http_5xx": _VERMILLION,
    "upstream_error": _VERMILLION,
    "error": _VERMILLION,
    "fail": _BLUE,
    "unknown": _GREY,
    "cancelled": _GREY,
    "info": _GREY,
}
# For outcomes not listed above: picked by crc32 of the name, never by order of appearance.
_RESERVE = ("#8C6D31", "#4D4D4D", "#1B7837", "#762A83", "#B35806", "#2166AC")

FAULT_COLOR = "#000000"  # backend faults: black triangles
CHAOS_COLOR = "#FFF1A8"  # chaos: a pale yellow band ...
CHAOS_EDGE = "#B8860B"  # ... with dark-yellow edges
VIOLATION_COLOR = "#E7298A"  # the ops a violation names: a thick magenta outline


def outcome_color(outcome: str) -> str:
    """The colour of ``outcome``: fixed for known outcomes, a stable hash pick for others."""
    known = OUTCOME_COLORS.get(outcome)
    if known is not None:
        return known
    return _RESERVE[zlib.crc32(outcome.encode()) % len(_RESERVE)]


# Latency series on the CDF plots: colour, line style and marker, so two lines that overlap
# (or a reader who cannot tell the colours apart) still tell them apart.
SERIES_STYLES: dict[str, tuple[str, str, str]] = {
    "lock_wait_ms": ("#D55E00", "-", "o"),
    "tokenize_in_ms": ("#E69F00", "--", "s"),
    "proxy_elapsed_ms": ("#0072B2", "-.", "^"),
    "tokenize_out_ms": ("#009E73", ":", "D"),
    "total_ms": ("#000000", "-", "v"),
    "client_request_ms": ("#CC79A7", "--", "P"),
    "client_turn_ms": ("#56B4E9", "-.", "X"),
}
_STYLE_RESERVE = (("#4D4D4D", ":", "*"), ("#8C6D31", "--", "h"))


def series_style(name: str) -> tuple[str, str, str]:
    """(colour, line style, marker) of a latency series."""
    return SERIES_STYLES.get(name) or _STYLE_RESERVE[zlib.crc32(name.encode()) % len(_STYLE_RESERVE)]
