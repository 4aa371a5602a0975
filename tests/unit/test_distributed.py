"""``--ray``: explore gives the failing seed, digests and shrunk file of ``--jobs``; a model sweep its points (#15).

One private Ray head (2 CPUs, 127.0.0.1) for the module; skipped cleanly when Ray is not installed
(``pip install -e '.[ray]'``; ``make test`` installs it). Slow: the head's start costs ~5-16 s.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.sim.cli import explore_main
from harness.sim.explore import explore

pytestmark = pytest.mark.slow

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture(scope="module")
def head() -> Iterator[Any]:
    pytest.importorskip("ray")
    from harness.distributed.pool import RayPool

    pool = RayPool(None, 2)  # explore's own RayPool finds this head and leaves it running
    try:
        yield pool
    finally:
        pool.shutdown()


def test_the_local_head_listens_on_loopback_only(head: Any) -> None:
    import ipaddress
    import shutil

    if shutil.which("ss") is None:
        pytest.skip("no ss (iproute2) to list listening sockets")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    ray_lines = [ln for ln in out.splitlines() if any(p in ln for p in ('"gcs_server"', '"raylet"', '"ray::'))]
    assert any('"gcs_server"' in ln for ln in ray_lines), out  # the head is up and listening
    for ln in ray_lines:
        ip = ipaddress.ip_address(ln.split()[3].rsplit(":", 1)[0].strip("[]"))
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        assert ip.is_loopback, ln


def test_ray_gives_the_results_of_jobs(head: Any) -> None:
    path = str(SCENARIOS / "duplicate_inflight_retry.toml")
    local = explore(path, range(6), "random", variant="no_num_assistant_guard", jobs=2, stop_on_first=False)
    ray = explore(path, range(6), "random", variant="no_num_assistant_guard", jobs=2, stop_on_first=False, ray="local")

    def key(rs: list[Any]) -> list[tuple[Any, ...]]:
        return [(r.seed, r.status, r.history_digest, r.trace_digest) for r in rs]

    assert key(ray) == key(local)
    assert any(r.flagged for r in local)  # a known-bad variant: the comparison covers a failure


def test_explore_cli_on_ray_finds_the_same_seed_digest_and_shrunk_file(
    head: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = tmp_path / "found"  # one folder: the shrunk file names it in its reproduce line

    def run(extra: list[str], where: str) -> tuple[str, str, str]:
        argv = ["delete_during_proxy", "--seeds", "6", "--jobs", "2", "--variant", "no_closing_recheck"]
        argv += ["--max-shrink-runs", "20", "--out", str(tmp_path / where / "sim"), "--found-dir", str(found)]
        assert explore_main([*argv, *extra]) == 1
        out = capsys.readouterr().out
        seed = re.search(r"VIOLATION at seed (\d+)", out)
        digest = re.search(r"digest: history (\w+)\s+trace (\w+)", out)
        assert seed and digest, out
        (shrunk,) = found.glob("delete_during_proxy-*.toml")
        text = shrunk.read_text()
        shrunk.unlink()  # ours: the next run writes the same name
        return seed.group(1), digest.group(0), text

    assert run(["--ray"], "ray") == run([], "jobs")


def test_model_sweep_on_ray_gives_the_points_of_a_serial_sweep(head: Any, tmp_path: Path) -> None:
    from harness.model.cli import main as model_main

    argv = [str(SCENARIOS / "abort_retries_exhausted.toml"), "--sweep", "--sweep-processes", "1,2"]
    argv += ["--sweep-agents", "4", "--sessions", "20"]
    assert model_main([*argv, "--out", str(tmp_path / "serial")]) == 0
    assert model_main([*argv, "--ray", "--out", str(tmp_path / "ray")]) == 0
    serial = json.loads((tmp_path / "serial" / "sweep.json").read_text())
    ray = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert len(serial["points"]) == 2 and ray == serial
