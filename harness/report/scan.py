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

Kept is not held: the reduced events and log lines go, a record at a time, to an unlinked temp file
(:class:`SpilledRecords`) and are read back from it each time a reader walks them, so the memory is 8
bytes per record whatever the run's length (a 10^5-session run: ~1.5 million events). The one
pass also closes the cut operations (as :func:`harness.rundata.close_cut_history`).

The result is a :class:`RunData` for those readers only: a checker given it would see
an empty ``final_states`` and no GET bodies, so checkers always get the folder from
``RunData.load`` or the per-session pass (harness/verdict.py). A cut run reads as
``RunData.load`` reads it (torn last line skipped, open operations closed as unknown),
and a corrupt folder is the same ``ValueError``.
"""

from __future__ import annotations

import json
import marshal
import os
import weakref
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from harness.checkers.continuity import BACKEND_PROBE
from harness.report.buckets import SERVER_BUCKETS
from harness.rundata import CUT_REASON, RUN_FILES, RunData

__all__ = ["CHAT_DONE_KEYS", "EVENT_KEYS", "EXECUTION_KEYS", "LeanRun", "SpilledRecords", "lean_run"]

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


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """RunData.load's reading of a jsonl file, a dict at a time (torn last line skipped, else corrupt)."""
    from harness.checkers.stream import _jsonl as read

    return read(path)


def _object_items(path: Path) -> Iterator[tuple[str, Any]]:
    """The members of a JSON object file one at a time (never the whole decoded file at once)."""
    from harness.checkers.stream import _object_items as read

    return read(path)


_EMPTY: dict[str, Any] = {}  # the headers of a completion that carries no x-req-id (read, never written)


def _lean_event(ev: dict[str, Any]) -> dict[str, Any]:
    out: list[tuple[str, Any]] = []
    for k, v in ev.items():
        if k in EVENT_KEYS:
            out.append((k, v))
    if "headers" in ev:
        h = ev["headers"]
        if isinstance(h, dict):
            rid = h.get(REQ_ID_HEADER)
            h = {REQ_ID_HEADER: rid} if REQ_ID_HEADER in h else _EMPTY
        out.append(("headers", h))
    if "body" in ev and ev.get("f") == "probe" and ev.get("value") == BACKEND_PROBE and ev.get("type") != "invoke":
        out.append(("body", ev["body"]))
    return dict(out)


def _lean_log(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k in CHAT_DONE_KEYS}


def _lean_executions(execs: Any) -> list[dict[str, Any]] | None:
    if not isinstance(execs, list):
        return None  # every reader skips a value that is not a list
    return [{k: ex[k] for k in EXECUTION_KEYS if k in ex} for ex in execs if isinstance(ex, dict) and ex.get("fault")]


class LeanRun(RunData):
    """A :class:`RunData` read by :func:`lean_run`: for the report and the judgement, never for a checker.

    Its ``history`` and ``server_logs`` are :class:`SpilledRecords` (a temp file, a few bytes of memory per
    record); everything else is as :class:`RunData` holds it.
    """


def _js(run_dir: Path, name: str, default: Any) -> Any:
    p = run_dir / RUN_FILES[name]
    return json.loads(p.read_text()) if p.exists() else default


SPILL_CHUNK = 1 << 20  # bytes an iterator reads from the spill file at a time


class SpilledRecords(Sequence[Mapping[str, Any]]):
    """Records (the lean events or log lines, as dicts) kept in an unlinked temp file, not in memory.

    Each record is written once, :mod:`marshal`-encoded (exact for every JSON value: floats bit for bit),
    and decoded again each time a reader reaches it; memory is the 8-byte offset of each record. The file
    has no name (unlinked as soon as it is made: nothing is left behind, whatever kills the process) and
    lives in the run folder's ``.harness-tmp/`` (harness/checkers/spill_area.py), beside the data it
    copies, not in a RAM-backed ``/tmp``. Iterators read by offset (``os.pread``), so several may walk it
    at once. Readers get a fresh dict per record: changing one changes nothing stored.
    """

    def __init__(self, area_of: Path) -> None:
        from harness.checkers import spill_area

        self._fh = spill_area.anonymous_file(area_of)
        self._close = weakref.finalize(self, self._fh.close)  # the file goes with the last reader
        self._offsets = array("q", [0])
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def append(self, record: Mapping[str, Any]) -> None:
        blob = marshal.dumps(dict(record) if type(record) is not dict else record)
        self._offsets.append(self._offsets[-1] + len(blob))
        self._pending.append(blob)
        self._pending_bytes += len(blob)
        if self._pending_bytes >= SPILL_CHUNK:
            self._flush()

    def flush(self) -> None:
        """Write what is buffered (reads do it too)."""
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._fh.write(b"".join(self._pending))
            self._fh.flush()
            self._pending.clear()
            self._pending_bytes = 0

    def nbytes(self) -> int:
        """Memory this holds (the offsets and unwritten records), not the file."""
        return self._offsets.itemsize * len(self._offsets) + self._pending_bytes

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _read(self, a: int, b: int) -> bytes:
        self._flush()
        return os.pread(self._fh.fileno(), b - a, a)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        k = i + n if i < 0 else i
        if not 0 <= k < n:
            raise IndexError("record index out of range")
        out: dict[str, Any] = marshal.loads(self._read(self._offsets[k], self._offsets[k + 1]))
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._flush()
        offsets, fd, n = self._offsets, self._fh.fileno(), len(self)
        k = 0
        while k < n:
            start = offsets[k]
            # a chunk of whole records (at least one)
            j = k + 1
            while j < n and offsets[j + 1] - start <= SPILL_CHUNK:
                j += 1
            buf = os.pread(fd, offsets[j] - start, start)
            for m in range(k, j):
                yield marshal.loads(buf[offsets[m] - start : offsets[m + 1] - start])
            k = j

    def close(self) -> None:
        self._close()


class _OpSet:
    """A set of op ids: a bitmap for the small non-negative ints a history numbers its ops with (a bit each
    instead of a set entry and an int object each), a set for anything else."""

    BITMAP_MAX = 1 << 27  # ops below this go in the bitmap (at most 16 MB)

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[Any] = set()

    def add(self, op: Any) -> None:
        if type(op) is int and 0 <= op < self.BITMAP_MAX:
            byte = op >> 3
            if byte >= len(self._bits):
                self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
            self._bits[byte] |= 1 << (op & 7)
        else:
            self._other.add(op)

    def __contains__(self, op: Any) -> bool:
        if type(op) is int and 0 <= op < self.BITMAP_MAX:
            byte = op >> 3
            return byte < len(self._bits) and bool(self._bits[byte] & (1 << (op & 7)))
        return op in self._other


def _close_cut(history: SpilledRecords, done: _OpSet, opened: array[int]) -> None:
    """:func:`close_cut_history` on the spilled history, appended to it: an ``info`` completion for every op
    invoked and never completed. ``opened``: the positions of every invoke, ``done``: every op some other
    event carries."""
    open_ops = [history[p] for p in opened if history[p].get("op") not in done]
    if not open_ops:
        return
    end = max((float(e.get("time", 0.0)) for e in history), default=0.0)
    for inv in open_ops:
        ev = {k: inv.get(k) for k in ("op", "process", "f", "session", "server", "turn", "attempt", "request_id")}
        ev.update(type="info", time=end, intended=inv.get("intended"), error=CUT_REASON, index=len(history))
        history.append(ev)


def lean_run(run_dir: Path | str) -> LeanRun:
    """The folder as the report and the judgement read it (see the module docstring): not for checkers."""
    run_dir = Path(run_dir)
    history = SpilledRecords(run_dir)
    logs = SpilledRecords(run_dir)
    done = _OpSet()
    opened = array("q")  # positions of the invokes (their op may complete later)
    pending: dict[Any, int] = {}  # invokes not completed yet, by op: how many (what a whole history leaves)
    for ev in _jsonl(run_dir / RUN_FILES["history"]):
        op = ev.get("op")
        if ev.get("type") == "invoke":
            opened.append(len(history))
            pending[op] = pending.get(op, 0) + 1
        else:
            done.add(op)
            pending.pop(op, None)
        history.append(_lean_event(ev))
    history.flush()
    if pending:  # some invoke may be open: the exact test (ops completed before their invoke included)
        _close_cut(history, done, opened)
    del done, opened, pending
    for line in _jsonl(run_dir / RUN_FILES["server_logs"]):
        if line.get("event") == "chat_done":
            logs.append(_lean_log(line))
    history.flush()
    logs.flush()
    executions = {k: _lean_executions(v) for k, v in _object_items(run_dir / RUN_FILES["backend_executions"])}
    return LeanRun(
        scenario=_js(run_dir, "scenario", {}),
        history=history,  # type: ignore[arg-type]  # read as a list of dicts is read
        backend_executions=executions,  # type: ignore[arg-type]  # None: a member that is not a list
        server_logs=logs,  # type: ignore[arg-type]
        harness=_js(run_dir, "harness", {}),
    )
