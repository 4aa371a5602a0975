"""The server's log clock mapped onto the client's (history) clock, from the run's own chat requests.

Server log lines carry the server's wall time (``ts``); the history carries the
client's times (invoke: before the request was sent; completion: after the
answer was read). They are different clocks with an unknown offset
``off = server_time - client_time``. Every chat request whose ``chat_start``
and ``chat_done`` lines are joined to its history operation bounds it:

- the request reached the server after the client sent it:
  ``start_s >= invoke_c + off``, so ``off <= start_s - invoke_c``;
- the server started it before the client read the answer:
  ``start_s <= complete_c + off``, so ``off >= start_s - complete_c``.
  (``chat_done`` would give a tighter one, ``done_s - complete_c``, but only
  for a server that writes it before it sends the answer, which CONTEXT.md
  does not promise: a server that logs after sending, or is descheduled in
  between on a starved box, would push the bound too high and map every line
  too early.)

Over all joined requests of one server process ``off`` lies in
``[max(start_s - complete_c), min(start_s - invoke_c)]``; a line's ``ts`` then
maps to the client-clock interval ``[ts - hi, ts - lo]``. The bounds hold
however starved the client or the server was (starvation only widens them).
They are per server process (``worker_port/pid``: a restarted process is a
new one). No joined request, or bounds that contradict each other (clocks not
comparable, e.g. a server logging another time zone, or a wrong join), give
no mapping: a checker must then not use one (None).

Used by liveness (a timed-out DELETE the server provably finished before the
client gave up is not a deadlock) and open to any checker that must place a
server event on the client's timeline.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

from harness.checkers.ops import Op, log_events, process_key
from harness.rundata import RunData

__all__ = ["CLOCK_SLACK_S", "Bounds", "ClientClock", "Offset", "clock_bounds"]

# log times may be printed to the millisecond (a text log's asctime), and a wall clock that NTP slews
# drifts at most 500 ppm (10 ms over a 20 s run): every mapped interval is widened by this much
CLOCK_SLACK_S = 0.01


def _ts(line: dict[str, Any]) -> float | None:
    v = line.get("ts")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class Offset:
    """``server_time - client_time`` of one server process lies in ``[lo, hi]`` (from ``pairs`` requests)."""

    lo: float
    hi: float
    pairs: int

    @property
    def width(self) -> float:
        return self.hi - self.lo


Bounds = dict[str, tuple[int, float | None, float | None]]  # process -> (joined requests, lo, hi) of some chats


def clock_bounds(
    run: RunData, ops: Iterable[Op], mine: Callable[[Any], bool] = lambda s: True, shared: Container[str] = ()
) -> Bounds:
    """The offset bounds the chats of ``ops`` whose session is ``mine`` give, per server process.

    ``shared``: request ids that other chats, not in ``ops``, carry too (those are skipped, as two chats
    of one id are). Bounds of disjoint sets of chats combine by :meth:`ClientClock.from_bounds`."""
    chats = [o for o in ops if o.f == "chat"]
    rids = Counter(o.request_id for o in chats if o.request_id is not None)
    starts_by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
    starts_by_caller: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in log_events(run, "chat_start"):
        if ln.get("req_id") is not None:
            starts_by_req[str(ln["req_id"])].append(ln)
        if ln.get("caller_request_id") is not None:
            starts_by_caller[str(ln["caller_request_id"])].append(ln)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    pairs: Counter[str] = Counter()
    for o in chats:
        if not mine(o.session):
            continue
        if o.request_id is not None and (rids[o.request_id] > 1 or o.request_id in shared):
            continue  # two operations share the id: which line is whose cannot be told
        if o.req_id is not None and o.req_id in starts_by_req:
            starts = starts_by_req[o.req_id]
        else:
            starts = starts_by_caller.get(o.request_id or "", [])
        # chat_start only: CONTEXT.md does not say chat_done is written before the answer is sent (a
        # server may log it after, or be descheduled between the two on a starved box)
        if len(starts) != 1:
            continue  # none, or a request the server saw twice (a retry on another connection)
        ts = _ts(starts[0])
        if ts is None:
            continue
        add_bound(pairs, lo, hi, process_key(starts[0]), ts, o)
    return {key: (n, lo.get(key), hi.get(key)) for key, n in pairs.items()}


def add_bound(pairs: Counter[str], lo: dict[str, float], hi: dict[str, float], key: str, ts: float, o: Op) -> None:
    """One chat joined to its ``chat_start`` at server time ``ts`` on process ``key``: the offset bounds it gives."""
    pairs[key] += 1
    hi[key] = min(hi.get(key, ts - o.start), ts - o.start)  # it arrived after the client sent it
    answered = o.type in ("ok", "fail") and o.status is not None and o.seen_end is not None
    if answered and o.seen_end is not None:  # and it started before the client had the answer
        lo[key] = max(lo.get(key, ts - o.seen_end), ts - o.seen_end)


class ClientClock:
    """Per server process, the offset bounds of its log clock against the history's clock."""

    def __init__(self, run: RunData | None, ops: Iterable[Op] = ()) -> None:
        self._off: dict[str, Offset] = {}
        self._why: dict[str, str] = {}
        if run is not None:
            self._set(clock_bounds(run, ops))

    @classmethod
    def from_bounds(cls, parts: Iterable[Bounds]) -> ClientClock:
        """The clock of the chats of several :func:`clock_bounds` (disjoint sets of chats)."""
        pairs: Counter[str] = Counter()
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        for b in parts:
            for key, (n, l_, h) in b.items():
                pairs[key] += n
                if l_ is not None:
                    lo[key] = max(lo.get(key, l_), l_)
                if h is not None:
                    hi[key] = min(hi.get(key, h), h)
        clock = cls(None)
        clock._set({key: (n, lo.get(key), hi.get(key)) for key, n in pairs.items()})
        return clock

    def _set(self, bounds: Bounds) -> None:
        for key, (_, lo, hi) in bounds.items():
            if lo is None or hi is None:
                self._why[key] = "its chat lines bound the clock offset on one side only"
            elif lo > hi + CLOCK_SLACK_S:
                self._why[key] = (
                    f"its chat lines give contradicting clock offsets ({lo:.3f} > {hi:.3f}): "
                    "the server's log clock cannot be compared with the client's"
                )
            else:
                self._off[key] = Offset(lo, hi, bounds[key][0])

    def offset(self, key: str) -> Offset | None:
        """The bounds of process ``key`` (``worker_port/pid``), None when there are none or they contradict."""
        return self._off.get(key)

    def why_not(self, key: str) -> str:
        return self._why.get(key, "no chat request of it joined to the history (no chat_start / chat_done)")

    def span(self, line: dict[str, Any]) -> tuple[float, float] | None:
        """The client-clock interval the log line was written in (slack included); None: cannot be placed."""
        ts = _ts(line)
        off = self._off.get(process_key(line))
        if ts is None or off is None:
            return None
        return ts - off.hi - CLOCK_SLACK_S, ts - off.lo + CLOCK_SLACK_S
