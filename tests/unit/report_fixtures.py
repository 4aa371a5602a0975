"""Synthetic run folders that follow docs/contracts.md, for the report tests.

A seeded generator of what the runner leaves behind: an open-loop workload
of multi-turn sessions over several server processes, with ``chat_done``
lines carrying the timing buckets, aborted turns retried by the agents,
upstream errors, a client stall (sends lag their intended start), timeouts
(``info``), chaos and backend-fault events, and checker verdicts. The numbers
are plausible rather than real; what matters is the shape, and that the same
seed always gives the same folder.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from harness.rundata import RunData

BUCKETS = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")


def make_run(
    *,
    seed: int = 0,
    name: str = "synthetic",
    sessions: int = 40,
    turns: int = 4,
    processes: int = 2,
    variants: list[str] | None = None,
    abort_rate: float = 0.08,
    error_rate: float = 0.03,
    timeout_rate: float = 0.02,
    proxy_ms: float = 40.0,
    stall: tuple[float, float] | None = (1.0, 1.6),
    slo: dict[str, dict[str, float]] | None = None,
    verdicts: list[dict[str, Any]] | None = None,
    mode: str = "live",
    description: str | None = None,
    rules: list[dict[str, Any]] | None = None,
    violations: int = 1,
) -> tuple[RunData, list[dict[str, Any]]]:
    """``mode="sim"`` marks the run a simulation (virtual clock); ``rules``: backend fault rules the scenario
    declares (one the run never fires is "declared but not exercised"); ``violations``: how many the default
    ``unexpected_5xx`` verdict lists (each names two history indices)."""
    rng = random.Random(seed)
    ports = [8101 + k for k in range(processes)]
    pids = {port: 4000 + 17 * k for k, port in enumerate(ports)}
    events: list[dict[str, Any]] = []  # without index; sorted by time at the end
    logs: list[dict[str, Any]] = []
    owners: dict[str, str] = {}
    final_states: dict[str, Any] = {}
    executions: dict[str, list[dict[str, Any]]] = {}
    op_counter = 0
    wall0 = 1_700_000_000.0

    def new_op() -> int:
        nonlocal op_counter
        op_counter += 1
        return op_counter

    def sent_at(intended: float) -> float:
        if stall and stall[0] <= intended < stall[1]:
            return stall[1] + rng.uniform(0.0, 0.002)  # the client was stalled: it sends late
        return intended + rng.uniform(0.0, 0.0005)

    def base(op: int, kind: str, f: str, agent: str, session: str | None, server: str, t: float) -> dict[str, Any]:
        return {
            "type": kind,
            "op": op,
            "process": agent,
            "f": f,
            "session": session,
            "server": server,
            "turn": None,
            "attempt": None,
            "request_id": None,
            "intended": t,
            "time": t,
        }

    for i in range(sessions):
        agent = f"agent-{i % 8}"
        port = rng.choice(ports)
        pid = pids[port]
        server = f"http://127.0.0.1:{port}"
        sid = f"{rng.getrandbits(128):032x}"
        owners[sid] = server
        t = i * 0.08
        op = new_op()
        events.append(base(op, "invoke", "create", agent, None, server, t))
        done = base(op, "ok", "create", agent, sid, server, t + 0.002)
        done["status"] = 200
        events.append(done)
        logs.append(
            {
                "ts": wall0 + t,
                "level": "INFO",
                "event": "session_created",
                "pid": pid,
                "worker_port": port,
                "session_id": sid,
            }
        )
        t += 0.003
        for turn in range(turns):
            attempt = 0
            intended = t
            while True:
                op = new_op()
                rid = f"{rng.getrandbits(32):08x}"
                sent = sent_at(intended)
                lock = rng.expovariate(1 / 0.05) if rng.random() < 0.9 else rng.uniform(1, 30)
                tok_in = rng.lognormvariate(math.log(1.5), 0.4)
                proxy = rng.lognormvariate(math.log(proxy_ms), 0.35)
                if rng.random() < 0.02:
                    proxy *= 12  # latency spike
                tok_out = rng.lognormvariate(math.log(0.8), 0.4)
                total = lock + tok_in + proxy + tok_out + rng.uniform(0.05, 0.3)
                end = sent + total / 1000.0 + 0.0006
                r = rng.random()
                outcome, status, aborted, kind = "committed", 200, False, "ok"
                if r < abort_rate:
                    outcome, aborted = "aborted", True
                elif r < abort_rate + error_rate:
                    outcome, status = "upstream_error", 502
                elif r < abort_rate + error_rate + timeout_rate:
                    outcome, kind = "cancelled", "info"
                    end = sent + 5.0  # the client timed out after 5 s
                inv = base(op, "invoke", "chat", agent, sid, server, sent)
                inv.update(turn=turn, attempt=attempt, request_id=f"{rng.getrandbits(64):016x}", intended=intended)
                comp = dict(inv, type=kind, time=end)
                if kind == "ok":
                    comp.update(
                        status=status,
                        headers={"x-req-id": rid, "content-length": "321", "server": "uvicorn"}
                        | ({"x-sglang-aborted": "1"} if aborted else {}),
                        finish_reason="abort" if aborted else "stop",
                        aborted=aborted,
                        prompt_tokens=100 + 40 * turn,
                        completion_tokens=rng.randint(5, 40),
                        content_sha=f"{rng.getrandbits(160):040x}",
                    )
                else:
                    comp.update(error="ReadTimeout")
                events += [inv, comp]
                executions.setdefault(sid, []).append(
                    {"turn": turn, "attempt": attempt, "request_id": inv["request_id"],
                     "fault": "http_502" if status == 502 else None, "status": status}
                )  # fmt: skip
                if aborted:
                    events.append(
                        {
                            **base(new_op(), "invoke", "fault", "nemesis", sid, server, sent + 0.001),
                            "value": {"kind": "abort", "turn": turn, "attempt": attempt},
                        }
                    )
                logs.append(
                    {
                        "ts": wall0 + sent,
                        "level": "INFO",
                        "event": "chat_start",
                        "pid": pid,
                        "worker_port": port,
                        "req_id": rid,
                        "session_id": sid,
                        "caller_request_id": inv["request_id"],
                        "inflight_now": rng.randint(1, 6),
                    }
                )
                logs.append(
                    {
                        "ts": wall0 + sent + total / 1000.0,
                        "level": "INFO",
                        "event": "chat_done",
                        "pid": pid,
                        "worker_port": port,
                        "req_id": rid,
                        "session_id": sid,
                        "caller_request_id": inv["request_id"],
                        "status": status,
                        "outcome": outcome,
                        "lock_wait_ms": round(lock, 3),
                        "tokenize_in_ms": round(tok_in, 3),
                        "proxy_elapsed_ms": round(proxy, 3),
                        "tokenize_out_ms": round(tok_out, 3),
                        "total_ms": round(total, 3),
                        "inflight_now": rng.randint(0, 5),
                        "prompt_tokens": 100 + 40 * turn,
                        "completion_tokens": rng.randint(5, 40),
                    }
                )
                t = end + rng.uniform(0.01, 0.05)
                if (aborted or kind == "info" or status >= 500) and attempt < 2:
                    attempt += 1
                    intended = t
                    continue
                break
        op = new_op()
        events.append(base(op, "invoke", "delete", agent, sid, server, t))
        events.append(dict(base(op, "ok", "delete", agent, sid, server, t + 0.002), status=204))
        final_states[sid] = None
    chaos_t = sessions * 0.08 / 2
    op = new_op()
    events.append(
        {**base(op, "invoke", "chaos", "nemesis", None, "", chaos_t), "value": {"kind": "delete_during_proxy"}}
    )
    events.append(
        {**base(op, "info", "chaos", "nemesis", None, "", chaos_t + 0.01), "value": {"kind": "delete_during_proxy"}}
    )
    for port in ports:
        logs.append(
            {
                "ts": wall0 + 1.0,
                "level": "INFO",
                "event": "heartbeat",
                "pid": pids[port],
                "worker_port": port,
                "rss_mb": 80.0,
                "vms_mb": 400.0,
                "reqs_total": 10,
                "turns_completed": 8,
                "inflight": 1,
                "sessions": 3,
            }
        )
    events.sort(key=lambda e: (e["time"], 0 if e["type"] == "invoke" else 1))
    for idx, ev in enumerate(events):
        ev["index"] = idx
    logs.sort(key=lambda line: line["ts"])
    scenario: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "mode": mode,
        "source": f"scenarios/{name}.toml",
        "target": {"kind": "reference", "processes": processes, "variants": variants or []},
        "backend": {"faults": ["abort", "5xx"], **({"rules": rules} if rules is not None else {})},
        "checks": {},
    }
    if mode == "sim":
        scenario["sim"] = {"seed": seed, "strategy": "random"}
    if description is not None:
        scenario["description"] = description
    if slo is not None:
        scenario["slo"] = slo
    run = RunData(
        scenario=scenario,
        history=events,
        final_states=final_states,
        owners=owners,
        backend_executions=executions,
        server_logs=logs,
    )
    if verdicts is None:
        verdicts = [
            {"checker": "no_lost_turns", "status": "valid", "violations": [], "notes": ""},
            {"checker": "provisional", "status": "valid", "violations": [], "notes": ""},
            {
                "checker": "unexpected_5xx",
                "status": "invalid",
                "violations": [
                    {
                        "message": f"500 from server without a backend fault ({k + 1})",
                        "ops": [3 + 2 * k, 4 + 2 * k],
                        "session": next(iter(owners)),
                    }
                    for k in range(violations)
                ],
                "notes": f"{violations} unexplained 500",
            },
            {"checker": "liveness", "status": "unknown", "violations": [], "notes": "2 requests timed out"},
        ]
    return run, verdicts


def write_run(run_dir: Path, **kwargs: Any) -> Path:
    run, verdicts = make_run(**kwargs)
    run.save(run_dir)
    (run_dir / "verdicts.json").write_text(json.dumps(verdicts, indent=1))
    return run_dir


ABORT_RETRY_DESCRIPTION = "Aborted turns are retried by the agents.\nA retry must supersede the aborted attempt."
ABORT_RETRY_VIOLATIONS = 25  # more than a page lists per checker (20)


def write_suite(suite_dir: Path, *, seed: int = 0, sessions: int = 30) -> Path:
    """Three scenarios: abort retries (a simulation run with 25 violations, a description, and a declared fault
    that never fires), lock restoration (slower, live), and a clean one."""
    write_run(
        suite_dir / "abort_retry",
        seed=seed,
        name="abort_retry",
        sessions=sessions,
        mode="sim",
        description=ABORT_RETRY_DESCRIPTION,
        rules=[{"fault": "http_504", "probability": 0.5}],
        violations=ABORT_RETRY_VIOLATIONS,
    )
    write_run(
        suite_dir / "lock_restore",
        seed=seed + 1,
        name="lock_restore",
        sessions=sessions,
        variants=["lock_restoration"],
        proxy_ms=60.0,
        slo={"total_ms": {"p99_ms": 50.0}},
    )
    all_valid = [
        {"checker": c, "status": "valid", "violations": [], "notes": ""}
        for c in ("no_lost_turns", "provisional", "liveness")
    ]
    write_run(
        suite_dir / "clean",
        seed=seed + 2,
        name="clean",
        sessions=sessions,
        verdicts=all_valid,
        abort_rate=0.0,
        error_rate=0.0,
        timeout_rate=0.0,
        stall=None,
        slo={"total_ms": {"p99_ms": 10_000.0}, "client_turn_ms": {"p50_ms": 10_000.0}},
    )
    return suite_dir
