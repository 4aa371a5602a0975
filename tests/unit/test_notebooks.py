"""Execute the analysis notebooks against a synthetic run folder, so they never rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from tests.unit.report_fixtures import write_run, write_suite
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from report_fixtures import write_run, write_suite  # type: ignore[no-redef]

if os.environ.get("CI"):  # in CI a missing dev extra must fail, not skip: the notebook would rot unseen
    import nbclient
    import nbformat
    from traitlets.config import Config
else:
    _why = "install the dev extras: pip install -e '.[dev]'"
    nbformat = pytest.importorskip("nbformat", reason=_why)
    nbclient = pytest.importorskip("nbclient", reason=_why)
    Config = pytest.importorskip("traitlets.config", reason=_why).Config

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _execute(path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> nbformat.NotebookNode:
    monkeypatch.setenv("HARNESS_RUN_DIR", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    # IPC transport: the kernel talks over Unix sockets in tmp_path, no TCP port is opened
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(tmp_path / "kernel")
    client = nbclient.NotebookClient(
        nb,
        config=config,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


@pytest.mark.slow  # a kernel start: ~3 s alone, over 10 s on a loaded 2-core box
def test_latency_buckets_notebook_runs_on_a_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = write_run(tmp_path / "abort_retry", seed=9, name="abort_retry", sessions=20, processes=3)
    nb = _execute(NOTEBOOKS / "latency_buckets.ipynb", run_dir, monkeypatch, tmp_path)
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5 + 2  # the report's five plots, then the notebook's own
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"run folder: {run_dir}" in text
    assert "scenario 'abort_retry'" in text
    assert list(run_dir.glob("summary.json")) == []  # the notebook only reads the run folder


@pytest.mark.slow
def test_latency_buckets_notebook_takes_a_suite_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite(tmp_path / "latest", seed=1, sessions=8)
    nb = _execute(NOTEBOOKS / "latency_buckets.ipynb", suite, monkeypatch, tmp_path)
    text = "".join(o.get("text", "") for o in _outputs(nb) if o.get("output_type") == "stream")
    assert f"run folder: {suite / 'abort_retry'}" in text
