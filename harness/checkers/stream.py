"""The per-session check pass: a run folder's data grouped by session on disk, checked a group at a time.

A checker that sees the whole run at once (:meth:`Checker.check` over a loaded
:class:`~harness.rundata.RunData`) needs memory in proportion to the run's
length. This pass reads the run folder once, as a stream, and spills every
record to an SQLite file under the folder's own temp area (``.harness-tmp/``,
created and removed by the pass; nothing else there is touched), keyed by the
session it belongs to: history events (an invoke and its completion go where
the operation's session is), server log lines (``session_id``), backend
executions (routing key) and final states. Sessions are hashed into groups of
a bounded size; each group becomes a small ``RunData`` (:class:`Part`) holding
whole sessions, plus the few records that belong to no session (chaos and
fault events, session-less log lines), plus the run's scenario and owners.

A :class:`SessionChecker` has a ``part`` step (one group's partial result:
its violations with their places in the run's order, counts, the few keys the
reduce needs) and a ``reduce`` step (partial results -> the verdict the
whole-run ``check`` gives, byte for byte). Checkers without those steps run on
the whole run as before (:func:`check_streaming` loads it for them, and says
which did). ``tests/unit/test_checkers_stream.py`` runs both paths over
recorded simulation runs and compares the verdicts exactly.

A history the grouping cannot reproduce exactly (operation ids reused or
missing, a completion before its invoke, indices out of order) is checked on
the whole run: :class:`NotStreamable`.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import sqlite3
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.checkers import spill_area
from harness.checkers.base import CHECKERS, Checker, Verdict, Violation, run_checker
from harness.checkers.continuity import BACKEND_PROBE, execution_log_gap
from harness.checkers.ops import Op, is_passthrough, pair_ops
from harness.checkers.stream_index import IdSet, LogIndex
from harness.checkers.stream_joins import JoinEvidence
from harness.rundata import CUT_REASON, RUN_FILES, History, RunData

__all__ = [
    "GROUP_BYTES",
    "NotStreamable",
    "Part",
    "SessionChecker",
    "Spill",
    "check_streaming",
    "check_whole",
    "joins_whole",
    "merge_violations",
    "passthrough_whole",
    "shared_whole",
]

GROUP_BYTES = 8 * 1024 * 1024  # history bytes per group (about): what one Part holds decoded
TMP_DIR = ".harness-tmp"  # the run folder's own temp area (created and removed by the pass)
GLOBAL = -1  # the group of records that belong to no session: part of every Part
RUN_WIDE = ("chaos", "fault", "stats")  # operations every part holds (with the backend and stats probes)
RUN_WIDE_LOGS = ("heartbeat",)  # log lines every part holds: a process's count of all its sessions


class NotStreamable(ValueError):
    """The history has a shape the grouping does not reproduce exactly; check the whole run instead."""


@dataclass
class Part:
    """One group of whole sessions as a small run.

    ``run.history`` holds the group's sessions' events plus the run-wide ones (session-less events, every
    chaos and fault operation, the backend and stats probes), in the run's order and with their run-wide
    ``index``; ``run.server_logs`` likewise (session-less lines and every heartbeat are run-wide;
    ``log_pos[i]`` is line i's position in the run's server_logs.jsonl); ``run.backend_executions`` the
    executions of the group's chats (joined by the ``x-request-id`` they carry, as
    :class:`~harness.checkers.ops.Links` joins them) and the rest of the group's routing keys, each
    key's list in its order (``exec_at[key][i]``: the place of item i in the run's list for that key);
    ``run.final_states`` the group's sessions; ``run.owners`` and
    ``run.scenario`` the whole run's. ``sessions`` are the sessions routed here: a run-wide event is in
    every part, so a part judges an operation only if its session is one of ``sessions`` (:meth:`mine`),
    and a session-less one only in the first part (``first``). ``context``: what is known run-wide.
    """

    run: RunData
    sessions: frozenset[str]
    log_pos: list[int]
    first: bool
    context: RunContext
    exec_at: dict[str, list[int]]  # exec_at[key][i]: run.backend_executions[key][i]'s place in the run's list
    group: int
    split: dict[str, tuple[int, int]]  # caller request id carried by chats of several groups -> (first, home)

    chat_ops: Callable[[str], list[int] | None] = field(default=lambda key: None)
    fuzzed: Callable[[str], bool] = field(default=lambda request_id: False)
    # key -> a number that orders the keys of run.backend_executions as the run's file does (keys do not interleave)
    key_order: dict[str, int] = field(default_factory=dict)
    # the run's whole server log as a compact index (harness/checkers/stream_index.py), built on first use
    log_index: Callable[[], LogIndex] = field(default=lambda: LogIndex(()))

    def mine(self, session: Any) -> bool:
        return self.first if session is None else str(session) in self.sessions

    @classmethod
    def whole(cls, run: RunData) -> Part:
        """A loaded run as one part: what a :class:`SessionChecker`'s ``check(run)`` reduces.

        Every session is its own (``first`` too), every record keeps its place (``log_pos`` and ``exec_at``
        are the identity), the context is what :class:`Spill` computes of the run, and the run-wide lookups
        answer from the run's own operations, as :meth:`Spill.chat_ops` and :meth:`Spill.fuzzed` do (built
        on first use: most checkers never ask)."""
        sessions = {str(ev["session"]) for ev in run.history if ev.get("session") is not None}
        sessions |= {str(ln["session_id"]) for ln in run.server_logs if ln.get("session_id") is not None}
        sessions |= {str(k) for table in (run.backend_executions, run.final_states, run.owners) for k in table}
        lookups = _whole_lookups(run)

        def chats() -> dict[str, list[int]]:
            if "chats" not in lookups:
                ops = [o for o in pair_ops(run.history) if o.f == "chat"]
                table = {o.req_id: o.indices for o in ops if o.req_id}  # the last in operation order wins,
                table.update({f"caller:{o.request_id}": o.indices for o in ops if o.request_id})  # caller: over
                lookups["chats"] = table
            got: dict[str, list[int]] = lookups["chats"]
            return got

        def fuzzed(request_id: str) -> bool:
            if "fuzz" not in lookups:
                lookups["fuzz"] = {o.request_id for o in pair_ops(run.history) if o.f == "fuzz" and o.request_id}
            return request_id in lookups["fuzz"]

        def log_index() -> LogIndex:
            if "index" not in lookups:
                lookups["index"] = LogIndex(run.server_logs)
            got: LogIndex = lookups["index"]
            return got

        context = RunContext(
            scenario=run.scenario,
            owners=run.owners,
            final_states_recorded=bool(run.final_states),
            has_server_logs=bool(run.server_logs),
            has_backend_executions=bool(run.backend_executions),
            execution_log_gap=execution_log_gap(run),
        )
        return cls(
            run,
            frozenset(sessions),
            list(range(len(run.server_logs))),
            True,
            context,
            {k: list(range(len(v))) for k, v in run.backend_executions.items() if isinstance(v, list)},
            0,
            {},  # one part: no request id is carried by chats of several
            lambda key: chats().get(key),
            fuzzed,
            {str(k): n for n, k in enumerate(run.backend_executions)},
            log_index,
        )


# Inside :func:`shared_whole` (one ``check_all``: the checkers of one run, run back to back, nothing edits the run
# between them) the run-wide lookups of :meth:`Part.whole` (the chats and fuzz tables, the LogIndex) are built once
# per run object and shared; outside it each Part.whole builds its own, so a run edited between two checks is
# never judged from a stale index. Keyed by id(run) with the run kept alongside, so an id is never reused.
_WHOLE_LOOKUPS: ContextVar[dict[int, tuple[RunData, dict[str, Any]]] | None] = ContextVar("whole_lookups", default=None)


@contextlib.contextmanager
def shared_whole() -> Iterator[None]:
    """Within the block, every :meth:`Part.whole` of one run object shares its lookups (built on first use)."""
    token = _WHOLE_LOOKUPS.set({})
    try:
        yield
    finally:
        _WHOLE_LOOKUPS.reset(token)


def _whole_lookups(run: RunData) -> dict[str, Any]:
    shared = _WHOLE_LOOKUPS.get()
    if shared is None:
        return {}
    got = shared.get(id(run))
    if got is None or got[0] is not run:
        got = shared[id(run)] = (run, {})
    return got[1]


def check_whole(checker: SessionChecker, run: RunData) -> Verdict:
    """A :class:`SessionChecker`'s whole-run verdict: its reduce over the one part that is the whole run."""
    part = Part.whole(run)
    return checker.reduce([checker.part(part)], part.context)


@runtime_checkable
class SessionChecker(Checker, Protocol):
    """A checker with a per-session pass: ``reduce([part(p) for p in parts], context)`` == ``check(run)``.

    Its rules are written once, in ``part`` and ``reduce``: ``check(run)`` is :func:`check_whole`, the
    reduce over the one part that is the whole run (:meth:`Part.whole`)."""

    def part(self, part: Part) -> Any: ...

    def reduce(self, parts: Sequence[Any], context: RunContext) -> Verdict: ...


@dataclass
class RunContext:
    """What the reduce steps may read of the whole run: small, bounded by the run's setup, not its length."""

    scenario: dict[str, Any]
    owners: dict[str, str]
    final_states_recorded: bool  # final_states.json has at least one entry
    has_server_logs: bool
    has_backend_executions: bool
    execution_log_gap: str | None  # harness.checkers.continuity.execution_log_gap of the run
    # the run's token key (ops.find_token_key) as the spill decided it; None: decide it from the part (the whole run)
    token_key: tuple[str | None, str] | None = None
    joins_whole: str = ""  # why a part's record and log joins may not be the whole run's (stream_joins), "" if exact
    # why a pass-through request's backend executions may not all be in its part ("" when they are)
    passthrough_whole: str = ""


Keyed = tuple[tuple[Any, ...], Violation]


def joins_whole(context: RunContext) -> str:
    """A ``whole_when`` for checkers that join records and log lines across a run (stream_joins): why a part's
    joins may not be the whole run's, "" when they are provably the same."""
    return context.joins_whole


def passthrough_whole(context: RunContext) -> str:
    """A ``whole_when`` for checkers that read a pass-through request's backend executions (joined by the
    ``x-request-id`` it forwards): why some may be in another part than the request, "" when none is."""
    return context.passthrough_whole


def merge_violations(parts: Iterable[Iterable[Keyed]]) -> list[Violation]:
    """The parts' (sort key, violation) pairs in the whole run's order (keys are unique per violation)."""
    out = sorted((kv for p in parts for kv in p), key=lambda kv: kv[0])
    return [v for _, v in out]


def _group_of(session: Any, groups: int) -> int:
    if session is None:
        return GLOBAL
    return zlib.crc32(str(session).encode("utf-8", "surrogatepass")) % groups


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """RunData.load's reading of a jsonl file, one dict at a time: blank lines and non-dict lines skipped,
    a torn last line skipped, any other line that is not JSON an error (a corrupt run folder)."""
    if not path.exists():
        return
    torn: int | None = None
    n = 0
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            n += 1
            if torn is not None:
                break
            try:
                obj = json.loads(line)
            except ValueError:
                torn = n
                continue
            if isinstance(obj, dict):
                yield obj
    if torn is not None and (n > torn or n == 1):
        raise ValueError(f"{path}: line {torn} is not JSON (a corrupt run folder)")


def _object_items(path: Path, chunk: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """The members of a JSON object file one at a time (a 10^5-session ``backend_executions.json`` is
    hundreds of MB decoded at once): each value is decoded alone, the file is read in chunks."""
    if not path.exists():
        return
    dec = json.JSONDecoder()
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        buf, at, eof = "", 0, False

        def fill() -> bool:
            nonlocal buf, at, eof
            if eof:
                return False
            more = fh.read(chunk)
            if not more:
                eof = True
                return False
            buf, at = buf[at:] + more, 0
            return True

        def skip_ws() -> str:
            nonlocal at
            while True:
                while at < len(buf) and buf[at] in " \t\r\n":
                    at += 1
                if at < len(buf):
                    return buf[at]
                if not fill():
                    return ""

        def value() -> Any:
            nonlocal at
            while True:
                try:
                    v, end = dec.raw_decode(buf, at)
                except ValueError:
                    if fill():
                        continue
                    raise ValueError(f"{path}: not a JSON object (a corrupt run folder)") from None
                if end == len(buf) and not eof and isinstance(v, int | float):  # a number may go on
                    fill()
                    continue
                at = end
                return v

        c = skip_ws()
        if c != "{":
            whole = json.loads(buf[at:] + fh.read()) if c else None  # not an object: RunData.load's reading
            if isinstance(whole, dict):
                yield from whole.items()
            return
        at += 1
        if skip_ws() == "}":
            return
        while True:
            skip_ws()
            key = value()
            if skip_ws() != ":":
                raise ValueError(f"{path}: not a JSON object (a corrupt run folder)")
            at += 1
            skip_ws()
            yield str(key), value()
            c = skip_ws()
            at += 1
            if c == "}":
                return
            if c != ",":
                raise ValueError(f"{path}: not a JSON object (a corrupt run folder)")


class Spill:
    """A run folder's records grouped by session in an SQLite file under the folder's temp area.

    ``with Spill(run_dir) as sp: for part in sp.parts(): ...``. The file and the directory holding it
    are this object's own (``.harness-tmp/`` is created only if absent, marked, and removed only if a pass
    created it and nothing but its mark is left); where the folder is not writable the system temp dir is used.
    SIGTERM and SIGINT remove it before the process dies, and a directory a SIGKILLed pass left is removed by the next
    (harness/checkers/spill_area.py). While filling, :class:`~harness.checkers.stream_joins.JoinEvidence`
    gathers what the record/log-joining checkers need run-wide (``RunContext.token_key``, ``joins_whole``).
    """

    def __init__(self, run_dir: Path, *, groups: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        hist = self.run_dir / RUN_FILES["history"]
        size = hist.stat().st_size if hist.exists() else 0
        self.groups = groups if groups is not None else max(1, -(-size // GROUP_BYTES))
        try:
            self.dir = spill_area.spill_dir(self.run_dir / TMP_DIR)
        except OSError:
            self.dir = spill_area.make_dir(Path(tempfile.gettempdir()))
        self._closed = False
        self.db = sqlite3.connect(self.dir / "run.sqlite", isolation_level=None)
        # SIGTERM / SIGINT: the files go with the process (after the connection exists: close() closes it; a
        # signal before this line leaves the directory to the next pass, as a SIGKILL does)
        spill_area.guard(id(self), self.close)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000;"
            "CREATE TABLE events (pos INTEGER PRIMARY KEY, grp INTEGER, line TEXT);"
            "CREATE TABLE logs (pos INTEGER PRIMARY KEY, grp INTEGER, line TEXT);"
            "CREATE TABLE execs (pos INTEGER PRIMARY KEY, grp INTEGER, key TEXT, at INTEGER, value TEXT);"
            "CREATE TABLE finals (pos INTEGER PRIMARY KEY, grp INTEGER, sid TEXT, value TEXT);"
            "CREATE TABLE chats (key TEXT, kind INTEGER, inv INTEGER, ops TEXT, session TEXT, grp INTEGER);"
        )
        self.global_events: list[tuple[int, dict[str, Any]]] = []
        self.global_logs: list[tuple[int, dict[str, Any]]] = []
        self.sessions: dict[int, set[str]] = {}
        self.context: RunContext | None = None
        self._log_index: LogIndex | None = None
        self._passthrough_far: set[str] = set()  # pass-through request ids executed outside the request's group
        try:
            self._fill()
        except (TypeError, KeyError, AttributeError) as exc:
            # valid JSON of the wrong shape (a null time, a list where an op id goes): the whole-run path
            # gives each checker's own verdict of such a run (a crash verdict, named), not a traceback here
            self.close()
            raise NotStreamable(f"a record of an unexpected shape ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            self.close()
            raise

    # --- writing ------------------------------------------------------------------------------

    def _put(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            marks = ",".join("?" * len(rows[0]))
            self.db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            rows.clear()

    def _fill(self) -> None:
        d = self.run_dir

        def js(name: str, default: Any) -> Any:
            p = d / RUN_FILES[name]
            return json.loads(p.read_text()) if p.exists() else default

        scenario, owners, harness = js("scenario", {}), js("owners", {}), js("harness", {})
        self.scenario, self.owners, self.harness = scenario, owners, harness
        for sid in owners if isinstance(owners, dict) else ():  # a session only owners.json names is one too
            self.sessions.setdefault(_group_of(sid, self.groups), set()).add(str(sid))
        self.joins = JoinEvidence(self.db, scenario if isinstance(scenario, dict) else {})
        self.db.execute("BEGIN")
        self._history()
        rows: list[tuple[Any, ...]] = []
        n_logs = 0
        for pos, ln in enumerate(_jsonl(d / RUN_FILES["server_logs"])):
            n_logs += 1
            sid = ln.get("session_id")
            g = GLOBAL if ln.get("event") in RUN_WIDE_LOGS else _group_of(sid, self.groups)
            if g == GLOBAL:
                self.global_logs.append((pos, ln))
            else:
                self.sessions.setdefault(g, set()).add(str(sid))
                rows.append((pos, g, json.dumps(ln)))
            self.joins.log_line(ln, g)
            if len(rows) >= 10_000:
                self._put("logs", rows)
        self._put("logs", rows)
        self.db.execute("CREATE INDEX ch_k ON chats (key, kind, inv)")
        # a caller request id that chats of several groups carry (ids collide: 32 random bits, ~10^5 chats):
        # run-wide it is one entry (its first place, its last chat), so a part must know whether it is home
        self.split: dict[str, tuple[int, int]] = {}
        for key, first in self.db.execute(
            "SELECT key, MIN(inv) FROM chats WHERE kind = 1 GROUP BY key HAVING COUNT(DISTINCT grp) > 1"
        ).fetchall():
            (home,) = self.db.execute(
                "SELECT grp FROM chats WHERE key = ? AND kind = 1 ORDER BY inv DESC LIMIT 1", (key,)
            ).fetchone()
            self.split[str(key)[len("caller:") :]] = (int(first), int(home))
        n_exec = 0
        pos = 0
        for key, value in _object_items(d / RUN_FILES["backend_executions"]):
            n_exec += 1
            g = _group_of(key, self.groups)
            self.sessions.setdefault(g, set()).add(key)
            if not isinstance(value, list) or not value:  # kept as it is, in its key's group
                rows.append((pos, g, key, -1, json.dumps(value)))
                pos += 1
                continue
            for i, ex in enumerate(value):
                # with the chat whose x-request-id it carries (Links joins them by it, run-wide), else with the
                # pass-through request that forwarded it (no_unexpected_5xx joins them by it), else its key's: an
                # execution under no routing key (the fake's "-") belongs to no session of its own
                rid = ex.get("request_id") if isinstance(ex, dict) else None
                home = self._chat_session(f"caller:{rid}") if rid is not None else None
                grp = g if home is None else _group_of(home, self.groups)
                if rid is not None:
                    grp = self._passthrough_home(str(rid), grp, home is None)
                rows.append((pos, grp, key, i, json.dumps(ex)))
                self.joins.execution(ex, rows[-1][1])
                pos += 1
            if len(rows) >= 1_000:
                self._put("execs", rows)
        self._put("execs", rows)
        n_final = 0
        for pos, (sid, value) in enumerate(_object_items(d / RUN_FILES["final_states"])):
            n_final += 1
            g = _group_of(sid, self.groups)
            self.sessions.setdefault(g, set()).add(sid)
            rows.append((pos, g, sid, json.dumps(value)))
            self.joins.final(sid, value, g)
            if len(rows) >= 1_000:
                self._put("finals", rows)
        self._put("finals", rows)
        joins_whole, token_key = self.joins.finish(self.split)
        del self.joins  # its per-session state (first DELETEs, final snapshots) is not needed by the parts
        far = sorted(self._passthrough_far)[:3]
        passthrough_whole = (
            f"pass-through request id(s) {far} executed by the backend in another session group" if far else ""
        )
        self.db.execute("COMMIT")
        self.db.executescript(
            "CREATE INDEX ev_g ON events (grp, pos); CREATE INDEX lg_g ON logs (grp, pos);"
            "CREATE INDEX ex_g ON execs (grp, pos); CREATE INDEX fs_g ON finals (grp, pos);"
        )
        self.context = RunContext(
            scenario=scenario,
            owners=owners,
            final_states_recorded=n_final > 0,
            has_server_logs=n_logs > 0,
            has_backend_executions=n_exec > 0,
            execution_log_gap=execution_log_gap(RunData(scenario, [ev for _, ev in self.global_events])),
            token_key=token_key,
            joins_whole=joins_whole,
            passthrough_whole=passthrough_whole,
        )

    def _history(self) -> None:
        """History events to their operation's group, as ``pair_ops`` pairs them and ``close_cut_history``
        closes them; an invoke waits (in memory: the operations in flight) until its completion says
        where the operation goes (a ``create``'s session is in its completion)."""
        rows: list[tuple[Any, ...]] = []
        joins: list[tuple[Any, ...]] = []
        open_ops: dict[Any, tuple[int, dict[str, Any]]] = {}
        seen_ops = IdSet()  # operation ids ever invoked (a reused id is NotStreamable); compact for int ids
        end = 0.0
        last_index = -1
        pos = -1

        def join(inv: dict[str, Any], done: dict[str, Any], g: int) -> None:
            """A chat operation's run-wide keys (``x-req-id``, ``caller:`` + request id), for :meth:`chat_ops`;
            a fuzz operation's request id (``fuzz:``), for :meth:`Part.fuzzed`."""
            f = str(inv.get("f"))
            if f not in ("chat", "fuzz") and "path" not in inv:
                return
            o = Op(op=inv.get("op"), f=f, invoke_index=inv["index"], invoke=inv)
            o.completion, o.completion_index = done, done["index"]
            if f not in ("chat", "fuzz"):
                if o.request_id and is_passthrough(o):  # where its backend executions go (_passthrough_home)
                    joins.append((f"pass:{o.request_id}", 3, o.invoke_index, "[]", o.session, g))
                return
            at, sid = json.dumps(o.indices), o.session
            if f == "chat":
                self.joins.chat(o.request_id, o.req_id)
            if f == "fuzz":
                if o.request_id:
                    joins.append((f"fuzz:{o.request_id}", 2, o.invoke_index, at, sid, g))
            else:
                if o.req_id:
                    joins.append((o.req_id, 0, o.invoke_index, at, sid, g))
                if o.request_id:
                    joins.append((f"caller:{o.request_id}", 1, o.invoke_index, at, sid, g))
            if len(joins) >= 10_000:
                self._put("chats", joins)

        def emit(items: list[tuple[int, dict[str, Any]]], session: Any) -> int:
            inv = items[0][1]
            f = inv.get("f")
            run_wide = f in RUN_WIDE or (f == "probe" and inv.get("value") in (BACKEND_PROBE, "stats"))
            g = GLOBAL if run_wide else _group_of(session, self.groups)
            for p, ev in items:
                if g == GLOBAL:
                    self.global_events.append((p, ev))
                else:
                    rows.append((p, g, json.dumps(ev)))
            if g != GLOBAL:
                self.sessions.setdefault(g, set()).add(str(session))
            return g

        def index(ev: dict[str, Any], p: int) -> None:
            nonlocal last_index
            i = ev.get("index")
            if not isinstance(i, int):
                ev["index"] = i = p
            if i <= last_index:
                raise NotStreamable(f"history index {i} at line {p + 1} is not after {last_index}")
            last_index = i

        for pos, ev in enumerate(_jsonl(self.run_dir / RUN_FILES["history"])):
            end = max(end, float(ev.get("time", 0.0)))
            index(ev, pos)
            op = ev.get("op")
            typ = ev.get("type")
            if op is None:
                raise NotStreamable(f"history line {pos + 1} has no operation id")
            if typ == "invoke":
                if not seen_ops.add(op):
                    raise NotStreamable(f"operation id {op!r} invoked twice")
                open_ops[op] = (pos, ev)
            elif typ in ("ok", "fail", "info"):
                inv = open_ops.pop(op, None)
                if inv is None:
                    raise NotStreamable(f"completion of operation {op!r} without an invoke before it")
                g = emit([inv, (pos, ev)], ev["session"] if "session" in ev else inv[1].get("session"))
                join(inv[1], ev, g)
                self.joins.operation(inv[1], ev, g)
            else:  # close_cut_history counts it as a completion, pair_ops does not
                raise NotStreamable(f"history line {pos + 1} has event type {typ!r}")
            if len(rows) >= 10_000:
                self._put("events", rows)
        n = pos + 1
        for k, (p, invoke) in enumerate(list(open_ops.values())):  # close_cut_history: the cut operations
            cut = {
                key: invoke.get(key)
                for key in ("op", "process", "f", "session", "server", "turn", "attempt", "request_id")
            }
            cut.update(type="info", time=end, intended=invoke.get("intended"), error=CUT_REASON, index=n + k)
            if n + k <= last_index:
                raise NotStreamable("cut operations' indices would not follow the history's")
            g = emit([(p, invoke), (n + k, cut)], invoke.get("session"))
            join(invoke, cut, g)
            self.joins.operation(invoke, cut, g)
        self._put("events", rows)
        self._put("chats", joins)

    # --- reading ------------------------------------------------------------------------------

    def parts(self) -> Iterator[Part]:
        """Every group as a :class:`Part` (at least one, the session-less records alone if nothing else)."""
        assert self.context is not None
        groups = sorted(self.sessions) or [GLOBAL]
        for k, g in enumerate(groups):
            yield self._part(g, first=k == 0)

    def _part(self, g: int, *, first: bool) -> Part:
        q = self.db.execute
        mine = [(p, json.loads(s)) for p, s in q("SELECT pos, line FROM events WHERE grp = ? ORDER BY pos", (g,))]
        history = History(ev for _, ev in heapq.merge(mine, self.global_events, key=lambda pe: pe[0]))
        logs_mine = [(p, json.loads(s)) for p, s in q("SELECT pos, line FROM logs WHERE grp = ? ORDER BY pos", (g,))]
        logs = list(heapq.merge(logs_mine, self.global_logs, key=lambda pe: pe[0]))
        execs: dict[str, Any] = {}
        exec_at: dict[str, list[int]] = {}
        key_order: dict[str, int] = {}
        for p, k, i, v in q("SELECT pos, key, at, value FROM execs WHERE grp = ? ORDER BY pos", (g,)):
            key_order.setdefault(str(k), int(p) - max(int(i), 0))  # the key's first place in the run's file
            if i < 0:
                execs[str(k)] = json.loads(v)
            else:
                execs.setdefault(str(k), []).append(json.loads(v))
                exec_at.setdefault(str(k), []).append(int(i))
        finals = {str(s): json.loads(v) for s, v in q("SELECT sid, value FROM finals WHERE grp = ? ORDER BY pos", (g,))}
        run = RunData(
            scenario=self.scenario,
            history=history,
            final_states=finals,
            owners=self.owners,
            backend_executions=execs,
            server_logs=[ln for _, ln in logs],
            harness=self.harness,
        )
        assert self.context is not None
        return Part(
            run,
            frozenset(self.sessions.get(g, set())),
            [p for p, _ in logs],
            first,
            self.context,
            exec_at,
            g,
            self.split,
            self.chat_ops,
            self.fuzzed,
            key_order,
            self.log_index,
        )

    def log_index(self) -> LogIndex:
        """The run's server log as a :class:`LogIndex`: one more pass over server_logs.jsonl, on first use."""
        if self._log_index is None:
            self._log_index = LogIndex(_jsonl(self.run_dir / RUN_FILES["server_logs"]))
        return self._log_index

    def fuzzed(self, request_id: str) -> bool:
        """Some fuzz operation of the run carries this request id."""
        key = f"fuzz:{request_id}"
        return self.db.execute("SELECT 1 FROM chats WHERE key = ? AND kind = 2 LIMIT 1", (key,)).fetchone() is not None

    def _chat_session(self, key: str) -> str | None:
        got = self.db.execute(
            "SELECT session FROM chats WHERE key = ? ORDER BY kind DESC, inv DESC LIMIT 1", (key,)
        ).fetchone()
        return None if got is None or got[0] is None else str(got[0])

    def _passthrough_home(self, rid: str, grp: int, free: bool) -> int:
        """The group of an execution carrying ``rid``: ``grp``, or (``free``: no chat carries it) the group of the
        last pass-through request that forwarded it; a pass-through request of another group that carries it too
        is noted (its part would not see the execution: ``passthrough_whole``)."""
        q = self.db.execute("SELECT grp FROM chats WHERE key = ? ORDER BY inv DESC", (f"pass:{rid}",))
        groups = [int(x) for (x,) in q]
        if groups and free:
            grp = groups[0]
        if any(x != grp for x in groups):
            self._passthrough_far.add(rid)
        return grp

    def chat_ops(self, key: str) -> list[int] | None:
        """The history indices of the chat operation ``key`` names in the whole run, as the checkers'
        ``{o.req_id: o ...}`` then ``.update({f"caller:{o.request_id}": o ...})`` table over all chat
        operations would give it (the last in operation order wins; a ``caller:`` entry over a req id)."""
        got = self.db.execute(
            "SELECT ops FROM chats WHERE key = ? ORDER BY kind DESC, inv DESC LIMIT 1", (key,)
        ).fetchone()
        return None if got is None else [int(i) for i in json.loads(got[0])]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        spill_area.unguard(id(self))
        self.db.close()
        spill_area.remove_dir(self.dir)
        spill_area.remove_area(self.run_dir / TMP_DIR)  # only if a pass made it and it is empty now

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StreamResult:
    verdicts: list[Verdict]
    streamed: list[str] = field(default_factory=list)  # checked per session
    whole: list[str] = field(default_factory=list)  # checked on the whole run (no per-session steps, or NotStreamable)
    why_whole: str = ""


def check_streaming(run_dir: Path, names: Iterable[str] | None = None, *, groups: int | None = None) -> StreamResult:
    """``check_all(RunData.load(run_dir), names)``, per session where the checker can (same verdicts).

    Checkers with per-session steps (:class:`SessionChecker`) run over the groups of a :class:`Spill`,
    each group once for all of them; the others run on the whole run, loaded after the groups are done.
    A part step that raises makes that checker's verdict what ``run_checker`` makes of a crash.
    """
    selected = list(CHECKERS) if names is None else list(dict.fromkeys(names))
    bad = [n for n in selected if n not in CHECKERS]
    if bad:
        raise ValueError(f"unknown checker(s) {bad}; allowed: {sorted(CHECKERS)}")
    streaming = [n for n in selected if isinstance(CHECKERS[n], SessionChecker)]
    got: dict[str, Verdict] = {}
    why = ""
    if streaming:
        whys: list[str] = []
        try:
            got = _streamed(Path(run_dir), [CHECKERS[n] for n in streaming], groups, whys)  # type: ignore[misc]
        except NotStreamable as exc:
            why, got = str(exc), {}
        else:
            why = "; ".join(whys)
    rest = [n for n in selected if n not in got]
    if rest:
        run = RunData.load(Path(run_dir))
        for n in rest:
            got[n] = run_checker(CHECKERS[n], run)
        del run
    return StreamResult([got[n] for n in selected], [n for n in selected if n not in rest], rest, why)


def _streamed(run_dir: Path, checkers: list[SessionChecker], groups: int | None, whys: list[str]) -> dict[str, Verdict]:
    """The verdicts of ``checkers`` over the spill's parts; one whose ``whole_when(context)`` gives a reason
    (the part cannot be shown to see what the whole run shows it) is left out, with the reason in ``whys``."""
    crashed: dict[str, Verdict] = {}
    with Spill(run_dir, groups=groups) as sp:
        assert sp.context is not None
        kept: list[SessionChecker] = []
        left: dict[str, list[str]] = {}
        for c in checkers:
            why = getattr(c, "whole_when", lambda ctx: "")(sp.context)
            if why:
                left.setdefault(why, []).append(c.name)
            else:
                kept.append(c)
        whys.extend(f"{', '.join(names)}: {why}" for why, names in left.items())
        checkers = kept
        partial: dict[str, list[Any]] = {c.name: [] for c in checkers}
        parts = sp.parts() if checkers else iter(())
        # one part alive at a time: ``for part in parts`` would hold the last one while the next is decoded
        while (part := next(parts, None)) is not None:
            for c in checkers:
                if c.name in crashed:
                    continue
                v = run_checker(_PartStep(c, part, partial[c.name]), part.run)
                if v.status != "valid":  # the part step raised: the checker's verdict is that crash
                    crashed[c.name] = v
            del part
        ctx = sp.context
    out: dict[str, Verdict] = dict(crashed)
    for c in checkers:
        if c.name not in out:
            out[c.name] = run_checker(_ReduceStep(c, partial[c.name], ctx), RunData(scenario=ctx.scenario, history=[]))
    return out


class _PartStep:
    """A part step as a checker, so a crash in it is reported as ``run_checker`` reports any crash."""

    def __init__(self, checker: SessionChecker, part: Part, into: list[Any]) -> None:
        self.name, self.checker, self.part, self.into = checker.name, checker, part, into

    def check(self, run: RunData) -> Verdict:
        self.into.append(self.checker.part(self.part))
        return Verdict(self.name, "valid")


class _ReduceStep:
    def __init__(self, checker: SessionChecker, parts: list[Any], ctx: RunContext) -> None:
        self.name, self.checker, self.parts, self.ctx = checker.name, checker, parts, ctx

    def check(self, run: RunData) -> Verdict:
        return self.checker.reduce(self.parts, self.ctx)
