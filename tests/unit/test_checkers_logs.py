"""Log checks and report buckets decided from text logs; log_consistency judges only the server's own time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_checkers_builders import RunBuilder, clean_run

from harness.checkers import CHECKERS, Verdict
from harness.report.buckets import extract
from harness.rundata import RunData
from harness.serverlog import LogConfig, parse_lines, read_server_logs
from reference_impl.logs import TextLineSink


def run_one(run: RunData, name: str) -> Verdict:
    return CHECKERS[name].check(run)


def kinds(v: Verdict) -> set[str]:
    return {x.kind for x in v.violations}


def as_text(lines: list[dict[str, Any]], rename: dict[str, str] | None = None) -> list[str]:
    """The lines as a Python-logging server prints them (reference --log-format text), names optionally theirs."""
    sink = TextLineSink()
    out = []
    for ln in lines:
        theirs = {(rename or {}).get(k, k): v for k, v in ln.items()}
        out.append(sink.format(theirs))
    return out


def reread(run: RunData, text: list[str], config: LogConfig | None = None) -> RunData:
    events, stats = parse_lines(text, "server.log", config)
    assert not stats.skipped, stats.summary()
    run.server_logs = [ev for ev, _ in events]
    return run


def one_chat(total: float, proxy: float, read_body: float | None) -> RunData:
    b = RunBuilder()
    sid = b.create()
    t = b.tick()
    b.chat(sid, 0, t0=t, t1=t + total / 1000.0)
    run = b.build()
    done = next(ln for ln in run.server_logs if ln["event"] == "chat_done")
    done["total_ms"], done["proxy_elapsed_ms"] = total, proxy
    if read_body is None:
        del done["read_body_ms"]
    else:
        done["read_body_ms"] = read_body
    return run


# ------------------------------------------------------------- the server's own handling


def test_a_slow_client_body_is_the_clients_time_not_a_server_fault() -> None:
    # 1,100 ms total, 180 ms at the backend, 900 ms waiting for the client to finish sending its body
    v = run_one(one_chat(1100.0, 180.0, 900.0), "log_consistency")
    assert v.status == "valid", v
    assert "slow client: 1 request body(ies)" in v.notes and "max 900 ms" in v.notes


def test_time_missing_from_the_servers_own_handling_is_reported_not_a_violation() -> None:
    """A CPU-starved correct server waits between its phases: time in no bucket is no protocol violation (#16)."""
    v = run_one(one_chat(1100.0, 180.0, 0.2), "log_consistency")
    assert v.status == "valid" and not v.violations
    assert "of the server's own handling in no bucket" in v.notes


def test_a_server_that_does_not_time_its_body_read_leaves_it_unknown_not_invalid() -> None:
    v = run_one(one_chat(1100.0, 180.0, None), "log_consistency")
    assert v.status == "valid" and not v.violations
    assert "read_body_ms" in v.notes
    # ... but buckets that add up to more than total_ms are wrong whoever was slow
    run = one_chat(100.0, 180.0, None)
    assert kinds(run_one(run, "log_consistency")) == {"buckets_exceed_total"}
    # and a small gap needs no body timing at all
    assert run_one(one_chat(200.0, 180.0, None), "log_consistency").status == "valid"


def test_body_read_counts_toward_the_total_it_is_part_of() -> None:
    assert kinds(run_one(one_chat(200.0, 150.0, 100.0), "log_consistency")) == {"buckets_exceed_total"}


# ------------------------------------------------------------- decided from text logs


def test_log_checks_decide_the_same_from_text_logs() -> None:
    run = clean_run().build()
    json_verdicts = {n: run_one(run, n) for n in ("log_consistency", "leaks", "ownership", "stale_writers")}
    assert all(v.status == "valid" for v in json_verdicts.values()), json_verdicts
    reread(run, as_text(run.server_logs))
    for name, before in json_verdicts.items():
        after = run_one(run, name)
        assert (after.status, after.notes) == (before.status, before.notes), name


def test_an_inflight_leak_is_flagged_from_text_logs_with_their_names() -> None:
    run = clean_run().build(inflight_leak_after="error")
    rename = {"req_id": "request_id", "total_ms": "latency_ms", "inflight_now": "in_flight"}
    text = as_text(run.server_logs, rename)
    done = next(t for t in text if " chat_done " in t)
    assert "request_id=" in done and " req_id=" not in done and "latency_ms=" in done
    mapping = LogConfig(fields={v: k for k, v in rename.items()})
    assert "inflight_drift" in kinds(run_one(reread(run, text, mapping), "log_consistency"))
    # without the mapping, the request ids are not where the checker looks: it cannot pass
    assert run_one(reread(run, text), "log_consistency").status != "valid"


def test_report_server_buckets_from_text_logs() -> None:
    run = clean_run().build()
    before = extract(run)
    reread(run, as_text(run.server_logs))
    after = extract(run)
    assert len(after.server) == len(before.server) > 0
    for bucket in ("lock_wait_ms", "proxy_elapsed_ms", "total_ms"):
        assert after.values(bucket) == before.values(bucket) and all(v is not None for v in after.values(bucket))
    assert [r.process for r in after.server] == [r.process for r in before.server]


def test_a_server_that_names_its_port_only_at_chat_start_is_one_process(tmp_path: Path) -> None:
    """The foreign server's habit: ``worker_port`` in ``chat_start``, not in ``chat_done``."""
    run = clean_run().build()
    stripped = [
        {k: v for k, v in ln.items() if not (k == "worker_port" and ln["event"] != "chat_start")}
        for ln in run.server_logs
    ]
    log = tmp_path / "server.log"
    log.write_text("\n".join(as_text(stripped)) + "\n")
    run.server_logs, stats = read_server_logs([log])
    assert not stats.skipped
    v = run_one(run, "log_consistency")
    assert v.status == "valid", v


def test_a_caller_request_id_said_only_at_chat_start_still_joins_the_history() -> None:
    run = clean_run().build()
    for ln in run.server_logs:
        if ln["event"] == "chat_done":
            del ln["caller_request_id"]
    for op in run.history:  # and the server sends no x-req-id header either
        (op.get("headers") or {}).pop("x-req-id", None)
    v = run_one(run, "log_consistency")
    assert v.status == "valid", v
    assert "13 joined to the history" in v.notes


def test_a_negative_timing_bucket_is_a_violation_though_the_sum_still_fits() -> None:
    """A sign error (lock_wait_ms - wait) makes the sum smaller: only a bucket-by-bucket check sees it."""
    run = one_chat(200.0, 150.0, 10.0)
    done = next(ln for ln in run.server_logs if ln["event"] == "chat_done")
    done["lock_wait_ms"] = -12.5
    v = run_one(run, "log_consistency")
    assert kinds(v) == {"negative_bucket"}, v
    assert "lock_wait_ms=-12.5" in v.violations[0].message
    # a zero logged as -0.0 is no duration below 0
    done["lock_wait_ms"] = -0.0
    assert run_one(run, "log_consistency").status == "valid"
