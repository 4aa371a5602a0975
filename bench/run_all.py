"""``make bench``: every benchmark once, in a short configuration, one after another.

Benchmarks print figures; they are not timed tests. Run them on a quiet
machine (two benchmarks at once share the same two cores and measure each
other). Each script takes more options for a longer or profiled run; see
``bench/RESULTS.md`` for the figures recorded and the commands behind them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS: list[tuple[str, list[str]]] = [
    ("fake SGLang: req/s and CPU per request", ["bench_fake_sglang.py", "--seconds", "5"]),
    ("reference server: turns/s, p50/p99 per turn", ["bench_server.py", "--rounds", "4"]),
    ("simulation: seeds/s, seeds and seconds to flag each bad variant", ["bench_sim.py", "--trials", "3"]),
    ("capacity model: 10^5 sessions x 10 turns", ["bench_model.py"]),
    ("server log parsing: JSON vs key=value text lines/s", ["bench_serverlog.py", "--lines", "20000"]),
    (
        "hostile-input fuzz: examples/s, failures",
        ["bench_fuzz.py", "--server", "2000", "--fake", "1000", "--plan", "500"],
    ),
]


def main() -> int:
    failed = []
    for title, argv in RUNS:
        print(f"\n=== {title}: python bench/{' '.join(argv)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]])
        if rc != 0:
            failed.append(argv[0])
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
