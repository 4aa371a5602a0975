"""The latency gate: regressions called only when the bootstrap CI says so; refusal below min samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.report import compare, compare_samples
from harness.report.cli import compare_main, report_main
from harness.report.compare import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REGRESSION,
    CompareError,
    default_min_samples,
)

try:
    from tests.unit.report_fixtures import write_run, write_suite
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import write_run, write_suite  # type: ignore[no-redef]


def _lat(seed: int, n: int, scale: float = 1.0) -> list[float]:
    rng = np.random.default_rng(seed)
    return (rng.lognormal(np.log(40.0), 0.5, size=n) * scale).tolist()


def test_default_min_samples_leaves_ten_beyond_the_percentile() -> None:
    assert default_min_samples(99.0) == 1000
    assert default_min_samples(99.9) == 10_000
    assert default_min_samples(50.0) == 20


def test_same_distribution_passes() -> None:
    result = compare_samples([_lat(1, 4000)], [_lat(2, 4000)], resamples=500)
    assert result.verdict == "pass" and result.exit_code == EXIT_OK
    assert result.ci is not None and result.ci[0] < 0.10


def test_clear_regression_is_detected() -> None:
    result = compare_samples([_lat(1, 4000)], [_lat(2, 4000, scale=1.5)], resamples=500)
    assert result.verdict == "regression" and result.exit_code == EXIT_REGRESSION
    assert result.ci is not None and result.ci[0] > 0.10
    assert result.change == pytest.approx(0.5, abs=0.15)


def test_improvement_is_not_a_regression() -> None:
    result = compare_samples([_lat(1, 4000)], [_lat(2, 4000, scale=0.5)], resamples=500)
    assert result.verdict == "improved" and result.exit_code == EXIT_OK


def test_an_estimate_over_the_threshold_inside_the_noise_is_inconclusive_not_a_regression() -> None:
    # p99 of 1000 samples is uncertain by tens of percent: +16% measured, but the CI reaches below 0
    result = compare_samples([_lat(10, 1000)], [_lat(20, 1000, scale=1.13)], resamples=500, threshold=0.10)
    assert result.change is not None and result.change > 0.10
    assert result.ci is not None and result.ci[0] <= 0.10
    assert result.verdict == "inconclusive" and result.exit_code == EXIT_OK
    assert "noise" in result.message


def test_a_shift_below_the_threshold_is_never_a_regression() -> None:
    for seed in range(5):
        result = compare_samples([_lat(seed, 1000)], [_lat(100 + seed, 1000, scale=1.03)], resamples=300)
        assert result.verdict != "regression", result.message


def test_refuses_below_the_minimum_sample_count() -> None:
    result = compare_samples([_lat(1, 300)], [_lat(2, 300, scale=3.0)])
    assert result.verdict == "refused" and result.exit_code == EXIT_REFUSED
    assert "too few samples" in result.message and result.ci is None
    ok = compare_samples([_lat(1, 300)], [_lat(2, 300, scale=3.0)], min_samples=200, resamples=300)
    assert ok.verdict == "regression"


def test_refuses_below_the_minimum_number_of_runs() -> None:
    res = compare_samples([_lat(1, 2000)], [_lat(2, 2000, scale=2.0)], min_runs=2, resamples=200)
    assert res.verdict == "refused" and "too few runs" in res.message
    res = compare_samples([_lat(1, 2000)], [_lat(2, 2000, scale=2.0)], resamples=200)
    assert res.verdict == "regression" and any("one run on a side" in n for n in res.notes)


def test_control_bucket_flags_unequal_machine_load(runs: dict[str, Path]) -> None:
    # "slow" has a slower backend: for the gate that is indistinguishable from a loaded machine, and it says so
    (res,) = compare(runs["base"], runs["slow"], bucket="client_request_ms", percentile=50, min_samples=50,
                     resamples=200)  # fmt: skip
    assert res.control["bucket"] == "proxy_elapsed_ms" and res.control["change"] > 0.5
    assert any(n.startswith("control:") for n in res.notes)
    (same,) = compare(runs["base"], runs["base"], percentile=50, min_samples=50, resamples=200)
    assert same.control["change"] == 0.0 and not any(n.startswith("control:") for n in same.notes)


def test_repeated_runs_pooled_and_per_run() -> None:
    base = [_lat(s, 800) for s in (1, 2, 3)]
    same = [_lat(s, 800) for s in (4, 5, 6)]
    slow = [_lat(s, 800, scale=1.6) for s in (4, 5, 6)]
    for mode in ("pooled", "per-run"):
        assert compare_samples(base, same, mode=mode, resamples=300).verdict == "pass"
        res = compare_samples(base, slow, mode=mode, resamples=300)
        assert res.verdict == "regression", (mode, res.message)
        assert res.baseline_n == 2400 and res.current_n == 2400


def test_per_run_mode_widens_the_interval_when_runs_disagree() -> None:
    # one noisy-neighbour run on the current side: pooling hides it, per-run does not
    base = [_lat(s, 800) for s in (1, 2, 3)]
    cur = [_lat(4, 800), _lat(5, 800), _lat(6, 800, scale=1.8)]
    pooled = compare_samples(base, cur, mode="pooled", resamples=400)
    per_run = compare_samples(base, cur, mode="per-run", resamples=400)
    assert pooled.ci is not None and per_run.ci is not None
    assert per_run.ci[1] - per_run.ci[0] > pooled.ci[1] - pooled.ci[0]


def test_ab_mode_pairs_runs() -> None:
    a = [_lat(s, 1200) for s in (1, 2)]
    b = [_lat(s, 1200, scale=1.5) for s in (3, 4)]
    res = compare_samples(a, b, mode="ab", resamples=300)
    assert res.verdict == "regression" and res.mode == "ab"
    assert compare_samples(a, [_lat(s, 1200) for s in (3, 4)], mode="ab", resamples=300).verdict == "pass"
    with pytest.raises(CompareError):
        compare_samples(a, b[:1], mode="ab")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmp")
    kw = {"sessions": 25, "abort_rate": 0.0, "error_rate": 0.0, "timeout_rate": 0.0, "stall": None}
    return {
        "base": write_run(root / "base" / "s", seed=1, name="s", proxy_ms=40.0, **kw),
        "same": write_run(root / "same" / "s", seed=2, name="s", proxy_ms=40.0, **kw),
        "slow": write_run(root / "slow" / "s", seed=3, name="s", proxy_ms=90.0, **kw),
        "base2": write_run(root / "base2" / "s", seed=4, name="s", proxy_ms=40.0, **kw),
        "slow2": write_run(root / "slow2" / "s", seed=5, name="s", proxy_ms=90.0, **kw),
    }


def test_compare_run_folders(runs: dict[str, Path]) -> None:
    (res,) = compare(runs["base"], runs["slow"], percentile=50, min_samples=50, resamples=300)
    assert res.verdict == "regression" and res.scenario == "s"
    (res,) = compare(runs["base"], runs["same"], percentile=50, min_samples=50, resamples=300)
    assert res.verdict == "pass"
    (res,) = compare([runs["base"], runs["base2"]], [runs["slow"], runs["slow2"]], percentile=50,
                     min_samples=50, mode="per-run", resamples=200)  # fmt: skip
    assert res.verdict == "regression" and len(res.baseline_runs) == 2


def test_compare_cli_exit_codes(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, slow, same = str(runs["base"]), str(runs["slow"]), str(runs["same"])
    args = ["--percentile", "50", "--min-samples", "50", "--bootstrap", "300"]
    assert compare_main([base, slow, *args]) == EXIT_REGRESSION
    assert "REGRESSION" in capsys.readouterr().out
    assert compare_main([base, same, *args]) == EXIT_OK
    # default p99 needs 1000 samples per side: a 25-session run is too small to judge
    assert compare_main([base, slow]) == EXIT_REFUSED
    assert "too few samples" in capsys.readouterr().out
    out = tmp_path / "cmp.json"
    code = compare_main(["--baseline", base, str(runs["base2"]), "--current", slow, str(runs["slow2"]), "--ab",
                         *args, "--json", str(out)])  # fmt: skip
    assert code == EXIT_REGRESSION
    data = json.loads(out.read_text())
    assert data["exit_code"] == 1 and data["comparisons"][0]["mode"] == "ab"
    assert compare_main([base, slow, "--bucket", "nope_ms", *args]) == EXIT_BAD_INPUT
    assert compare_main([base, str(tmp_path / "missing")]) == EXIT_BAD_INPUT
    assert compare_main([base, slow, *args, "--min-runs", "2"]) == EXIT_REFUSED
    assert compare_main([base]) == EXIT_BAD_INPUT


def test_repeated_runs_folder_and_variant_suite_grouping(tmp_path: Path) -> None:
    from harness.report.compare import resolve_runs

    for i in (1, 2, 3):  # reports/baselines/s/run-N: repeats of one scenario
        write_run(tmp_path / "baselines" / "s" / f"run-{i}", seed=i, name="s", sessions=3)
    for v in ("default", "lock_restore"):  # one scenario, one run per variant: different runs
        write_run(tmp_path / "latest" / f"s@{v}", seed=7, name="s", sessions=3,
                  variants=[] if v == "default" else [v])  # fmt: skip
    repeats = resolve_runs([tmp_path / "baselines" / "s"])
    assert list(repeats) == ["s"] and len(repeats["s"]) == 3
    suite = resolve_runs([tmp_path / "latest"])
    assert sorted(suite) == ["s@default", "s@lock_restore"]
    pooled = resolve_runs([tmp_path / "latest" / "s@default", tmp_path / "latest" / "s@default"])
    assert len(pooled["s@default"]) == 2


def test_compare_suites_scenario_by_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_suite(tmp_path / "baseline", seed=1, sessions=6)
    write_suite(tmp_path / "latest", seed=2, sessions=6)
    results = compare(tmp_path / "baseline", tmp_path / "latest", percentile=50, min_samples=20, resamples=200)
    assert [r.scenario for r in results] == ["abort_retry", "clean", "lock_restore"]
    assert report_main([str(tmp_path / "latest")]) == 1  # report exits with the verdict: the suite holds invalid runs
    assert (tmp_path / "latest" / "report.html").exists()
    assert (tmp_path / "latest" / "clean" / "summary.json").exists()
    assert report_main([str(tmp_path / "nowhere")]) == EXIT_BAD_INPUT


def test_broken_run_folder_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "r"
    bad.mkdir()
    (bad / "scenario.json").write_text('{"name": "r"}')
    (bad / "history.jsonl").write_text("{not json\n")
    assert report_main([str(bad)]) == EXIT_BAD_INPUT
    assert compare_main([str(bad), str(bad)]) == EXIT_BAD_INPUT
