"""The gate judges every bucket in one call, each with a relative threshold AND an absolute floor.

Synthetic run folders (a scenario.json and chat_done lines), so these run in well under a second
each; the same gate on a real server variant is tests/integration/test_gate_lock_wait.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cli import main as harness
from harness.report.cli import compare_main
from harness.report.compare import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REGRESSION,
    compare_samples,
    gate_verdict,
)
from harness.scenario import GATE_BUCKETS, BucketGate, ScenarioError, parse_scenario


def _write(run: Path, rows: list[dict[str, float]], *, gate: dict[str, Any] | None = None, sim: bool = False) -> Path:
    """A run folder with only what the gate reads: scenario.json and the server's chat_done lines."""
    run.mkdir(parents=True)
    scenario: dict[str, Any] = {"name": "s", "target": {"variants": []}}
    if gate is not None:
        scenario["gate"] = gate
    (run / "scenario.json").write_text(json.dumps(scenario))
    (run / "history.jsonl").write_text("")
    lines = [
        json.dumps({"event": "chat_done", "outcome": "committed", "req_id": f"r{i}", **r}) for i, r in enumerate(rows)
    ]
    (run / "server_logs.jsonl").write_text("\n".join(lines) + "\n")
    if sim:
        (run / "sim.json").write_text(json.dumps({"seed": 1}))
    return run


def _rows(seed: int, n: int = 1500, *, slow_locks: float = 0.0, lock_ms: float = 13.0) -> list[dict[str, float]]:
    """Plausible buckets; ``slow_locks`` of the requests wait ``lock_ms`` for their session lock."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # every draw is made whatever slow_locks is: the same seed gives the same other buckets
        lock, draw, jitter = float(rng.uniform(0.0005, 0.002)), rng.random(), float(rng.uniform(0.9, 1.1))
        if draw < slow_locks:
            lock = lock_ms * jitter
        tin, tout = float(rng.lognormal(np.log(3.0), 0.3)), float(rng.lognormal(np.log(2.0), 0.3))
        proxy = float(rng.lognormal(np.log(40.0), 0.6))
        out.append(
            {
                "lock_wait_ms": lock,
                "tokenize_in_ms": tin,
                "proxy_elapsed_ms": proxy,
                "tokenize_out_ms": tout,
                "total_ms": lock + tin + proxy + tout,
            }
        )
    return out


# ------------------------------------------------------------------ the floor


def test_a_near_zero_bucket_jumping_to_milliseconds_is_a_regression_but_its_noise_is_not() -> None:
    base = [[0.001] * 1200]
    jumped = [[0.001] * 1170 + [13.0] * 30]  # 2.5% of requests now wait 13 ms: p99 0.001 -> 13 ms
    noisy = [[0.001] * 1170 + [0.3] * 30]  # +30000% relative, 0.3 ms absolute: noise around 0
    for mode in ("exact", "pooled"):
        kw: dict[str, Any] = {"bucket": "lock_wait_ms", "floor_ms": 1.0, "mode": mode, "resamples": 300}
        hit = compare_samples(base, jumped, **kw)
        assert hit.verdict == "regression", (mode, hit.message)
        assert hit.abs_change_ms == pytest.approx(12.999)
        calm = compare_samples(base, noisy, **kw)
        assert calm.verdict == "pass" and "within the absolute floor" in calm.message, (mode, calm.message)
        # without a floor the relative threshold alone calls the noise a regression: the floor is what decides
        assert compare_samples(base, noisy, **{**kw, "floor_ms": 0.0}).verdict == "regression"


def test_the_floor_does_not_hide_a_relative_regression_of_a_large_bucket() -> None:
    rng = np.random.default_rng(3)
    base = [(rng.lognormal(np.log(200.0), 0.3, 2000)).tolist()]
    slow = [(rng.lognormal(np.log(200.0), 0.3, 2000) * 1.5).tolist()]
    res = compare_samples(base, slow, floor_ms=2.0, resamples=300)
    assert res.verdict == "regression" and res.abs_ci_ms is not None and res.abs_ci_ms[0] > 2.0


# ------------------------------------------------------------- every bucket


def test_one_call_judges_every_bucket_and_catches_a_lock_wait_only_regression(tmp_path: Path) -> None:
    base = _write(tmp_path / "base" / "s", _rows(1))
    same = _write(tmp_path / "same" / "s", _rows(2))
    locks = _write(tmp_path / "locks" / "s", _rows(2, slow_locks=0.03))
    ok = gate_verdict(base, same, resamples=300)
    assert ok.verdict == "pass" and ok.exit_code == EXIT_OK
    assert [c.bucket for c in ok.comparisons] == list(GATE_BUCKETS)
    res = gate_verdict(base, locks, resamples=300)
    assert res.verdict == "regression" and res.exit_code == EXIT_REGRESSION
    verdicts = {c.bucket: c.verdict for c in res.comparisons}
    assert verdicts["lock_wait_ms"] == "regression"
    assert verdicts["total_ms"] != "regression"  # 3% of requests 13 ms slower: total p99 barely moves
    assert [c.bucket for c in res.regressions] == ["lock_wait_ms"]
    data = res.to_json()
    assert data["exit_code"] == 1 and len(data["comparisons"]) == len(GATE_BUCKETS)


def test_the_scenario_gate_sets_each_buckets_bounds_and_the_cli_overrides_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _write(tmp_path / "base" / "s", _rows(1))
    lenient = {"buckets": {b: {"percentile": 99, "threshold": 0.1, "floor_ms": 50.0} for b in GATE_BUCKETS}}
    locks = _write(tmp_path / "locks" / "s", _rows(2, slow_locks=0.03), gate=lenient)
    assert gate_verdict(base, locks, resamples=300).verdict == "pass"  # a 13 ms rise is within the 50 ms floor
    args = [str(base), str(locks), "--bootstrap", "300"]
    assert compare_main([*args, "--floor-ms", "lock_wait_ms=1"]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    for b in GATE_BUCKETS:  # every bucket's verdict is listed
        assert f"s {b} p99" in out
    assert "[REGRESSION] s lock_wait_ms" in out and "REGRESSION: regression in s lock_wait_ms" in out
    assert compare_main([*args, "--floor-ms", "1", "--bucket", "total_ms"]) == EXIT_OK
    assert compare_main([*args, "--floor-ms", "1", "--threshold", "lock_wait_ms=1e9"]) == EXIT_OK
    json_out = tmp_path / "gate.json"
    assert compare_main([*args, "--floor-ms", "1", "--json", str(json_out)]) == EXIT_REGRESSION
    assert json.loads(json_out.read_text())["verdict"] == "regression"


def test_exit_codes_refused_regression_pass_bad_input(tmp_path: Path) -> None:
    base = _write(tmp_path / "base" / "s", _rows(1))
    small = _write(tmp_path / "small" / "s", _rows(2, n=300, slow_locks=0.05))
    res = gate_verdict(base, small, resamples=300)
    assert res.verdict == "refused" and res.exit_code == EXIT_REFUSED  # 300 samples cannot judge p99
    assert all(c.verdict == "refused" for c in res.comparisons)
    bad = gate_verdict(base, tmp_path / "missing")
    assert bad.verdict == "bad_input" and bad.exit_code == EXIT_BAD_INPUT and "no such folder" in bad.message
    assert gate_verdict(base, small, buckets=["nope_ms"]).exit_code == EXIT_BAD_INPUT
    assert gate_verdict(base, small, floors={"client_turn_ms": 1.0}).exit_code == EXIT_BAD_INPUT  # not judged
    assert compare_main([str(base), str(small), "--bucket", "nope_ms"]) == EXIT_BAD_INPUT
    for flag in (["--threshold", "nope_ms=1"], ["--floor-ms", "-1"], ["--threshold", "x"]):
        with pytest.raises(SystemExit) as exc:
            compare_main([str(base), str(small), *flag])
        assert exc.value.code == EXIT_BAD_INPUT


def test_deterministic_runs_are_judged_exactly_per_bucket(tmp_path: Path) -> None:
    base = _write(tmp_path / "base" / "s", _rows(1), sim=True)
    same = _write(tmp_path / "same" / "s", _rows(1), sim=True)
    locks = _write(tmp_path / "locks" / "s", _rows(1, slow_locks=0.03), sim=True)
    ok = gate_verdict(base, same)
    assert ok.verdict == "pass" and {c.mode for c in ok.comparisons} == {"exact"}
    assert all(c.change == 0.0 for c in ok.comparisons)
    assert [c.bucket for c in gate_verdict(base, locks).regressions] == ["lock_wait_ms"]


# -------------------------------------------------------------- [gate] table


def test_gate_table_defaults_and_per_bucket_bounds() -> None:
    sc = parse_scenario({}, "s.toml")
    assert list(sc.gate.buckets) == list(GATE_BUCKETS)
    assert all(g == BucketGate() for g in sc.gate.buckets.values())
    sc = parse_scenario(
        {
            "gate": {
                "threshold": 0.25,
                "floor_ms": 2,
                "buckets": ["lock_wait_ms", "total_ms"],
                "lock_wait_ms": {"floor_ms": 1},
            }
        },
        "s.toml",
    )
    assert sc.gate.buckets == {
        "lock_wait_ms": BucketGate(99.0, 0.25, 1.0),
        "total_ms": BucketGate(99.0, 0.25, 2.0),
    }
    assert sc.to_plain()["gate"]["buckets"]["lock_wait_ms"]["floor_ms"] == 1.0


@pytest.mark.parametrize(
    ("gate", "key", "fix"),
    [
        ({"treshold": 0.1}, "gate.treshold", "did you mean 'threshold'?"),
        ({"lock_wait_ms": {"flor_ms": 1}}, "gate.lock_wait_ms.flor_ms", "did you mean 'floor_ms'?"),
        ({"buckets": ["totl_ms"]}, "gate.buckets", "did you mean 'total_ms'?"),
        ({"buckets": []}, "gate.buckets", "judges nothing"),
        ({"buckets": ["total_ms"], "lock_wait_ms": {}}, "gate.lock_wait_ms", "add it to gate.buckets"),
        ({"threshold": -0.1}, "gate.threshold", "must be >= 0"),
        ({"floor_ms": "1ms"}, "gate.floor_ms", "expected a number"),
        ({"percentile": 100}, "gate.percentile", "must be <= 99.99"),
        ({"total_ms": 3}, "gate.total_ms", "expected a table"),
    ],
)
def test_bad_gate_keys_name_file_key_and_fix(gate: dict[str, Any], key: str, fix: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"gate": gate}, "s.toml")
    assert exc.value.file == "s.toml" and exc.value.key == key and fix in exc.value.message


def test_a_bad_gate_key_fails_harness_run_with_exit_2_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "g.toml"
    f.write_text('name = "g"\n[gate]\nfloor = 1\n')
    assert harness(["run", str(f), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "g.toml: key 'gate.floor': unknown key" in err and "floor_ms" in err
    assert not (tmp_path / "out").exists()
