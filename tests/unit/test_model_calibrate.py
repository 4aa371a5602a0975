"""Calibration recovers known costs from synthetic chat_done lines, and round-trips through JSON."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.model import Costs, ModelParams, calibrate, load_calibration, run_model
from harness.model._params import ParamsError
from harness.rundata import RunData

TRUE = {
    "tokenize_in": (0.5, 0.004),  # ms, ms per prompt token
    "tokenize_out": (0.3, 0.02),  # per completion token
    "http": (0.4, 0.001),
    "proxy": (2.0, 0.003),
}


def synthetic_lines(
    n_sessions: int = 60, turns: int = 6, noise: float = 0.05, tail: float = 0.0, seed: int = 1
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """chat_done lines of sessions whose prompts grow turn by turn; costs linear + noise (+ a contention tail)."""
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = []
    drawn: dict[str, float] = {}

    def cost(name: str, x: float) -> float:
        a, b = TRUE[name]
        v = (a + b * x) * (1 + rng.uniform(-noise, noise))
        if tail and rng.random() < 0.15:
            v += rng.uniform(0, tail)
        return v

    k = 0
    for s in range(n_sessions):
        prompt = 40 + rng.randrange(5)
        for _ in range(turns):
            completion = rng.randint(4, 60)
            backend = rng.uniform(10, 50)
            ti, to, http = cost("tokenize_in", prompt), cost("tokenize_out", completion), cost("http", prompt)
            px = backend + cost("proxy", prompt)
            caller = f"c{k:07x}"
            drawn[caller] = backend
            lines.append(
                {
                    "event": "chat_done",
                    "ts": float(k),
                    "req_id": f"{k:08x}",
                    "session_id": f"s{s}",
                    "caller_request_id": caller,
                    "status": 200,
                    "outcome": "committed",
                    "lock_wait_ms": 0.0,
                    "tokenize_in_ms": ti,
                    "proxy_elapsed_ms": px,
                    "tokenize_out_ms": to,
                    "total_ms": ti + px + to + http,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                }
            )
            k += 1
            prompt += completion + 12
    lines.append({"event": "heartbeat", "rss_mb": 1.0})
    lines.append({"event": "chat_done", "outcome": "not_found", "total_ms": 0.1})
    return lines, drawn


@pytest.mark.parametrize("method", ["ols", "median"])
def test_calibration_recovers_known_costs(method: str) -> None:
    lines, drawn = synthetic_lines()
    cal = calibrate(lines, backend_latency_ms=drawn, method=method)
    for name, (a, b) in TRUE.items():
        f = cal.fits[name]
        assert f.intercept_ms == pytest.approx(a, rel=0.15, abs=0.03), name
        assert f.slope_ms == pytest.approx(b, rel=0.15), name
        assert f.r2 > 0.8, name
        assert f.n == 360
    c = cal.costs
    assert c.tokenize_in_ms == pytest.approx(0.5, abs=0.05)
    assert c.tokenize_out_per_token_ms == pytest.approx(0.02, rel=0.1)
    assert cal.tokens.turn_tokens == 12
    assert cal.tokens.first_prompt_tokens in range(40, 45)


def test_median_fit_ignores_a_contention_tail_that_ols_absorbs() -> None:
    lines, drawn = synthetic_lines(tail=20.0, n_sessions=100)
    med = calibrate(lines, backend_latency_ms=drawn, method="median")
    ols = calibrate(lines, backend_latency_ms=drawn, method="ols")
    a = TRUE["tokenize_in"][0]
    assert abs(med.costs.tokenize_in_ms - a) < abs(ols.costs.tokenize_in_ms - a)
    assert med.costs.tokenize_in_ms == pytest.approx(a, abs=0.4)
    # the tail is kept as residual noise for the model to draw from
    assert max(med.fits["tokenize_in"].residuals) > 10


def test_without_backend_latencies_the_proxy_keeps_its_base_cost() -> None:
    lines, _ = synthetic_lines()
    cal = calibrate(lines, base=Costs(proxy_ms=7.0))
    assert cal.costs.proxy_ms == 7.0
    assert any("proxy overhead not fitted" in n for n in cal.notes)


def test_save_load_plot_and_apply(tmp_path: Path) -> None:
    lines, drawn = synthetic_lines()
    cal = calibrate(lines, backend_latency_ms=drawn)
    path = cal.save(tmp_path / "calibration.json")
    data = json.loads(path.read_text())
    assert set(data["fits"]) == {"tokenize_in", "tokenize_out", "http", "proxy", "client"}
    assert {"intercept_ms", "slope_ms_per_token", "r2", "n", "residual_quantiles_ms"} <= set(data["fits"]["http"])
    back = load_calibration(path)
    assert back.costs == cal.costs
    assert back.tokens == cal.tokens
    png = cal.plot(tmp_path / "calibration.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "tokenize_in" in cal.table()
    p = cal.apply(ModelParams())
    assert p.costs == cal.costs
    assert p.noise["tokenize_in"] == cal.fits["tokenize_in"].residuals
    assert run_model(p).requests > 0
    assert cal.apply(ModelParams(), noise=False).noise == {}


def test_calibrate_a_run_folder_joins_backend_and_client_times(tmp_path: Path) -> None:
    lines, drawn = synthetic_lines(n_sessions=10)
    execs = {"k": [{"request_id": c, "latency_ms": ms} for c, ms in drawn.items()]}
    history = []
    for i, ln in enumerate(x for x in lines if x.get("outcome") == "committed"):
        history.append({"type": "invoke", "f": "chat", "op": i, "time": 10.0 * i})
        t1 = 10.0 * i + (ln["total_ms"] + 5.0) / 1000.0
        history.append({"type": "ok", "f": "chat", "op": i, "time": t1, "headers": {"x-req-id": ln["req_id"]}})
    scenario = {"backend": {"generation": {"min_words": 3, "max_words": 24}}, "target": {"server_args": []}}
    RunData(scenario=scenario, history=history, backend_executions=execs, server_logs=lines).save(tmp_path)
    cal = calibrate(tmp_path)
    assert cal.tokenize_in_thread is True
    assert cal.fits["proxy"].n == 60
    assert cal.fits["client"].n == 60
    assert cal.costs.client_ms == pytest.approx(5.0 - Costs().untimed_ms, abs=0.05)
    # thread mode: the thread hop is taken out of the tokenization intercept (the model adds it back)
    assert cal.costs.tokenize_in_ms == pytest.approx(max(0.0, cal.fits["tokenize_in"].intercept_ms - 0.4))


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="method"):
        calibrate([], method="mean")
    with pytest.raises(ParamsError, match="not a run folder"):
        calibrate(tmp_path)
    cal = calibrate([])
    assert cal.costs == Costs()
    assert any("no committed chat_done" in n for n in cal.notes)


def stalled_lines(
    rate: float = 0.5, stall_ms: float = 40.0, seconds: float = 300.0, lanes: int = 4, seed: int = 7
) -> tuple[list[dict[str, Any]], dict[str, float], int]:
    """``lanes`` agents back to back on one process; Poisson stalls delay every request in flight."""
    rng = random.Random(seed)
    stalls: list[float] = []
    t = rng.expovariate(rate)
    while t < seconds:
        stalls.append(t)
        t = rng.expovariate(rate) + t
    lines: list[dict[str, Any]] = []
    drawn: dict[str, float] = {}
    k = 0
    for lane in range(lanes):
        t = rng.uniform(0, 0.05)
        while t < seconds:
            backend = rng.uniform(20, 60)
            dur = (backend + rng.uniform(3, 6)) / 1000.0
            hit = sum(1 for s in stalls if t <= s < t + dur)
            dur += hit * stall_ms / 1000.0
            caller = f"c{k:07x}"
            drawn[caller] = backend
            total = dur * 1000.0
            lines.append(
                {
                    "event": "chat_done",
                    "ts": t + dur,
                    "pid": 11,
                    "req_id": f"{k:08x}",
                    "session_id": f"s{lane}",
                    "caller_request_id": caller,
                    "outcome": "committed",
                    "lock_wait_ms": 0.0,
                    "tokenize_in_ms": 0.5,
                    "proxy_elapsed_ms": total - 2.0,
                    "tokenize_out_ms": 0.5,
                    "total_ms": total,
                    "prompt_tokens": 50,
                    "completion_tokens": 10,
                }
            )
            k += 1
            t += dur + rng.uniform(0.0, 0.002)
    return lines, drawn, len(stalls)


def test_calibration_recovers_a_synthetic_stall_rate_and_duration() -> None:
    lines, drawn, n = stalled_lines()
    cal = calibrate(lines, backend_latency_ms=drawn)
    sf = cal.stall_fit
    assert n > 100
    assert sf.events == pytest.approx(n, rel=0.15)
    assert sf.rate_per_s == pytest.approx(0.5, rel=0.2)
    assert statistics.median(sf.durations_ms) == pytest.approx(40.0, rel=0.15)
    assert sf.stalled_requests > sf.events  # several requests in flight share each stall
    assert "stalls:" in cal.table()
    p = cal.apply(ModelParams())
    assert p.stalls.enabled and p.stalls.rate_per_s == sf.rate_per_s
    assert not cal.apply(ModelParams(), stalls=False).stalls.enabled


def test_no_stalls_found_in_calm_lines_and_the_fit_round_trips(tmp_path: Path) -> None:
    lines, drawn = synthetic_lines()
    cal = calibrate(lines, backend_latency_ms=drawn)
    assert cal.stall_fit.events == 0
    assert not cal.apply(ModelParams()).stalls.enabled
    assert "stalls: none" in cal.table()
    lines, drawn, _ = stalled_lines(seconds=60.0)
    cal = calibrate(lines, backend_latency_ms=drawn)
    back = load_calibration(cal.save(tmp_path / "calibration.json"))
    assert back.stall_fit == cal.stall_fit
