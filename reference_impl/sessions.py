"""Per-session state and the store that owns it.

Why every field is here. The chat protocol releases the session lock while
the backend generates (seconds), so three requests of one session can be in
flight at once, and a DELETE can arrive in the middle. What keeps the state
honest:

- ``lock``: Phases 1 and 3 of a chat and the removal in DELETE run under it;
- ``closing``: set by DELETE *before* it waits for the lock, re-checked by
  every phase after it acquires the lock, so a request that was queued
  behind the lock (or was generating) never writes into a dying session;
- ``num_assistant`` and ``version``: Phase 1 remembers them, Phase 3 commits
  only if neither changed. ``num_assistant`` is the guard the protocol names;
  ``version`` (bumped on every commit) also catches the ABA case where a
  rollback-and-commit leaves ``num_assistant`` where it was;
- ``records``: committed turns, plus at most one *provisional* record (an
  aborted turn) and only at the tail, replaced by a newer one and removed
  when a retry of that turn commits; a retry rollback also drops the record
  of the discarded step, so committed records always match ``num_assistant``;
- ``inflight``: the backend calls in flight, so the ``delete_cancel`` variant
  can cancel them and name their ``rid`` to the backend.

The store never re-creates a removed id: a removed session is gone (a server
that auto-creates unknown ids on chat resurrects deleted sessions, and the
``auto_create`` variant models exactly that bug).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .tito import Commit, Message, SessionView

__all__ = ["Session", "SessionStore"]


@dataclass(eq=False)
class Session:
    session_id: str
    created_ts: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing: bool = False
    num_assistant: int = 0
    version: int = 0
    token_ids: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    assistant_at: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    inflight: dict[asyncio.Task[Any], str] = field(default_factory=dict)

    def view(self) -> SessionView:
        """Immutable snapshot for Phase 1 planning (safe to hand to a worker thread)."""
        return SessionView(
            token_ids=tuple(self.token_ids),
            messages=tuple(self.messages),
            keys=tuple(self.keys),
            checkpoints=tuple(self.checkpoints),
            assistant_at=tuple(self.assistant_at),
        )

    def apply(self, commit: Commit, base_assistant: int) -> None:
        """Commit a turn on top of checkpoint ``base_assistant`` (rollback included)."""
        self.token_ids = commit.token_ids
        self.messages = commit.messages
        self.keys = commit.keys
        self.checkpoints = [*self.checkpoints[:base_assistant], len(commit.token_ids)]
        self.assistant_at = [*self.assistant_at[:base_assistant], len(commit.messages) - 1]
        self.num_assistant = base_assistant + 1
        self.version += 1

    def add_committed(self, record: dict[str, Any], *, discarded: int = 0, supersede: bool = True) -> None:
        """Append a committed record; drop a tail provisional and the record of a rolled-back step.

        On the correct server the committed records are exactly the current branch:
        ``len(committed records) == num_assistant``.
        """
        provisional = self.records.pop() if self.records and self.records[-1]["kind"] == "provisional" else None
        for _ in range(discarded):
            for i in range(len(self.records) - 1, -1, -1):
                if self.records[i]["kind"] == "committed":
                    del self.records[i]
                    break
        if provisional is not None and not supersede:
            self.records.append(provisional)
        self.records.append(record)

    def add_provisional(self, record: dict[str, Any]) -> None:
        if self.records and self.records[-1]["kind"] == "provisional":
            self.records[-1] = record
        else:
            self.records.append(record)

    def metadata(self) -> dict[str, Any]:
        return {
            "token_ids": list(self.token_ids),
            "num_assistant": self.num_assistant,
            "messages": list(self.messages),
            "checkpoints": list(self.checkpoints),
            "created_ts": self.created_ts,
        }


class SessionStore:
    """The sessions of one process. Not shared: every process has its own."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def add(self, session: Session) -> Session:
        self._sessions[session.session_id] = session
        return session

    def remove(self, session: Session) -> None:
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]
