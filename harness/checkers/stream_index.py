"""A run-wide index of the server log, compact, for the per-session check pass (harness/checkers/stream.py).

Some rules of liveness and log_consistency read other sessions' log lines: the
client clock (harness/checkers/clock.py) joins every chat to its ``chat_start``
line by the server's request id, which 8 hex characters make shared by two
sessions now and then; a timed-out DELETE is excused by another session's chat
that never arrived while the process logged arrivals; ``inflight_now`` is one
process's running count over every session's lines. A part (a group of whole
sessions) does not hold those lines, and carrying them to a reduce is carrying
the log. So one streaming pass over the log builds :class:`LogIndex`, a few
numbers per line in ``array`` columns (no dict or object per line), and every
part reads it: the whole-run check builds the same index from the loaded run's
lines (:meth:`LogIndex.of`), so both paths answer from the same facts.

Strings are coded as unsigned 64-bit ints (:meth:`LogIndex.code`): a lower-case
hex string of 1-15 characters (CONTEXT.md's request ids, the harness's caller
ids) is its value tagged with its length, exactly; any other string gets a
serial number from a table (exact too; it grows only with ids of another shape).

Memory: about 20 bytes per ``chat_start`` line twice (by request id, by caller
id), 8 per line that names a caller, 8 per arrival, and the per-process
in-flight walk's few results (``bench/diag_stream_index.py`` measures it).
"""

from __future__ import annotations

import math
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any

from harness.checkers.clock import Bounds
from harness.checkers.ops import Op

__all__ = ["LogIndex", "indexed_clock_bounds"]

_HEX = re.compile(r"[0-9a-f]{1,15}")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class _Sorted:
    """Rows (code, ts or None, process) sorted by code, file order within one code."""

    def __init__(self) -> None:
        self.keys = array("Q")
        self.ts = array("d")
        self.has_ts = bytearray()
        self.proc = array("l")

    def add(self, key: int, ts: float | None, proc: int) -> None:
        self.keys.append(key)
        self.ts.append(0.0 if ts is None else ts)
        self.has_ts.append(ts is not None)
        self.proc.append(proc)

    def seal(self) -> None:
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        self.keys = array("Q", (self.keys[i] for i in order))
        self.ts = array("d", (self.ts[i] for i in order))
        self.has_ts = bytearray(self.has_ts[i] for i in order)
        self.proc = array("l", (self.proc[i] for i in order))

    def find(self, key: int | None) -> tuple[int, float | None, int]:
        """(rows with this code, the first's ts, the first's process); (0, None, -1) when none."""
        if key is None:
            return 0, None, -1
        lo = bisect_left(self.keys, key)
        hi = bisect_right(self.keys, key, lo)
        if hi == lo:
            return 0, None, -1
        return hi - lo, (self.ts[lo] if self.has_ts[lo] else None), self.proc[lo]

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.keys, self.ts, self.proc)) + len(self.has_ts)


class LogIndex:
    """What the per-session steps need of the whole server log, in one pass over its lines (in file order).

    - ``start_by_req(req_id)`` / ``start_by_caller(caller)``: how many ``chat_start`` lines carry that server
      request id / caller ``x-request-id``, and the first's ``ts`` and process (what ``clock_bounds`` joins);
    - ``logged(caller)``: some line of any event names that caller request id;
    - ``arrivals(port)``: per process of that ``worker_port``, the sorted ``ts`` of its ``chat_start`` lines
      that name their caller (liveness's "lost on the way");
    - ``inflight``: log_consistency's per-process in-flight walk, done once over every session's lines.
    """

    def __init__(self, lines: Iterable[dict[str, Any]]) -> None:
        self._other: dict[str, int] = {}
        self.procs: list[str] = []
        self._proc_ids: dict[str, int] = {}
        self._by_req = _Sorted()
        self._by_caller = _Sorted()
        logged = array("Q")
        arrivals: dict[str, dict[int, list[float]]] = {}
        self.n_lines = 0
        for _pos, ln in enumerate(lines):
            self.n_lines += 1
            ev = ln.get("event")
            caller = ln.get("caller_request_id")
            if caller is not None:
                logged.append(self.intern(str(caller)))
            if ev == "chat_start":
                ts = _num(ln.get("ts"))
                proc = self._proc(ln)
                if ln.get("req_id") is not None:
                    self._by_req.add(self.intern(str(ln["req_id"])), ts, proc)
                if caller is not None:
                    self._by_caller.add(self.intern(str(caller)), ts, proc)
                    if ts is not None and not math.isnan(ts):
                        arrivals.setdefault(str(ln.get("worker_port")), {}).setdefault(proc, []).append(ts)
        self._by_req.seal()
        self._by_caller.seal()
        self._logged = array("Q", sorted(logged))
        del logged
        self._arrivals = {
            port: {proc: array("d", sorted(ts)) for proc, ts in per.items()} for port, per in arrivals.items()
        }

    @classmethod
    def of(cls, lines: Iterable[dict[str, Any]]) -> LogIndex:
        return cls(lines)

    # --- codes --------------------------------------------------------------------------------

    def code(self, s: str) -> int | None:
        """The string's code (None: a string of another shape that this index has never coded)."""
        if _HEX.fullmatch(s):
            return int(s, 16) | (len(s) << 60)
        return self._other.get(s)

    def intern(self, s: str) -> int:
        """The string's code, given one if it has none yet (another shape than short lower-case hex)."""
        got = self.code(s)
        if got is None:
            got = self._other[s] = len(self._other)
        return got

    def _proc(self, ln: dict[str, Any]) -> int:
        key = f"{ln.get('worker_port', '?')}/{ln.get('pid', '?')}"  # harness.checkers.ops.process_key
        got = self._proc_ids.get(key)
        if got is None:
            got = self._proc_ids[key] = len(self.procs)
            self.procs.append(key)
        return got

    # --- lookups ------------------------------------------------------------------------------

    def start_by_req(self, req_id: str) -> tuple[int, float | None, str]:
        n, ts, proc = self._by_req.find(self.code(req_id))
        return n, ts, self.procs[proc] if proc >= 0 else ""

    def start_by_caller(self, caller: str) -> tuple[int, float | None, str]:
        n, ts, proc = self._by_caller.find(self.code(caller))
        return n, ts, self.procs[proc] if proc >= 0 else ""

    def logged(self, caller: str) -> bool:
        k = self.code(caller)
        if k is None:
            return False
        i = bisect_left(self._logged, k)
        return i < len(self._logged) and self._logged[i] == k

    def arrivals(self, port: Any) -> Iterator[tuple[str, array[float]]]:
        """(process key, sorted ts of its chat_start lines naming their caller) for ``str(port)``."""
        for proc, ts in self._arrivals.get(str(port), {}).items():
            yield self.procs[proc], ts

    def nbytes(self) -> int:
        """The index's columns, in bytes (the code table of odd-shaped strings not counted)."""
        n = self._by_req.nbytes() + self._by_caller.nbytes() + self._logged.itemsize * len(self._logged)
        return n + sum(a.itemsize * len(a) for per in self._arrivals.values() for a in per.values())


def indexed_clock_bounds(
    index: LogIndex, ops: Iterable[Op], mine: Callable[[Op], bool], shared: Container[str]
) -> Bounds:
    """:func:`harness.checkers.clock.clock_bounds` of the chats of ``ops`` that are ``mine``, each joined to
    its ``chat_start`` over the whole log (``index``), not only the lines at hand: a part's chat whose server
    request id another session's line carries too is skipped as the whole-run join skips it. ``shared``:
    request ids that chats not in ``ops`` carry too."""
    chats = [o for o in ops if o.f == "chat"]
    rids = Counter(o.request_id for o in chats if o.request_id is not None)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    pairs: Counter[str] = Counter()
    for o in chats:
        if not mine(o):
            continue
        if o.request_id is not None and (rids[o.request_id] > 1 or o.request_id in shared):
            continue  # two operations share the id: which line is whose cannot be told
        n, ts, key = (0, None, "") if o.req_id is None else index.start_by_req(o.req_id)
        if n == 0:
            n, ts, key = index.start_by_caller(o.request_id or "")
        if n != 1 or ts is None:
            continue  # none, or a request the server saw twice (a retry on another connection)
        pairs[key] += 1
        hi[key] = min(hi.get(key, ts - o.start), ts - o.start)  # it arrived after the client sent it
        answered = o.type in ("ok", "fail") and o.status is not None and o.seen_end is not None
        if answered and o.seen_end is not None:  # and it started before the client had the answer
            lo[key] = max(lo.get(key, ts - o.seen_end), ts - o.seen_end)
    return {key: (n, lo.get(key), hi.get(key)) for key, n in pairs.items()}
