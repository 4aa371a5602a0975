"""ownership: in a multi-process deployment only a session's owner serves it.

Each session lives in exactly one server process (no shared state, no
coordinator); the client pins a session to the process that created it. A
request that lands on another process (a client routing bug, a load balancer
that ignores the pin; the ``wrong-process probes`` of the chaos plan) must get
404 and must not create anything there: an ``auto_create`` server would start a
second, divergent copy of the episode on the wrong process.

Rules:

- every operation on a session sent to a server other than ``owners[sid]``
  (falling back to the server that answered its ``create``) gets 404 (or no
  answer); a 2xx is a violation;
- server logs: ``session_created`` for a session only on its owner's port, and
  no ``chat_done`` with outcome ``committed`` for it on another port.

With one server process there is nothing to check (valid, noted). With several
processes but no way to tell owners, the verdict is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import pair_ops, port_of
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData

JUDGED = ("chat", "get", "delete", "probe")


class Ownership:
    name = "ownership"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        ops = pair_ops(run.history)
        owners: dict[str, str] = dict(run.owners)
        for o in ops:
            if o.f == "create" and o.type == "ok" and o.session and o.server and o.session not in owners:
                owners[o.session] = o.server
        servers = {o.server for o in ops if o.server and o.f in (*JUDGED, "create")} | set(owners.values())
        out: list[Keyed] = []
        foreign = unowned = 0
        for o in ops:
            sid = o.session
            if o.f not in JUDGED or sid is None or o.server is None or not part.mine(sid):
                continue
            owner = owners.get(sid)
            if owner is None:
                unowned += 1
                continue
            if o.server.rstrip("/") == owner.rstrip("/"):
                continue
            foreign += 1
            st = o.status
            if st is not None and 200 <= st < 300:
                msg = f"{o.f} to {o.server}, which does not own the session (owner {owner}), answered {st}"
                out.append(((0, o.invoke_index), Violation(msg, o.indices, sid, "served_by_non_owner")))
        owner_port = {sid: port_of(url) for sid, url in owners.items()}
        for pos, ln in zip(part.log_pos, run.server_logs, strict=True):
            if ln.get("event") not in ("session_created", "chat_done"):
                continue
            sid = ln.get("session_id")
            port = ln.get("worker_port")
            if sid is None or port is None or owner_port.get(str(sid)) is None or not part.mine(sid):
                continue
            if int(port) == owner_port[str(sid)]:
                continue
            if ln.get("event") == "session_created" or ln.get("outcome") == "committed":
                msg = (
                    f"server on port {port} logged {ln.get('event')}"
                    f"{'/committed' if ln.get('event') == 'chat_done' else ''} for a session owned by "
                    f"{owners[str(sid)]}"
                )
                out.append(((1, pos), Violation(msg, [], str(sid), "state_on_non_owner")))
        return {"servers": servers, "owned": bool(owners), "out": out, "foreign": foreign, "unowned": unowned}

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        servers: set[str] = set().union(*(p["servers"] for p in parts))
        if len(servers) <= 1:
            return verdict(self.name, [], notes="single server process: nothing to check")
        if not any(p["owned"] for p in parts):
            return verdict(self.name, [], unknown=["several servers but no owners recorded (owners.json / create ops)"])
        foreign, unowned = sum(p["foreign"] for p in parts), sum(p["unowned"] for p in parts)
        notes = f"{len(servers)} servers, {foreign} requests to non-owners"
        if unowned:
            notes += f", {unowned} ops on sessions with no known owner"
        return verdict(self.name, merge_violations(p["out"] for p in parts), notes=notes)
