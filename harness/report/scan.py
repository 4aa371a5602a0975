"""A run folder as the report and the judgement read it, in one streaming pass, without what they never read.

:meth:`RunData.load` keeps every event whole (GET bodies, request framing,
headers, content hashes), every server log line and every backend execution:
what the checkers need. After the checkers, what reads the run is the report's
series (:func:`harness.report.buckets.extract`), its timeline
(:func:`harness.report.timeline.build_timeline`), the history counts of
``summary.json`` and fault coverage (:func:`harness.checkers.faults.fault_coverage`,
with :func:`harness.checkers.continuity.execution_log_gap`). :func:`lean_run`
reads the folder a line (a member) at a time and keeps only the fields those
read, so they run unchanged on it and give the same figures:

- every history event (their count and each op's times, kinds and outcomes make the
  report), reduced to the keys in :data:`EVENT_KEYS`; a completion's ``headers`` to
  ``x-req-id``; a ``body`` only on the backend ``/stats`` probes (continuity reads it);
- the ``chat_done`` server log lines only, reduced to :data:`CHAT_DONE_KEYS`;
- of the backend execution log, every routing key (an empty log and a log without
  faults are told apart) with only its executions that carry a fault, reduced to
  :data:`EXECUTION_KEYS`;
- no final states, no owners: nothing after the checkers reads them.

The result is a :class:`RunData` for those readers only: a checker given it would see
an empty ``final_states`` and no GET bodies, so checkers always get the folder from
``RunData.load`` or the per-session pass (harness/verdict.py). A cut run reads as
``RunData.load`` reads it (torn last line skipped, open operations closed as unknown),
and a corrupt folder is the same ``ValueError``.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.checkers.continuity import BACKEND_PROBE
from harness.report.buckets import SERVER_BUCKETS
from harness.rundata import FREEZE_EVENTS, RUN_FILES, RunData, close_cut_history

__all__ = ["CHAT_DONE_KEYS", "EVENT_KEYS", "EXECUTION_KEYS", "LeanEvent", "LeanLogLine", "LeanRun", "lean_run"]

# what extract, build_timeline (ops_from_history, _detail), _ops, close_cut_history and continuity read of an event
EVENT_KEYS = frozenset(
    (
        "index",
        "op",
        "type",
        "f",
        "time",
        "intended",
        "process",
        "session",
        "server",
        "turn",
        "attempt",
        "request_id",
        "status",
        "aborted",
        "variant",
        "clock_uncertainty",
        "clock_shift",
        "error",
        "finish_reason",
        "value",
    )
)
REQ_ID_HEADER = "x-req-id"  # extract's one header: the server's request id, to join chat_done lines
CHAT_DONE_KEYS = frozenset(
    (
        "event",
        "req_id",
        "session_id",
        "outcome",
        "status",
        "pid",
        "worker_port",
        "variant",
        "ts",
        "inflight_now",
        *SERVER_BUCKETS,
    )
)
EXECUTION_KEYS = ("fault", "fault_source", "request_id")


class _Record(Mapping[str, Any]):
    """A read-only event of a few known keys, a slot each: what the readers do with a dict (``get``, ``in``,
    ``[k]``, ``dict(r)``) at a fifth of a dict's memory. A key that was absent stays absent (``in`` is false,
    ``get`` gives the default), so a reader that tells "absent" from ``None`` reads the same."""

    __slots__ = ()
    _names: frozenset[str] = frozenset()  # the slots, for a membership test that is one hash
    _order: tuple[str, ...] = ()

    def __init__(self, pairs: Iterator[tuple[str, Any]]) -> None:
        for k, v in pairs:
            object.__setattr__(self, k, v)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self._names else default

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key) if key in self._names else self._missing(key)
        except AttributeError:
            raise KeyError(key) from None

    @staticmethod
    def _missing(key: str) -> Any:
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._names and hasattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._order if hasattr(self, k))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError(f"{type(self).__name__} is read-only")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


class LeanEvent(_Record):
    """A history event reduced to :data:`EVENT_KEYS` (and ``headers``, ``body`` where kept)."""

    __slots__ = (*sorted(EVENT_KEYS), "headers", "body")
    _order = __slots__
    _names = frozenset(__slots__)


class LeanLogLine(_Record):
    """A ``chat_done`` server log line reduced to :data:`CHAT_DONE_KEYS`."""

    __slots__ = tuple(sorted(CHAT_DONE_KEYS))
    _order = __slots__
    _names = frozenset(__slots__)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """RunData.load's reading of a jsonl file, a dict at a time (torn last line skipped, else corrupt)."""
    from harness.checkers.stream import _jsonl as read

    return read(path)


def _object_items(path: Path) -> Iterator[tuple[str, Any]]:
    """The members of a JSON object file one at a time (never the whole decoded file at once)."""
    from harness.checkers.stream import _object_items as read

    return read(path)


_EMPTY: dict[str, Any] = {}  # the headers of a completion that carries no x-req-id (read, never written)


def _lean_event(ev: dict[str, Any], strs: dict[str, str]) -> LeanEvent:
    out: list[tuple[str, Any]] = []
    for k, v in ev.items():
        if k in EVENT_KEYS:
            out.append((k, strs.setdefault(v, v) if type(v) is str and len(v) <= 256 else v))
    if "headers" in ev:
        h = ev["headers"]
        if isinstance(h, dict):
            rid = h.get(REQ_ID_HEADER)
            h = (
                {REQ_ID_HEADER: strs.setdefault(rid, rid) if type(rid) is str else rid}
                if REQ_ID_HEADER in h
                else _EMPTY
            )
        out.append(("headers", h))
    if "body" in ev and ev.get("f") == "probe" and ev.get("value") == BACKEND_PROBE and ev.get("type") != "invoke":
        out.append(("body", ev["body"]))
    return LeanEvent(iter(out))


def _lean_log(line: dict[str, Any], strs: dict[str, str]) -> LeanLogLine:
    return LeanLogLine(
        (k, strs.setdefault(v, v) if type(v) is str else v) for k, v in line.items() if k in CHAT_DONE_KEYS
    )


def _lean_executions(execs: Any) -> list[dict[str, Any]] | None:
    if not isinstance(execs, list):
        return None  # every reader skips a value that is not a list
    return [{k: ex[k] for k in EXECUTION_KEYS if k in ex} for ex in execs if isinstance(ex, dict) and ex.get("fault")]


class LeanRun(RunData):
    """A :class:`RunData` read by :func:`lean_run`: for the report and the judgement, never for a checker."""


def _js(run_dir: Path, name: str, default: Any) -> Any:
    p = run_dir / RUN_FILES[name]
    return json.loads(p.read_text()) if p.exists() else default


def lean_run(run_dir: Path | str) -> LeanRun:
    """The folder as the report and the judgement read it (see the module docstring): not for checkers."""
    run_dir = Path(run_dir)
    strs: dict[str, str] = {}
    was_enabled = gc.isenabled()
    gc.disable()  # as RunData.load: acyclic small dicts, the cyclic collector would walk them again and again
    try:
        history = [_lean_event(ev, strs) for ev in _jsonl(run_dir / RUN_FILES["history"])]
        logs = [
            _lean_log(line, strs)
            for line in _jsonl(run_dir / RUN_FILES["server_logs"])
            if line.get("event") == "chat_done"
        ]
        executions = {k: _lean_executions(v) for k, v in _object_items(run_dir / RUN_FILES["backend_executions"])}
        run = LeanRun(
            scenario=_js(run_dir, "scenario", {}),
            history=close_cut_history(history),  # type: ignore[arg-type]  # read as dicts are read
            backend_executions=executions,  # type: ignore[arg-type]  # None: a member that is not a list
            server_logs=logs,  # type: ignore[arg-type]
            harness=_js(run_dir, "harness", {}),
        )
    finally:
        if was_enabled:
            gc.enable()
    if len(run.history) > FREEZE_EVENTS:  # as RunData.load: a large run is moved out of the collector's sight
        gc.freeze()
    return run
