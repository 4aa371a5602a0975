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
hex string of 1-15 characters (CONTEXT.md's request ids) is its value tagged with
its length, exactly; one of 16 (the harness's caller ids) gets a serial number
from :class:`IdTable` (its value in an array: ~20 bytes an id, where a dict of
the strings took ~150; at 10^5 sessions the ~800,000 request ids of the run's
operations are coded, by liveness's part steps too); any other string a serial
number from a dict (exact too; it grows only with ids of another shape).

Memory: about 20 bytes per ``chat_start`` line twice (by request id, by caller
id), 8 per line that names a caller, 8 per arrival, and the per-process
in-flight walk's few results (``bench/diag_stream_index.py`` measures it).
"""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any

from harness.checkers.clock import Bounds, add_bound
from harness.checkers.ops import Op

__all__ = ["IdSet", "IdTable", "LogIndex", "indexed_clock_bounds"]

_HEX = re.compile(r"[0-9a-f]{1,15}")
_HEX16 = re.compile(r"[0-9a-f]{16}")  # the harness's caller request ids (IdSource.caller_request_id)
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads any pattern of values over the slots
_WALKED = {"chat_start": 0, "chat_done": 1, "heartbeat": 2}
_Walked = tuple[list[tuple[float, int]], tuple[int, float] | None]  # (heartbeats (inflight, open)), drift (pos, by)


def _hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _walk(ts: array[float], pos: array[int], what: bytearray, value: array[float], has: bytearray) -> _Walked:
    """One process's lines (file order) walked in ``ts`` order (stable), as log_consistency's in-flight rule does."""
    n = len(ts)
    order: Iterable[int] = range(n)
    if any(ts[i] > ts[i + 1] for i in range(n - 1)) or any(t != t for t in ts):  # not in order yet (or a NaN)
        order = sorted(range(n), key=ts.__getitem__)
    open_ = 0
    beats: list[tuple[float, int]] = []
    # (excess, position) of each chat line that carries inflight_now, in walk order: two columns, not a tuple
    # of a float and an int per line (~110 bytes: 40 MB for one process of a 10^5 run while it is walked)
    ex_e, ex_p = array("d"), array("q")
    base: float | None = None
    for i in order:
        k = what[i]
        if k == 0:
            open_ += 1
            if has[i]:
                ex_e.append(value[i] - open_)
                ex_p.append(pos[i])
        elif k == 1:
            if has[i]:
                ex_e.append(value[i] - (open_ - 1))
                ex_p.append(pos[i])
            open_ = max(0, open_ - 1)
        elif has[i] and value[i] != open_:
            beats.append((value[i], open_))
    drift: tuple[int, float] | None = None
    if ex_e:
        base = min(ex_e)
        first = next(((p, e - base) for e, p in zip(ex_e, ex_p, strict=True) if e > base), None)
        drift = first
    return beats, drift


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class IdTable:
    """An exact map of 64-bit unsigned ints to serial numbers 0, 1, 2, ... in the order they were first added.

    Open addressing with linear probing in an ``array('i')`` of slots (a serial, -1 when empty) over the values
    in an ``array('Q')`` (``values[serial]``): 12-21 bytes an entry with the table at most 60% full, where a
    ``dict`` of the 16-digit strings took about 150 (a 65-byte str, a dict entry, an int). Equal values get one
    serial, distinct values distinct ones, whatever the values (a value is found by comparing it, the hash only
    picks where to start looking)."""

    __slots__ = ("_shift", "_slots", "values")

    def __init__(self, size: int = 1024) -> None:
        bits = max(4, (size - 1).bit_length())
        self._slots = array("i", [-1]) * (1 << bits)
        self._shift = 64 - bits
        self.values = array("Q")

    def __len__(self) -> int:
        return len(self.values)

    def get(self, value: int) -> int | None:
        """The value's serial, None if it was never added."""
        slots, values = self._slots, self.values
        mask = len(slots) - 1
        i = ((value * _GOLDEN) & _MASK64) >> self._shift
        while True:
            s = slots[i]
            if s < 0:
                return None
            if values[s] == value:
                return s
            i = (i + 1) & mask

    def add(self, value: int) -> int:
        """The value's serial, given the next one if it has none yet."""
        got = self.get(value)
        if got is not None:
            return got
        if 5 * (len(self.values) + 1) > 3 * len(self._slots):
            self._grow()
        got = len(self.values)
        self.values.append(value)
        self._place(got)
        return got

    def _place(self, serial: int) -> None:
        slots = self._slots
        mask = len(slots) - 1
        i = ((self.values[serial] * _GOLDEN) & _MASK64) >> self._shift
        while slots[i] >= 0:
            i = (i + 1) & mask
        slots[i] = serial

    def _grow(self) -> None:
        self._slots = array("i", [-1]) * (2 * len(self._slots))
        self._shift -= 1
        for serial in range(len(self.values)):
            self._place(serial)

    def nbytes(self) -> int:
        return self._slots.itemsize * len(self._slots) + self.values.itemsize * len(self.values)


class IdSet:
    """A set of ids as a Python ``set`` holds them (``1``, ``1.0`` and ``True`` are one id), the ints of
    0..2^64-1 (a run's operation ids) in an :class:`IdTable` (~12-21 bytes each, where a set of ints takes
    ~75: at 10^5 sessions ~800,000 operations, 58 MB), any other id in a ``set``."""

    __slots__ = ("_ints", "_rest")

    def __init__(self) -> None:
        self._ints = IdTable()
        self._rest: set[Any] = set()

    @staticmethod
    def _key(x: Any) -> Any:
        if isinstance(x, bool) or (isinstance(x, float) and x.is_integer()):
            return int(x)  # equal to that int, as in a set
        return x

    def add(self, x: Any) -> bool:
        """Add ``x``; whether it was not in the set before (TypeError for an unhashable one, as a set)."""
        k = self._key(x)
        if type(k) is int and 0 <= k <= _MASK64:
            n = len(self._ints)
            self._ints.add(k)
            return len(self._ints) > n
        if k in self._rest:
            return False
        self._rest.add(k)
        return True

    def __contains__(self, x: Any) -> bool:
        k = self._key(x)
        if type(k) is int and 0 <= k <= _MASK64:
            return self._ints.get(k) is not None
        return k in self._rest

    def __len__(self) -> int:
        return len(self._ints) + len(self._rest)

    def nbytes(self) -> int:
        import sys

        return self._ints.nbytes() + sys.getsizeof(self._rest) + sum(sys.getsizeof(x) for x in self._rest)


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
        order = _order(self.keys)
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


# no caller: a code no string gets. Short hex codes carry their length (1-15) in the top 4 bits, so every value
# with a non-zero top nibble is some string's (2**64 - 1 is 15 f's); with a zero nibble an odd code is a 16-digit
# id's table serial (2 x serial + 1), and no table holds 2**59 ids
_NO = (1 << 60) - 1
_Done = tuple[int, float | None, float | None, int]  # chat_done lines, the last's status, total_ms, request id


def _order(keys: array[int]) -> array[int]:
    """The positions of ``keys`` in stable sorted order, sorted as one packed int each (no tuple or
    key list per row: a sort of 10^6 rows by ``key=`` holds about 80 MB at once)."""
    packed = [(k << 32) | i for i, k in enumerate(keys)]
    packed.sort()
    return array("Q", (x & 0xFFFFFFFF for x in packed))


class _Summary:
    """Per code (added in sorted order): how many chat_done lines, and the last's status, total_ms and
    server request id."""

    def __init__(self) -> None:
        self.keys, self.n, self.req = array("Q"), array("l"), array("Q")
        self.status, self.total = array("d"), array("d")
        self.has = bytearray()

    def add(self, key: int, n: int, status: float | None, total: float | None, req: int) -> None:
        self.keys.append(key)
        self.n.append(n)
        self.status.append(0.0 if status is None else status)
        self.total.append(0.0 if total is None else total)
        self.has.append((status is not None) | (total is not None) << 1)
        self.req.append(req)

    def find(self, key: int | None) -> _Done | None:
        if key is None:
            return None
        i = bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            return None
        h = self.has[i]
        return self.n[i], self.status[i] if h & 1 else None, self.total[i] if h & 2 else None, self.req[i]

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.keys, self.n, self.status, self.total, self.req)) + len(self.has)


class _ChatLines:
    """The chat_start / chat_done lines that carry a server request id, as columns, until :meth:`seal`."""

    def __init__(self) -> None:
        self.code, self.session, self.pos, self.caller = array("Q"), array("Q"), array("q"), array("Q")
        self.status, self.total = array("d"), array("d")
        self.flags = bytearray()  # 1 names a session, 2 chat_done, 4 a truthy caller, 8 status, 16 total_ms

    def add(self, index: LogIndex, pos: int, ln: dict[str, Any], done: bool, caller: Any) -> None:
        sid = ln.get("session_id")
        status, total = (_num(ln.get("status")), _num(ln.get("total_ms"))) if done else (None, None)
        self.code.append(index.intern(str(ln["req_id"])))
        self.session.append(0 if sid is None else _hash64(str(sid)))
        self.pos.append(pos)
        self.caller.append(_NO if caller is None else index.intern(str(caller)))
        self.status.append(0.0 if status is None else status)
        self.total.append(0.0 if total is None else total)
        flags = (sid is not None) | done << 1 | bool(caller) << 2 | (status is not None) << 3 | (total is not None) << 4
        self.flags.append(flags)

    def seal(self) -> tuple[set[int], set[int], dict[int, int], _Summary, _Summary]:
        """log_consistency's grouping of these lines over the whole log (``logs._split_by_session``, the caller
        filled in from the request's chat_start, ``by_caller`` in its order): the split request ids, the mixed
        ones, the first chat_done of each split one, and the chat_done summaries by request id and by caller."""
        codes, flags = self.code, self.flags
        order = _order(codes)  # by request id, file order within one
        split: set[int] = set()
        mixed: set[int] = set()
        first_done: dict[int, int] = {}
        by_req = _Summary()
        # by_caller's rows: the caller, the chat_done line, and its place (first chat_done of its id, of its request)
        c_code, c_row, c_rid_first, c_key_first = array("Q"), array("q"), array("q"), array("q")

        def status(k: int) -> float | None:
            return self.status[k] if flags[k] & 8 else None

        def total(k: int) -> float | None:
            return self.total[k] if flags[k] & 16 else None

        i = 0
        while i < len(order):
            code = codes[order[i]]
            j = i
            while j < len(order) and codes[order[j]] == code:
                j += 1
            group = order[i:j]
            named = {self.session[k] for k in group if flags[k] & 1}
            anon = any(not flags[k] & 1 for k in group)
            is_split = len(named) > 1
            if is_split:
                split.add(code)
            elif named and anon:
                mixed.add(code)

            def key(k: int, is_split: bool = is_split) -> int:
                return self.session[k] if is_split and flags[k] & 1 else -1

            callers: dict[int, int] = {}  # each request's caller: its first chat_start's that names a truthy one
            first_of: dict[int, int] = {}  # each request's first chat_done
            dones = [k for k in group if flags[k] & 2]
            for k in group:
                if not flags[k] & 2 and flags[k] & 4:
                    callers.setdefault(key(k), self.caller[k])
            for k in dones:
                first_of.setdefault(key(k), self.pos[k])
            if dones:
                rid_first = self.pos[dones[0]]
                if is_split:
                    first_done[code] = rid_first
                else:
                    last = dones[-1]
                    by_req.add(code, len(dones), status(last), total(last), code)
                for k in dones:
                    c = self.caller[k] if flags[k] & 4 else callers.get(key(k), self.caller[k])
                    if c != _NO:
                        c_code.append(c)
                        c_row.append(k)
                        c_rid_first.append(rid_first)
                        c_key_first.append(first_of[key(k)])
            i = j
        del order
        by_caller = _Summary()
        order = _order(c_code)  # by caller; the last of each in by_caller's order
        i = 0
        while i < len(order):
            c = c_code[order[i]]
            j = i
            best, at = (-1, -1, -1), -1
            while j < len(order) and c_code[order[j]] == c:
                r = order[j]
                place = (c_rid_first[r], c_key_first[r], self.pos[c_row[r]])
                if place > best:
                    best, at = place, c_row[r]
                j += 1
            by_caller.add(c, j - i, status(at), total(at), codes[at])
            i = j
        return split, mixed, first_done, by_req, by_caller


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
        self._other: dict[str, int] = {}  # strings of any other shape -> code (even: 2 x their place in _names)
        self._names: list[str] = []
        self._hex16 = IdTable()  # 16 lower-case hex digits -> serial (code: 2 x serial + 1)
        self.procs: list[str] = []
        self._proc_ids: dict[str, int] = {}
        self._by_req = _Sorted()
        self._by_caller = _Sorted()
        self._logged = IdSet()  # the codes of every caller request id a line names (no sorted list of them)
        arrivals: dict[str, dict[int, list[float]]] = {}
        # log_consistency's in-flight walk: per process, its chat_start / chat_done / heartbeat lines
        walk: dict[int, tuple[array[float], array[int], bytearray, array[float], bytearray]] = {}
        self._walk_error: Exception | None = None
        # the server request ids of chat lines and the sessions they name (a hash: only told apart within one id)
        cols = _ChatLines()
        self.n_lines = 0
        for pos, ln in enumerate(lines):
            self.n_lines += 1
            ev = ln.get("event")
            if self._walk_error is None:
                try:
                    ts_sort = float(ln.get("ts", 0.0))  # log_consistency's order of one process's lines
                except (TypeError, ValueError) as exc:
                    self._walk_error = exc
                else:
                    if ev in _WALKED:
                        w = walk.get(proc := self._proc(ln))
                        if w is None:
                            w = walk[proc] = (array("d"), array("q"), bytearray(), array("d"), bytearray())
                        v = _num(ln.get("inflight" if ev == "heartbeat" else "inflight_now"))
                        w[0].append(ts_sort)
                        w[1].append(pos)
                        w[2].append(_WALKED[ev])
                        w[3].append(0.0 if v is None else v)
                        w[4].append(v is not None)
            caller = ln.get("caller_request_id")
            if ev in ("chat_start", "chat_done") and ln.get("req_id") is not None:
                cols.add(self, pos, ln, ev == "chat_done", caller)
            if caller is not None:
                self._logged.add(self.intern(str(caller)))
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
        self._arrivals = {
            port: {proc: array("d", sorted(ts)) for proc, ts in per.items()} for port, per in arrivals.items()
        }
        self._inflight = {self.procs[proc]: _walk(*w) for proc, w in walk.items()}
        del walk
        self._split, self._mixed, self._first_done, self._done_by_req, self._done_by_caller = cols.seal()
        del cols

    @classmethod
    def of(cls, lines: Iterable[dict[str, Any]]) -> LogIndex:
        return cls(lines)

    # --- codes --------------------------------------------------------------------------------

    def code(self, s: str) -> int | None:
        """The string's code (None: a string of another shape that this index has never coded)."""
        if _HEX.fullmatch(s):
            return int(s, 16) | (len(s) << 60)
        if _HEX16.fullmatch(s):
            got = self._hex16.get(int(s, 16))
            return None if got is None else 2 * got + 1
        return self._other.get(s)

    def intern(self, s: str) -> int:
        """The string's code, given one if it has none yet (another shape than short lower-case hex)."""
        if _HEX.fullmatch(s):
            return int(s, 16) | (len(s) << 60)
        if _HEX16.fullmatch(s):
            return 2 * self._hex16.add(int(s, 16)) + 1
        got = self._other.get(s)
        if got is None:
            got = self._other[s] = 2 * len(self._names)
            self._names.append(s)
        return got

    def name(self, code: int) -> str:
        """The string a code stands for."""
        n = code >> 60
        if n:
            return format(code & ((1 << 60) - 1), f"0{n}x")
        return format(self._hex16.values[code >> 1], "016x") if code & 1 else str(self._names[code >> 1])

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
        return k in self._logged

    def arrivals(self, port: Any) -> Iterator[tuple[str, array[float]]]:
        """(process key, sorted ts of its chat_start lines naming their caller) for ``str(port)``."""
        for proc, ts in self._arrivals.get(str(port), {}).items():
            yield self.procs[proc], ts

    def split(self, req_id: str) -> bool:
        """The ``chat_start`` / ``chat_done`` lines of this server request id name two or more sessions."""
        return self.code(req_id) in self._split

    def mixed(self, req_id: str) -> bool:
        """Some chat line of this server request id names no session and some other line names one."""
        return self.code(req_id) in self._mixed

    def first_done(self, req_id: str) -> int:
        """The position of the first ``chat_done`` of a :meth:`split` request id (-1 if none)."""
        code = self.code(req_id)
        return -1 if code is None else self._first_done.get(code, -1)

    def done_by_req(self, req_id: str) -> _Done | None:
        """The chat_done lines of a request id that is not :meth:`split` (all its request's lines)."""
        return self._done_by_req.find(self.code(req_id))

    def done_by_caller(self, caller: str) -> _Done | None:
        """The chat_done lines log_consistency joins to this caller request id (its own, or its request's
        chat_start's), the last in its order: by request id's first chat_done, the request, the line."""
        return self._done_by_caller.find(self.code(caller))

    def inflight(self) -> dict[str, _Walked]:
        """Per process (``worker_port/pid``): its heartbeats that disagree with the chats in flight
        (``inflight``, in flight), and the first line whose ``inflight_now`` drifts above the lowest excess
        (its position, the drift), as log_consistency walks every session's lines in ``ts`` order."""
        if self._walk_error is not None:
            raise self._walk_error
        return self._inflight

    def nbytes(self) -> int:
        """The index's memory, in bytes: its columns, the 16-digit ids' :class:`IdTable` and the code table of
        the strings of any other shape (one str, a dict entry and an int code each)."""
        import sys

        n = self._by_req.nbytes() + self._by_caller.nbytes() + self._logged.nbytes()
        n += self._done_by_req.nbytes() + self._done_by_caller.nbytes()
        n += sum(a.itemsize * len(a) for per in self._arrivals.values() for a in per.values())
        n += self._hex16.nbytes() + sys.getsizeof(self._other) + sys.getsizeof(self._names)
        n += sum(sys.getsizeof(name) for name in self._names)
        return n + sum(sys.getsizeof(code) for code in self._other.values() if code > 256)  # small ints are shared


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
        add_bound(pairs, lo, hi, key, ts, o)
    return {key: (n, lo.get(key), hi.get(key)) for key, n in pairs.items()}
