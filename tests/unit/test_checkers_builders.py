"""Builders of synthetic runs for the checker tests, and the proof that a clean run is clean.

:class:`RunBuilder` writes what the runner writes (docs/contracts.md and
docs/checkers.md): invoke/completion events with the completion fields the
agents record (status, headers, framing, aborted, body of a collect GET), a
per-session model of the reference server's state (records, token ids,
checkpoints, rollback drops the discarded record, one provisional at the
tail), the servers' JSON log lines (chat_start / chat_done with buckets and
inflight_now, session_created / session_deleted, heartbeat), the fake's
execution log and final ``stats`` snapshots. Tests then break one thing and
assert the right checker names the right operations.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from harness.checkers import CHECKERS, check_all, compose
from harness.rundata import RunData

S0 = "http://127.0.0.1:9001"
S1 = "http://127.0.0.1:9002"
BACKEND = "http://127.0.0.1:9100"
IM_END = 2
EPOCH = 1_700_000_000.0


def port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class SessionModel:
    """The reference server's state for one session, as the GET body shows it."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.records: list[dict[str, Any]] = []
        self.chain: list[list[int]] = []  # checkpoints (token ids after each committed assistant turn)

    @staticmethod
    def suffix(turn: int) -> list[int]:
        return [1000 + 10 * turn, 1001 + 10 * turn]

    @staticmethod
    def completion(turn: int, attempt: int, aborted: bool = False) -> list[int]:
        body = [2000 + 10 * turn + attempt, 2005 + 10 * turn]
        return body[:1] if aborted else [*body, IM_END]

    def prompt(self, turn: int, base_n: int) -> list[int]:
        base = self.chain[:base_n]
        return (base[-1] if base else []) + self.suffix(turn)

    def record(
        self, kind: str, rid: str, req: str, turn: int, attempt: int, prompt: list[int], out: list[int], finish: str
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "start_ts": EPOCH,
            "end_ts": EPOCH,
            "method": "POST",
            "path": f"/sessions/{self.sid}/v1/chat/completions",
            "caller_request_id": rid,
            "req_id": req,
            "turn": turn,
            "attempt": attempt,
            "request": {"messages": [], "input_ids": list(prompt), "logprobs": True},
            "response": {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer {turn}.{attempt}"},
                        "finish_reason": finish,
                        "meta_info": {
                            "id": req,  # the backend's rid, as the fake answers (joins the execution log)
                            "completion_tokens": len(out),
                            "output_token_logprobs": [[-0.5, t] for t in out],
                        },
                    }
                ]
            },
            "status_code": 200,
        }

    def commit(
        self, rid: str, req: str, turn: int, attempt: int, *, base_n: int, discarded: int = 0, supersede: bool = True
    ) -> None:
        prompt = self.prompt(turn, base_n)
        out = self.completion(turn, attempt)
        rec = self.record("committed", rid, req, turn, attempt, prompt, out, "stop")
        prov = self.records.pop() if self.records and self.records[-1]["kind"] == "provisional" else None
        for _ in range(discarded):
            for i in range(len(self.records) - 1, -1, -1):
                if self.records[i]["kind"] == "committed":
                    del self.records[i]
                    break
        if prov is not None and not supersede:
            self.records.append(prov)
        self.records.append(rec)
        self.chain = [*self.chain[:base_n], prompt + out]

    def provisional(self, rid: str, req: str, turn: int, attempt: int, *, base_n: int) -> None:
        prompt = self.prompt(turn, base_n)
        rec = self.record("provisional", rid, req, turn, attempt, prompt, self.completion(turn, attempt, True), "abort")
        if self.records and self.records[-1]["kind"] == "provisional":
            self.records[-1] = rec
        else:
            self.records.append(rec)

    def body(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "session_id": self.sid,
                "records": self.records,
                "metadata": {
                    "token_ids": self.chain[-1] if self.chain else [],
                    "num_assistant": len(self.chain),
                    "messages": [],
                    "checkpoints": [len(c) for c in self.chain],
                    "token_mismatch": None,
                },
            }
        )


class RunBuilder:
    """Appends history events, server log lines and backend executions in the contracts' shapes."""

    def __init__(self, *, variants: list[str] | None = None, faults: list[str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.execs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.models: dict[str, SessionModel] = {}
        self.owners: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.final: dict[str, dict[str, Any] | None] = {}
        self.t = 0.0
        self._op = 0
        self._n = 0
        self.scenario: dict[str, Any] = {
            "name": "synthetic",
            "seed": 1,
            "target": {"variants": list(variants or []), "max_trim_tokens": 2},
            "backend": {"faults": list(faults or [])},
            "checks": {"enabled": ["all"], "liveness_bound_s": 30.0, "options": {}},
        }

    # -- low level ------------------------------------------------------------------
    def tick(self, dt: float = 0.01) -> float:
        self.t = round(self.t + dt, 6)
        return self.t

    def uid(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:06x}"

    def invoke(self, f: str, *, at: float | None = None, server: str = S0, **fields: Any) -> int:
        op = self._op
        self._op += 1
        t = self.tick() if at is None else at
        ev = {
            "type": "invoke",
            "op": op,
            "process": fields.pop("process", "agent-0"),
            "f": f,
            "session": None,
            "server": server,
            "turn": None,
            "attempt": None,
            "request_id": None,
            "intended": t,
            "time": t,
        }
        ev.update(fields)
        self.events.append(ev)
        return op

    def complete(self, op: int, type_: str = "ok", *, at: float | None = None, **fields: Any) -> dict[str, Any]:
        inv = next(e for e in self.events if e["op"] == op and e["type"] == "invoke")
        t = self.tick() if at is None else at
        ev = {k: inv[k] for k in ("op", "process", "f", "session", "server", "turn", "attempt", "request_id")}
        ev.update(type=type_, time=t, intended=inv["intended"])
        ev.update(fields)
        self.events.append(ev)
        return ev

    def log(self, event: str, server: str, at: float, **fields: Any) -> None:
        line = {"ts": EPOCH + at, "level": "INFO", "event": event, "pid": 100 + port(server) % 100}
        line["worker_port"] = port(server)
        line.update(fields)
        self.logs.append(line)

    @staticmethod
    def framing(n: int = 321, extra: dict[str, int] | None = None) -> dict[str, Any]:
        counts = {"server": 1, "date": 1, "content-length": 1, "content-type": 1, "x-req-id": 1}
        counts.update(extra or {})
        return {"header_counts": counts, "content_length": n, "body_bytes": n}

    # -- operations -------------------------------------------------------------------
    def create(self, server: str = S0, process: str = "agent-0") -> str:
        sid = self.uid("5e55")
        op = self.invoke("create", server=server, process=process)
        self.log("session_created", server, self.t, session_id=sid)
        self.complete(op, session=sid, status=200, headers={"server": "uvicorn"}, framing=self.framing())
        self.models[sid] = SessionModel(sid)
        self.owners[sid] = server
        return sid

    def chat(
        self,
        sid: str,
        turn: int,
        attempt: int = 0,
        *,
        outcome: str = "committed",
        server: str | None = None,
        t0: float | None = None,
        t1: float | None = None,
        back: int = 0,
        base_n: int | None = None,
        supersede: bool = True,
        log: bool = True,
        execute: bool = True,
        process: str = "agent-0",
        **fields: Any,
    ) -> int:
        """One chat request of the agent; ``outcome`` is the server's chat_done outcome.

        ``committed`` / ``aborted`` change the session model (``back`` rolls back that many
        assistant steps, ``base_n`` forces the checkpoint the request was planned on: a stale
        writer); ``state_changed_skip`` / ``closing_skip`` answer 200 without a write;
        others answer their error status.
        """
        server = server or self.owners.get(sid, S0)
        rid = self.uid("r")
        req = self.uid("q")[-8:]
        m = self.models.get(sid)
        planned = base_n if base_n is not None else (len(m.chain) - back if m else 0)
        op = self.invoke(
            "chat", at=t0, server=server, session=sid, turn=turn, attempt=attempt, request_id=rid, process=process
        )
        start = self.events[-1]["time"]
        status = {
            "committed": 200,
            "aborted": 200,
            "state_changed_skip": 200,
            "closing_skip": 200,
            "not_found": 404,
            "conflict": 409,
            "bad_request": 400,
            "upstream_error": 503,
            "bad_gateway": 502,
            "transport_error": 502,
            "tokenization_error": 500,
            "internal_error": 500,
        }[outcome]
        status = fields.pop("status", status)
        end = self.tick() if t1 is None else t1
        if log:
            self.log("chat_start", server, start, req_id=req, session_id=sid, caller_request_id=rid, inflight_now=0)
            total = round((end - start) * 1000, 3)
            proxy = round(total * 0.8, 3) if status != 404 else 0.0
            self.log(
                "chat_done",
                server,
                end,
                req_id=req,
                session_id=sid,
                caller_request_id=rid,
                status=status,
                outcome=outcome,
                lock_wait_ms=0.1,
                tokenize_in_ms=0.5,
                proxy_elapsed_ms=proxy,
                tokenize_out_ms=0.4,
                read_body_ms=0.2,
                total_ms=total,
                inflight_now=0,
                prompt_tokens=4,
                completion_tokens=3,
            )
        if execute and status != 404 and outcome not in ("bad_request", "transport_error"):
            self.execs[sid].append(
                {
                    "rid": req,
                    "request_id": rid,
                    "turn": turn,
                    "attempt": attempt,
                    "finish_reason": "abort" if outcome == "aborted" else "stop",
                    "outcome": "aborted" if outcome == "aborted" else "completed",
                    "fault": fields.pop("fault", None),
                }
            )
        if m is not None and outcome == "committed":
            m.commit(rid, req, turn, attempt, base_n=planned, discarded=back, supersede=supersede)
        elif m is not None and outcome == "aborted":
            m.provisional(rid, req, turn, attempt, base_n=planned)
        headers: dict[str, Any] = {"x-req-id": req, "server": "uvicorn", "date": "Thu, 26 Nov 2026 07:00:00 GMT"}
        if outcome == "aborted":
            headers["x-sglang-aborted"] = "1"
        headers.update(fields.pop("headers", {}))
        done: dict[str, Any] = {
            "status": status,
            "headers": headers,
            "framing": fields.pop("framing", self.framing()),
        }
        if status == 200:
            done.update(
                finish_reason="stop",
                aborted=outcome == "aborted",
                prompt_tokens=4,
                completion_tokens=3,
                content_sha="0" * 40,
            )
        if status == 500:  # the server's own error, as the agent records it (the body's "error")
            kind = "TokenizationError" if outcome == "tokenization_error" else "InternalError"
            done["error"] = {"type": kind, "message": outcome}
        done.update(fields)
        type_ = done.pop("type", "ok" if status == 200 else "fail")
        self.complete(op, type_, at=end, **done)
        return op

    def get(self, sid: str, *, process: str = "agent-0") -> int:
        server = self.owners.get(sid, S0)
        op = self.invoke("get", server=server, session=sid, request_id=self.uid("r"), process=process)
        m = self.models.get(sid)
        if m is None or sid in self.deleted:
            self.complete(op, "fail", status=404, framing=self.framing())
        else:
            self.complete(op, status=200, body=m.body(), framing=self.framing())
        return op

    def delete(self, sid: str, *, process: str = "agent-0", at: float | None = None) -> int:
        server = self.owners.get(sid, S0)
        op = self.invoke("delete", at=at, server=server, session=sid, request_id=self.uid("r"), process=process)
        if sid in self.deleted:
            self.complete(op, "fail", status=404)
        else:
            self.deleted.add(sid)
            self.log("session_deleted", server, self.t, session_id=sid)
            self.complete(op, status=204, framing=self.framing(0))
        return op

    def probe(self, sid: str, server: str | None = None, value: str = "after_delete", status: int = 404) -> int:
        op = self.invoke("probe", server=server or self.owners[sid], session=sid, process="runner", value=value)
        self.complete(op, "ok" if status == 404 else "fail", status=status, value=value)
        return op

    def chaos(self, value: dict[str, Any], *, server: str = S0, session: str | None = None) -> int:
        op = self.invoke("chaos", server=server, session=session, value=value, process="nemesis")
        self.complete(op, value=value)
        return op

    def stats(self, server: str, **override: Any) -> int:
        alive = sum(1 for sid, url in self.owners.items() if url == server and sid not in self.deleted)
        body = {"pid": 1, "worker_port": port(server), "reqs_total": 0, "turns_completed": 0}
        body.update(inflight=0, sessions=alive)
        body.update(override)
        op = self.invoke("probe", server=server, process="runner", value="stats")
        self.complete(op, status=200, value="stats", body=body)
        return op

    def heartbeat(self, server: str, **override: Any) -> None:
        alive = sum(1 for sid, url in self.owners.items() if url == server and sid not in self.deleted)
        fields = {"rss_mb": 50.0, "vms_mb": 400.0, "inflight": 0, "sessions": alive}
        fields.update(override)
        self.log("heartbeat", server, self.tick(), **fields)

    def episode(self, sid: str, turns: int) -> None:
        for t in range(turns):
            self.chat(sid, t)

    def collect_and_delete(self, sid: str) -> tuple[int, int]:
        g = self.get(sid)
        d = self.delete(sid)
        return g, d

    # -- the run ----------------------------------------------------------------------
    def build(self, *, inflight_leak_after: str | None = None) -> RunData:
        """Index the events, fill inflight_now by replaying the logs, take final states."""
        events = sorted(self.events, key=lambda e: e["time"])
        for i, e in enumerate(events):
            e["index"] = i
        logs = sorted(self.logs, key=lambda ln: ln["ts"])
        open_: dict[int, int] = defaultdict(int)
        leak: dict[int, int] = defaultdict(int)
        for ln in logs:
            p = ln["worker_port"]
            if ln["event"] == "chat_start":
                open_[p] += 1
                ln["inflight_now"] = open_[p] + leak[p]
            elif ln["event"] == "chat_done":
                open_[p] -= 1
                if inflight_leak_after is not None and ln["outcome"] != "committed":
                    leak[p] += 1
                ln["inflight_now"] = open_[p] + leak[p]
        final: dict[str, dict[str, Any] | None] = {}
        for sid, m in self.models.items():
            final[sid] = None if sid in self.deleted else m.body()
        final.update(self.final)
        return RunData(
            scenario=copy.deepcopy(self.scenario),
            history=events,
            final_states=final,
            owners=dict(self.owners),
            backend_executions={k: list(v) for k, v in self.execs.items()},
            server_logs=logs,
        )


def clean_run() -> RunBuilder:
    """Two servers, three sessions: plain turns, an abort superseded by its retry, a tool retry
    rollback, retries exhausted (provisional kept), duplicates of one turn (one commits, the other
    state_changed), a wrong-process probe, collect + DELETE, final probes and stats."""
    b = RunBuilder()
    a = b.create(S0)
    c = b.create(S1)
    d = b.create(S0)
    b.episode(a, 3)
    # c: abort then a successful retry; then a tool retry of turn 1 (rolls back one step)
    b.chat(c, 0)
    b.chat(c, 1, 0, outcome="aborted")
    b.chat(c, 1, 1)
    b.chat(c, 1, 2, back=1)
    b.chat(c, 2)
    # d: duplicates of turn 1 overlap: one commits, the other is state_changed
    b.chat(d, 0)
    t = b.tick()
    b.chat(d, 1, 0, t0=t, t1=t + 0.5)
    b.chat(d, 1, 1, outcome="state_changed_skip", t0=t + 0.1, t1=t + 0.6)
    b.t = t + 0.7
    b.chat(d, 2, 0, outcome="aborted")
    b.chat(d, 2, 1, outcome="aborted")  # retries exhausted: the provisional stays
    b.probe(a, server=S1, value="wrong_process")
    b.collect_and_delete(a)
    b.collect_and_delete(d)
    b.probe(a)
    b.probe(d)
    b.heartbeat(S0)
    b.heartbeat(S1)
    b.stats(S0)
    b.stats(S1)
    return b


# --- tests of the builders themselves: a clean run is clean -------------------------


def test_clean_run_is_valid_under_every_checker() -> None:
    run = clean_run().build()
    verdicts = check_all(run)
    assert [v.checker for v in verdicts] == list(CHECKERS)
    bad = [(v.checker, v.status, v.notes, [x.message for x in v.violations]) for v in verdicts if not v.valid]
    assert bad == []
    assert compose(verdicts).status == "valid"


def test_clean_run_models_the_reference_server_state() -> None:
    b = clean_run()
    run = b.build()
    c = next(sid for sid, url in b.owners.items() if url == S1)
    body = run.final_states[c]
    assert body is not None
    kinds = [r["kind"] for r in body["records"]]
    assert kinds == ["committed", "committed", "committed"]  # abort superseded, tool retry dropped a step
    assert body["metadata"]["num_assistant"] == 3
    deleted = [sid for sid, st in run.final_states.items() if st is None]
    assert len(deleted) == 2


def test_clean_run_survives_a_save_and_load(tmp_path: Any) -> None:
    run = clean_run().build()
    run.save(tmp_path)
    again = RunData.load(tmp_path)
    assert [v.status for v in check_all(again)] == [v.status for v in check_all(run)]


def random_clean_run(seed: int) -> RunBuilder:
    """A seeded, correct-server run: the behaviours of clean_run() mixed at random."""
    import random

    rng = random.Random(seed)
    b = RunBuilder()
    servers = [S0, S1][: rng.choice([1, 2])]
    sids = [b.create(rng.choice(servers)) for _ in range(rng.randint(2, 6))]
    for sid in sids:
        turns = rng.randint(1, 4)
        for t in range(turns):
            attempt = 0
            while rng.random() < 0.25 and attempt < 2:
                b.chat(sid, t, attempt, outcome="aborted")
                attempt += 1
            if t == turns - 1 and rng.random() < 0.2:
                b.chat(sid, t, attempt, outcome="aborted")  # retries exhausted: the provisional stays
                break
            if rng.random() < 0.15:
                t0 = b.tick()
                b.chat(sid, t, attempt, t0=t0, t1=t0 + 0.4)
                b.chat(sid, t, attempt + 1, outcome="state_changed_skip", t0=t0 + 0.1, t1=t0 + 0.5)
                b.t = t0 + 0.6
            else:
                b.chat(sid, t, attempt)
            if t > 0 and rng.random() < 0.15:
                b.chat(sid, t, attempt + 2, back=1)  # a tool-call retry of this turn
        if len(servers) > 1 and rng.random() < 0.3:
            other = next(s for s in servers if s != b.owners[sid])
            b.probe(sid, server=other, value="wrong_process")
        if rng.random() < 0.7:
            b.collect_and_delete(sid)
            b.probe(sid)
    for s in servers:
        b.heartbeat(s)
        b.stats(s)
    return b


def test_random_clean_runs_are_valid_under_every_checker() -> None:
    for seed in range(25):
        run = random_clean_run(seed).build()
        bad = [(v.checker, [x.message for x in v.violations], v.notes) for v in check_all(run) if not v.valid]
        assert bad == [], (seed, bad)


def test_random_runs_with_one_dropped_record_are_invalid() -> None:
    flagged = 0
    for seed in range(25):
        run = random_clean_run(seed).build()
        victims = [
            (sid, st)
            for sid, st in sorted(run.final_states.items())
            if st and any(r["kind"] == "committed" for r in st["records"])
        ]
        if not victims:
            continue
        _, st = victims[0]
        i = max(i for i, r in enumerate(st["records"]) if r["kind"] == "committed")
        del st["records"][i]
        bad = {v.checker for v in check_all(run, ["lost_turns", "token_state"]) if v.status == "invalid"}
        assert bad, seed
        flagged += 1
    assert flagged >= 10
