"""Incident reproduction: production log lines in, a replayable scenario out.

Production incidents in a session server arrive as its log lines (JSON or text)
(``chat_start``, ``chat_done``, ``state_changed_during_proxy``,
``proxy_transport_error``, heartbeats, session creations and deletions),
often from several processes and rarely clean. This package reads them
tolerantly (:mod:`._parse`), reconstructs the sessions, their requests'
timing and overlap and the backend's behaviour (:mod:`._reconstruct`),
writes a scenario with a scripted workload (:mod:`._write`), and checks that
a simulated replay shows the same outcome classes in the same order
(:mod:`._replay`). ``harness incident import|replay`` is the command
(:mod:`.cli`); docs/incidents.md says what can and cannot be reconstructed.
"""

from harness.incident._parse import (
    EVENTS,
    SKIP_REASONS,
    LogEvent,
    ParsedLogs,
    Window,
    WindowError,
    filter_events,
    parse_lines,
    parse_window,
    read_logs,
)
from harness.incident._reconstruct import (
    Incident,
    IncidentRequest,
    IncidentSession,
    abort_after_ms,
    backend_fault,
    reconstruct,
)
from harness.incident._replay import ReplayCheck, compare, expected_outcomes, replay, replay_outcomes
from harness.incident._write import describe, scenario_text

__all__ = [
    "EVENTS",
    "SKIP_REASONS",
    "Incident",
    "IncidentRequest",
    "IncidentSession",
    "LogEvent",
    "ParsedLogs",
    "ReplayCheck",
    "Window",
    "WindowError",
    "abort_after_ms",
    "backend_fault",
    "compare",
    "describe",
    "expected_outcomes",
    "filter_events",
    "parse_lines",
    "parse_window",
    "read_logs",
    "reconstruct",
    "replay",
    "replay_outcomes",
    "scenario_text",
]
