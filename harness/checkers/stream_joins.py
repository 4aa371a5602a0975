"""What the per-session pass must know of the whole run for the checkers that join records and log lines.

lost_turns, provisional, token_state and stale_writers join a session's records to the requests that
produced them (:class:`~harness.checkers.ops.Links`: a record's backend rid -> the execution -> the
caller's ``x-request-id`` -> the chat) and a chat to the server's log lines (:class:`ops.ServerOrder`,
``chat_done_by_req`` / ``chat_done_by_caller``: by the server's request id, scoped to a session by
:func:`ops.of_session` when the id names several, and by the caller's request id). They also read the
run's token key (:func:`ops.find_token_key`), decided over every session's snapshot.

:class:`JoinEvidence` is filled by :class:`~harness.checkers.stream.Spill` while it reads the run folder
and answers two things at the end:

- ``why_whole``: why a part's joins might not be the whole run's (then those checkers are checked on the
  whole run), or "" when every join a part makes is provably the one the whole run makes for that part's
  sessions. A join is exact when all it can reach is in the part: a server request id whose lines name
  sessions of several groups is exact only if every chat carrying it has its session among them (then
  :func:`ops.of_session` picks the session's own lines on both paths), and only if no such line is
  session-less; a caller request id must be carried and logged in one group; a record's backend rid must
  be executed in the record's group (or nowhere), and a caller id a record echoes carried in its group.
- ``token_key``: :class:`ops.TokenKeyEvidence` over the snapshot :func:`ops.snapshots` picks for every
  session (the final state of a session without a 204 DELETE, else its last collect ``GET`` before that
  DELETE), decided as ``find_token_key`` decides it on the whole run.

Everything large goes to the spill's SQLite file; in memory: a few flags per metadata key, and per
session its first 204 DELETE and whether it has a final snapshot.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from harness.checkers.ops import TokenKeyEvidence, echoed_rid, max_trim_tokens, protocol, response_rids
from harness.rundata import RunData

__all__ = ["JoinEvidence"]

CHAT_LINES = ("chat_start", "chat_done")
KEEP = 3  # example ids named in why_whole


class JoinEvidence:
    def __init__(self, db: sqlite3.Connection, scenario: dict[str, Any]) -> None:
        self.db = db
        self.run = RunData(scenario=scenario, history=[])
        self.names = protocol(self.run)
        self.trim = max_trim_tokens(self.run)
        self.named_key = bool(self.names.get("token_ids_key"))
        self.why: list[str] = []
        self.deleted: dict[str, tuple[float, int, float]] = {}  # session -> first 204 DELETE (seen end, index, start)
        self.evidence = TokenKeyEvidence()
        self._final: set[str] = set()  # sessions whose snapshot is their final state
        self._lines: list[tuple[Any, ...]] = []
        self._refs: list[tuple[Any, ...]] = []
        self._gets: list[tuple[Any, ...]] = []
        self._erids: list[tuple[Any, ...]] = []
        db.executescript(
            "CREATE TABLE j_lines (key TEXT, kind INTEGER, session TEXT, grp INTEGER);"
            "CREATE TABLE j_erids (rid TEXT, grp INTEGER);"
            "CREATE TABLE j_refs (key TEXT, kind INTEGER, grp INTEGER);"
            "CREATE TABLE j_gets (session TEXT, start REAL, inv INTEGER, ev TEXT);"
        )

    def _put(self, table: str, rows: list[tuple[Any, ...]], at: int = 0) -> None:
        if rows and len(rows) >= at:
            marks = ",".join("?" * len(rows[0]))
            self.db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            rows.clear()

    def _note(self, why: str) -> None:
        if why not in self.why:
            self.why.append(why)

    # --- while filling ------------------------------------------------------------------------

    def chat(self, request_id: str | None, req_id: str | None) -> None:
        if request_id == "" or req_id == "":  # the spill's chat keys skip empty ids, the joins do not
            self._note("a chat carries an empty request id")

    def operation(self, invoke: dict[str, Any], done: dict[str, Any], g: int) -> None:
        """A completed operation of group ``g``: a DELETE's outcome, a collect GET's snapshot (as ``Op`` reads them)."""
        session = invoke.get("session")
        if session is not None and "session" in done and done["session"] != session:
            # the spill groups an operation by its completion's session, Op.session reads the invoke's
            self._note(f"operation {invoke.get('op')!r} names another session in its completion")
        if session is None:
            session = done.get("session")
        f = str(invoke.get("f"))
        if session is None or f not in ("delete", "get"):
            return
        sid = str(session)
        start = float(invoke.get("time", 0.0))
        status = done.get("status")
        try:
            status = None if status is None else int(status)
        except (TypeError, ValueError):
            status = None
        if f == "delete" and status == 204:
            end = float(done.get("time", start))
            prev = self.deleted.get(sid)
            if prev is None or (end, invoke["index"]) < prev[:2]:
                self.deleted[sid] = (end, int(invoke["index"]), start)
        elif f == "get" and str(done.get("type")) == "ok" and status == 200:
            body = done.get("body")
            if isinstance(body, dict):
                self._records(body, g)
                one = TokenKeyEvidence()
                if not self.named_key:
                    one.add_body(body, self.names, self.trim)
                self._gets.append((sid, start, int(invoke["index"]), json.dumps(one.keys)))
                self._put("j_gets", self._gets, 1_000)

    def _records(self, body: dict[str, Any], g: int) -> None:
        recs = body.get("records")
        for rec in recs if isinstance(recs, list) else ():
            if not isinstance(rec, dict):
                continue
            for rid in response_rids(rec):
                self._refs.append((rid, 0, g))
            echo = echoed_rid(rec, self.names.get("request_id_key"))
            if echo is not None:
                self._refs.append((echo, 1, g))
        self._put("j_refs", self._refs, 10_000)

    def log_line(self, ln: dict[str, Any], g: int) -> None:
        if ln.get("event") not in CHAT_LINES:
            return
        sid, req, caller = ln.get("session_id"), ln.get("req_id"), ln.get("caller_request_id")
        if sid is None and (req is not None or caller is not None):
            self._note("a chat_start/chat_done line names no session_id")
            return
        if req is not None:
            self._lines.append((str(req), 0, str(sid), g))
            if str(req) == "":
                self._note("a chat_start/chat_done line carries an empty req_id")
        if caller is not None:
            self._lines.append((f"caller:{caller}", 1, str(sid), g))
            if str(caller) == "":
                self._note("a chat_start/chat_done line carries an empty caller_request_id")
        self._put("j_lines", self._lines, 10_000)

    def execution(self, ex: Any, g: int) -> None:
        if isinstance(ex, dict) and isinstance(ex.get("rid"), str):
            self._erids.append((ex["rid"], g))
            self._put("j_erids", self._erids, 10_000)

    def final(self, sid: str, value: Any, g: int) -> None:
        if not isinstance(value, dict):
            return
        self._records(value, g)
        if sid not in self.deleted:  # snapshots(): the final state of a session never deleted (204)
            if not self.named_key:
                self.evidence.add_body(value, self.names, self.trim)
            else:
                self.evidence.snaps += 1
            self._final.add(sid)

    # --- at the end ---------------------------------------------------------------------------

    def finish(self, split: dict[str, tuple[int, int]]) -> tuple[str, tuple[str | None, str]]:
        """(why the joins of a part may differ from the whole run's, "" if they cannot; the run's token key)."""
        for table, rows in (("j_lines", self._lines), ("j_refs", self._refs), ("j_gets", self._gets)):
            self._put(table, rows)
        self._put("j_erids", self._erids)
        q = self.db.execute
        q("CREATE INDEX j_l ON j_lines (key, kind)")
        q("CREATE INDEX j_e ON j_erids (rid)")
        if split:
            ids = sorted(split)[:KEEP]
            self._note(f"caller request id(s) {ids} carried by chats of several session groups")
        spread = q(
            "SELECT key FROM (SELECT key, grp FROM chats WHERE kind = 0 UNION ALL "
            "SELECT key, grp FROM j_lines WHERE kind = 0) GROUP BY key HAVING COUNT(DISTINCT grp) > 1"
        ).fetchall()
        bad: list[str] = []
        for (key,) in spread:
            logged = {s for (s,) in q("SELECT DISTINCT session FROM j_lines WHERE kind = 0 AND key = ?", (key,))}
            chats = [s for (s,) in q("SELECT session FROM chats WHERE kind = 0 AND key = ?", (key,))]
            if any(s is None or str(s) not in logged for s in chats):
                bad.append(str(key))
        if bad:
            self._note(f"server request id(s) {bad[:KEEP]} of chats in one session group logged for another")
        callers = q(
            "SELECT key FROM (SELECT key, grp, 0 AS line FROM chats WHERE kind = 1 UNION ALL "
            "SELECT key, grp, 1 FROM j_lines WHERE kind = 1) GROUP BY key "
            "HAVING COUNT(DISTINCT grp) > 1 AND SUM(line) > 0 LIMIT ?",
            (KEEP,),
        ).fetchall()
        if callers:
            ids = [str(k)[len("caller:") :] for (k,) in callers]
            self._note(f"caller request id(s) {ids} logged by the server in several session groups")
        far = q(
            "SELECT r.key FROM j_refs r JOIN j_erids e ON e.rid = r.key WHERE r.kind = 0 AND e.grp != r.grp LIMIT ?",
            (KEEP,),
        ).fetchall()
        if far:
            self._note(f"backend rid(s) {[k for (k,) in far]} of a session's records executed in another group")
        echoed = q(
            "SELECT r.key FROM j_refs r JOIN chats c ON c.key = 'caller:' || r.key AND c.kind = 1 "
            "WHERE r.kind = 1 AND c.grp != r.grp LIMIT ?",
            (KEEP,),
        ).fetchall()
        if echoed:
            self._note(f"request id(s) {[k for (k,) in echoed]} echoed in records of another session group")
        # each session's snapshot as snapshots() picks it: without a final one, its last collect GET (the first
        # in operation order among equal times) sent before its first 204 DELETE
        last: str | None = None
        for sid, start, _inv, ev in q("SELECT session, start, inv, ev FROM j_gets ORDER BY session, start DESC, inv"):
            if sid == last or sid in self._final:
                continue
            d = self.deleted.get(sid)
            if d is not None and not start < d[2]:
                continue
            last = sid
            self.evidence.snaps += 1
            for k, flags in json.loads(ev).items():
                mine = self.evidence.keys.setdefault(k, [False, False, False])
                for i, f in enumerate(flags):
                    mine[i] = mine[i] or bool(f)
        return "; ".join(self.why), self.evidence.decide(self.run)
