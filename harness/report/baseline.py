"""``harness baseline RUN_DIR... --to reports/baselines/NAME``: save green runs as a CI baseline.

A baseline is committed to git, so it keeps only what the latency gate reads
(``scenario.json``, ``history.jsonl``, ``server_logs.jsonl``) plus what a
reviewer reads (``summary.json``, ``report.md``, ``verdicts.json``). The
history loses the ``body`` fields (full session states collected before a
DELETE, megabytes of token ids the gate never looks at). Before it returns,
the copy is read back and its latency samples are checked to equal the
source's, so a baseline can never silently measure something else.

Only runs whose every checker said ``valid`` are accepted: a baseline of a
broken server is a baseline of the wrong thing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from harness.report.buckets import extract
from harness.report.scan import lean_run
from harness.rundata import RUN_FILES

__all__ = ["BaselineError", "baseline_main", "save_baseline"]

KEEP = (RUN_FILES["scenario"], RUN_FILES["server_logs"], RUN_FILES["verdicts"], "summary.json", "report.md", "sim.json")
DROPPED_FIELDS = ("body",)


class BaselineError(ValueError):
    """A run that cannot serve as a baseline, and why."""


def _check_green(run_dir: Path) -> None:
    path = run_dir / RUN_FILES["verdicts"]
    if not (run_dir / RUN_FILES["history"]).exists():
        raise BaselineError(f"{run_dir}: not a run folder (no {RUN_FILES['history']})")
    if not path.exists():
        raise BaselineError(f"{run_dir}: no {RUN_FILES['verdicts']}; run the checkers first (harness check)")
    bad = [v.get("checker") for v in json.loads(path.read_text()) if v.get("status") != "valid"]
    if bad:
        raise BaselineError(f"{run_dir}: not every checker is valid ({', '.join(map(str, bad))}); fix the run first")


def _copy_run(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in KEEP:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    with (src / RUN_FILES["history"]).open() as fin, (dst / RUN_FILES["history"]).open("w") as fout:
        for line in fin:
            if not line.strip():
                continue
            ev = json.loads(line)
            for field in DROPPED_FIELDS:
                ev.pop(field, None)
            fout.write(json.dumps(ev, sort_keys=True) + "\n")
    a, b = extract(lean_run(src)), extract(lean_run(dst))
    if a.server != b.server or a.requests != b.requests or a.turns != b.turns:
        raise BaselineError(f"{dst}: the copy's latency samples differ from {src}'s (a bug in the copy)")


def save_baseline(runs: list[Path], dest: Path, *, force: bool = False) -> list[Path]:
    """Copy green runs into ``dest`` (one run: ``dest`` itself; several: ``dest/run-1`` ...)."""
    if not runs:
        raise BaselineError("no run folders given")
    for r in runs:
        _check_green(r)
    if dest.exists():
        if not force:
            raise BaselineError(f"{dest} exists; pass --force to replace it (and say why in the commit)")
        shutil.rmtree(dest)
    targets = [dest] if len(runs) == 1 else [dest / f"run-{i}" for i in range(1, len(runs) + 1)]
    for src, dst in zip(runs, targets, strict=True):
        _copy_run(src, dst)
    return targets


def baseline_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="harness baseline",
        description="Save green run folders as a committed latency baseline (what harness compare gates on).",
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run folders of one scenario (repeat runs for a steadier gate)"
    )
    parser.add_argument("--to", required=True, type=Path, help="destination, e.g. reports/baselines/<scenario>")
    parser.add_argument("--force", action="store_true", help="replace an existing baseline")
    args = parser.parse_args(argv)
    try:
        written = save_baseline(args.runs, args.to, force=args.force)
    except (BaselineError, OSError) as exc:
        print(f"harness baseline: {exc}", file=sys.stderr)
        return 2
    for w in written:
        size = sum(f.stat().st_size for f in w.iterdir()) / 1e6
        print(f"{w}: {size:.1f} MB")
    return 0
