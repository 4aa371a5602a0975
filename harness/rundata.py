"""What one scenario run leaves behind, and what checkers and reports read.

The history is the single source of truth (DESIGN.md); next to it a run keeps
only what the servers themselves say: their final session states, the
backend's execution log and the servers' JSON log lines. Checkers and reports
read a :class:`RunData` and nothing else, so a run folder can be re-checked
and re-reported long after the processes are gone.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CUT_REASON",
    "RUN_FILES",
    "FinalStatesFile",
    "History",
    "RunData",
    "StoredBody",
    "UnreadableBody",
    "body_of",
    "close_cut_history",
]

CUT_REASON = "run cut before this operation completed (signal or crash): outcome unknown"


def close_cut_history(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` plus an ``info`` completion for every op invoked and never completed."""
    done = {e.get("op") for e in events if e.get("type") != "invoke"}
    open_ops = [e for e in events if e.get("type") == "invoke" and e.get("op") not in done]
    if not open_ops:
        return events
    end = max((float(e.get("time", 0.0)) for e in events), default=0.0)
    out = list(events)
    for inv in open_ops:
        ev = {k: inv.get(k) for k in ("op", "process", "f", "session", "server", "turn", "attempt", "request_id")}
        ev.update(type="info", time=end, intended=inv.get("intended"), error=CUT_REASON, index=len(out))
        out.append(ev)
    return out


FREEZE_EVENTS = 50_000
SHARED_INTS = 1_000_000  # distinct int values shared per load (a bound on the table, not on the run)


def _int_sharer() -> Any:
    """A ``parse_int`` that makes one int object per distinct value (token ids repeat across records, GET
    bodies and final states): a run's ints cost a pointer each instead of an object each. Same values,
    same types. One table per :meth:`RunData.load`, gone with it: nothing of one run outlives its load."""
    table: dict[str, int] = {}

    def shared_int(text: str) -> int:
        v = table.get(text)
        if v is None:
            v = int(text)
            if len(table) < SHARED_INTS:
                table[text] = v
        return v

    return shared_int


class History(list[dict[str, Any]]):
    """A run's history events (a plain list) that carries the checkers' memo of it (``harness.checkers.ops``:
    the pairing, the shared Links and snapshots), so what is derived from one run lives and dies with that
    run's list, never in a class or module attribute that keeps the last run alive after it is gone."""

    __slots__ = ("memo",)

    def __init__(self, events: Any = ()) -> None:
        super().__init__(events)
        self.memo: Any = None


class _Compactor:
    """Share equal strings and equal small flat tables among loaded events (in place, same values).

    Every event repeats its session id, server url, process name, function and outcome; every chat
    completion carries its own copy of the same ``framing.header_counts`` table. JSON decoding makes a
    new object for each; a run of 10^4 sessions holds millions of them. ``skip`` (the GET bodies,
    session states, read by the checkers as they are) is left alone. Applied to each line as it is
    decoded, so the duplicates are freed (and their memory reused) before the next line is read.
    """

    def __init__(self, skip: str = "body") -> None:
        self.skip = skip
        self.strs: dict[str, str] = {}
        self.tables: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}

    def table(self, d: dict[str, Any]) -> dict[str, Any]:
        strs = self.strs
        flat = True
        for k, v in d.items():
            if type(v) is str:
                d[k] = strs.setdefault(v, v)
            elif type(v) is dict:
                d[k] = self.table(v)
                flat = False
            elif v is not None and type(v) not in (int, float, bool):
                flat = False
        if not flat or len(d) > 16:
            return d
        key = tuple(d.items())
        try:
            return self.tables.setdefault(key, d)
        except TypeError:  # an unhashable value after all
            return d

    def event(self, ev: dict[str, Any]) -> dict[str, Any]:
        strs = self.strs
        for k, v in ev.items():
            if k == self.skip:
                continue
            if type(v) is str and len(v) <= 256:
                ev[k] = strs.setdefault(v, v)
            elif type(v) is dict:
                ev[k] = self.table(v)
        return ev


class _Source:
    """An open read-only descriptor on the ``history.jsonl`` a run was loaded from.

    Held open (closed when the last :class:`StoredBody` goes) so that a body is re-read from the file as
    it was loaded, even if the folder's history is rewritten (:meth:`RunData.save` replaces the file, the
    descriptor still names the old one). It also keeps the last few bodies decoded from it (``recent``,
    by offset: plain data, no reference back), so that cache goes with the run too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.recent: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.holding: OrderedDict[int, Any] = OrderedDict()  # weak references to what readers derived from it
        weakref.finalize(self, os.close, self.fd)


class UnreadableBody(ValueError):
    """A stored GET body that cannot be read back as it was loaded (the file changed or is corrupt).

    A problem of the run folder, not of a checker: :func:`harness.checkers.base.run_checker` reports it
    as the checker's ``unknown`` with this reason (bad input is reported, never raised out of a check).
    """


class StoredBody:
    """A GET completion's ``body`` left in ``history.jsonl``: where its line is, decoded on demand.

    A collect ``GET`` body is a whole session state (every record's ``input_ids`` and logprobs): most of a
    large history's bytes, and parsed it costs several times its size. Only the snapshot a checker asks
    for is decoded (:func:`body_of`, ``Op.body``); the last few are kept decoded (per source file). Only
    dict bodies are stored this way, so ``isinstance(body_of(ev), dict)`` is true of every one; one that
    cannot be read back raises :class:`UnreadableBody`.
    """

    __slots__ = ("_src", "length", "offset")
    KEEP = 32  # decoded bodies kept per source (a checker walks one session's snapshot at a time)

    def __init__(self, src: _Source, offset: int, length: int) -> None:
        self._src, self.offset, self.length = src, offset, length

    @property
    def source(self) -> _Source:
        return self._src

    def load(self) -> dict[str, Any]:
        recent = self._src.recent
        got = recent.get(self.offset)
        if got is not None:
            recent.move_to_end(self.offset)
            return got
        where = f"{self._src.path}: byte {self.offset}"
        try:
            raw = os.pread(self._src.fd, self.length, self.offset)
            # plain ints (the C decoder's fast path): a decoded body is transient, sharing its ints saves nothing
            line = json.loads(raw.decode("utf-8", errors="replace"))
        except (OSError, ValueError) as exc:
            raise UnreadableBody(f"{where}: the stored GET body cannot be read back ({exc})") from None
        body = line.get("body") if isinstance(line, dict) else None
        if not isinstance(body, dict):  # the file changed under the descriptor: say so, never guess
            raise UnreadableBody(f"{where}: the stored GET body is gone (the file changed after it was loaded)")
        recent[self.offset] = body
        if len(recent) > self.KEEP:
            recent.popitem(last=False)
        return body

    def __repr__(self) -> str:
        return f"StoredBody({self._src.path.name}@{self.offset}+{self.length})"


def body_of(ev: dict[str, Any] | None) -> Any:
    """An event's ``body`` as recorded: a :class:`StoredBody` is decoded from the history file."""
    if ev is None:
        return None
    b = ev.get("body")
    return b.load() if isinstance(b, StoredBody) else b


def _plain(ev: dict[str, Any]) -> dict[str, Any]:
    """The event as recorded (a stored body decoded), for writing it out."""
    b = ev.get("body")
    return {**ev, "body": b.load()} if isinstance(b, StoredBody) else ev


def _line(ev: dict[str, Any]) -> str:
    """An event's line in history.jsonl as :meth:`RunData.save` writes it."""
    return json.dumps(_plain(ev), sort_keys=True) + "\n"


def _holds(path: Path, events: list[dict[str, Any]]) -> bool:
    """``path`` is already, byte for byte, what :meth:`RunData.save` would write for ``events``.

    A live run's history is appended to history.jsonl as it happens (harness.history, so a cut run leaves it
    behind); the save at the end then finds it there and does not write it again. Read one line at a time,
    stopped at the first difference (an event changed after it was written, a torn tail, a cut-run closing):
    then the file is rewritten as before.
    """
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        for ev in events:
            if fh.readline() != _line(ev).encode("utf-8", "surrogatepass"):
                return False
        return fh.read(1) == b""


def _history(events: list[dict[str, Any]]) -> History:
    return events if isinstance(events, History) else History(events)


class FinalStatesFile:
    """``final_states.json`` written without holding every session's state (a live run, issue 13).

    Each state is encoded as it arrives (the bytes ``json.dumps(state, sort_keys=True)`` gives) into an
    unlinked temp file in the run folder, so nothing is left on disk whatever ends the process; only the
    offset and length of each session's bytes stay in memory (~100 bytes a session). :meth:`write` puts them
    together in session order: the same bytes as ``json.dumps(final_states, sort_keys=True)``.
    """

    def __init__(self, run_dir: Path) -> None:
        self._tmp = tempfile.TemporaryFile(dir=run_dir)  # noqa: SIM115 - held until write() or close()
        self._at: dict[str, tuple[int, int]] = {}
        self._end = 0

    def __setitem__(self, sid: str, state: dict[str, Any] | None) -> None:
        raw = json.dumps(state, sort_keys=True).encode("utf-8", "surrogatepass")
        os.pwrite(self._tmp.fileno(), raw, self._end)
        self._at[sid] = (self._end, len(raw))
        self._end += len(raw)

    def __len__(self) -> int:
        return len(self._at)

    def write(self, path: Path) -> None:
        fd = self._tmp.fileno()
        with path.open("wb") as fh:
            fh.write(b"{")
            for i, sid in enumerate(sorted(self._at)):
                off, n = self._at[sid]
                fh.write((", " if i else "").encode() + json.dumps(sid).encode() + b": " + os.pread(fd, n, off))
            fh.write(b"}")
        self.close()

    def close(self) -> None:
        self._tmp.close()


LAZY_FILE_BYTES = 16 * 1024 * 1024  # a history this large keeps its GET bodies in the file (RunData.load)
LAZY_LINE_BYTES = 2048  # ... those whose line is at least this long (a small body costs less than its pointer)

# File names inside one scenario's run folder.
RUN_FILES = {
    "scenario": "scenario.json",  # the validated scenario as plain data (+ "source": path)
    "history": "history.jsonl",  # docs/contracts.md "History"
    "final_states": "final_states.json",  # {session_id: GET body or null (404)}
    "owners": "owners.json",  # {session_id: server url}
    "backend_executions": "backend_executions.json",  # fake /stats "executions" ({} if external)
    "server_logs": "server_logs.jsonl",  # every server process's JSON log lines, merged
    "verdicts": "verdicts.json",  # checker results
    "harness": "harness_self.json",  # the harness's own event-loop lag and CPU during a live run (runner/_selfmon.py)
}


@dataclass
class RunData:
    scenario: dict[str, Any]
    history: list[dict[str, Any]]
    final_states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    backend_executions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    server_logs: list[dict[str, Any]] = field(default_factory=list)
    harness: dict[str, Any] = field(default_factory=dict)  # empty: not measured (simulation, older runs)
    # Files a live run wrote as it went instead of holding them (RUN_FILES key -> the file, issue 13): then
    # ``history`` / ``final_states`` are empty here and ``streamed_events`` counts the history's events.
    streamed: dict[str, Path] = field(default_factory=dict)
    streamed_events: int = 0

    @property
    def event_count(self) -> int:
        return self.streamed_events if "history" in self.streamed else len(self.history)

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_FILES["scenario"]).write_text(json.dumps(self.scenario, indent=2, sort_keys=True, default=str))
        for key, src in self.streamed.items():  # already on disk: copied only if saved elsewhere
            dst = run_dir / RUN_FILES[key]
            if not (dst.exists() and os.path.samefile(src, dst)):
                shutil.copyfile(src, dst)
        hist = run_dir / RUN_FILES["history"]
        if "history" in self.streamed:
            pass
        elif not _holds(hist, self.history):  # a live run appended it as it went: not written a second time
            tmp = hist.with_name(hist.name + ".tmp")  # replaced whole: a StoredBody may still read the old file
            with tmp.open("w") as fh:
                for ev in self.history:
                    fh.write(_line(ev))
            os.replace(tmp, hist)
        if "final_states" not in self.streamed:
            (run_dir / RUN_FILES["final_states"]).write_text(json.dumps(self.final_states, sort_keys=True))
        (run_dir / RUN_FILES["owners"]).write_text(json.dumps(self.owners, indent=1, sort_keys=True))
        (run_dir / RUN_FILES["backend_executions"]).write_text(json.dumps(self.backend_executions, sort_keys=True))
        with (run_dir / RUN_FILES["server_logs"]).open("w") as fh:
            for line in self.server_logs:
                fh.write(json.dumps(line, sort_keys=True) + "\n")
        if self.harness:
            (run_dir / RUN_FILES["harness"]).write_text(json.dumps(self.harness, indent=1, sort_keys=True))

    @classmethod
    def load(cls, run_dir: Path, *, lazy_bodies: bool | None = None) -> RunData:
        """Read a run folder; a run cut short (a signal, a crash) reads too.

        A torn last line is skipped, and every operation the history invoked but
        never completed gets an ``info`` (unknown outcome) completion saying the
        run was cut: checkers then give verdicts with those operations unknown.

        ``lazy_bodies`` (default: when history.jsonl is at least ``LAZY_FILE_BYTES``): GET completions'
        dict bodies stay in the file as :class:`StoredBody` pointers, read back by :func:`body_of`.
        """

        def jsonl(name: str) -> list[dict[str, Any]]:
            p = run_dir / RUN_FILES[name]
            if not p.exists():
                return []
            out: list[dict[str, Any]] = []
            compact = _Compactor()
            torn: int | None = None  # the number of a line that is not JSON: fine only if it is the last one
            n = 0
            lazy = name == "history" and (
                lazy_bodies if lazy_bodies is not None else p.stat().st_size >= LAZY_FILE_BYTES
            )
            src = _Source(p) if lazy else None
            offset = 0
            with p.open("rb") as fh:  # line by line: never the whole file and its lines at once
                for raw in fh:
                    at, offset = offset, offset + len(raw)
                    line = raw.decode("utf-8", errors="replace")
                    if not line.strip():
                        continue
                    n += 1
                    if torn is not None:
                        break
                    try:
                        obj = json.loads(line, parse_int=shared_int)
                    except ValueError:
                        torn = n
                        continue
                    if isinstance(obj, dict):
                        if (
                            src is not None
                            and len(raw) >= LAZY_LINE_BYTES
                            and obj.get("f") == "get"
                            and isinstance(obj.get("body"), dict)
                        ):
                            obj["body"] = StoredBody(src, at, len(raw))
                        out.append(compact.event(obj))
            if torn is not None and (n > torn or n == 1):  # not the last line, or the only one
                raise ValueError(f"{p}: line {torn} is not JSON (a corrupt run folder)")
            return out

        def js(name: str, default: Any) -> Any:
            p = run_dir / RUN_FILES[name]
            return json.loads(p.read_text(), parse_int=shared_int) if p.exists() else default

        shared_int = _int_sharer()

        # A run folder is millions of small dicts and lists, none of them in a reference cycle: the cyclic
        # collector would walk them all again and again while they are built (and again in every checker,
        # quadratic in the run's length), so it is paused while loading and what was loaded is moved out of
        # its sight (gc.freeze); reference counting still frees it all when the RunData goes.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            run = cls(
                scenario=js("scenario", {}),
                history=_history(close_cut_history(jsonl("history"))),
                final_states=js("final_states", {}),
                owners=js("owners", {}),
                backend_executions=js("backend_executions", {}),
                server_logs=jsonl("server_logs"),
                harness=js("harness", {}),
            )
        finally:
            if was_enabled:
                gc.enable()
        if len(run.history) > FREEZE_EVENTS:  # a small folder (tests, sims) leaves the collector as it was
            gc.freeze()
        return run
