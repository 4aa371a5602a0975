"""Log parsing throughput: JSON lines vs Python-logging key=value text (harness/serverlog.py).

Prints lines/s for each form, from the real events of the shipped dup_retry_race
incident repeated to N lines, and checks that both forms read back the same events.
A figure, not a test: ``python bench/bench_serverlog.py [--lines N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness.serverlog import parse_lines
from reference_impl.logs import TextLineSink

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=50_000)
    args = p.parse_args()
    src = ROOT / "scenarios" / "incidents" / "dup_retry_race.log.jsonl"
    events = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    reps = max(1, args.lines // len(events))
    sink = TextLineSink()
    as_json = [json.dumps(e) for e in events] * reps
    as_text = [sink.format(e) for e in events] * reps
    results = {}
    for name, lines in (("json", as_json), ("text", as_text)):
        t0 = time.perf_counter()
        parsed, stats = parse_lines(lines, name)
        dt = time.perf_counter() - t0
        assert not stats.skipped and len(parsed) == len(lines)
        results[name] = parsed
        print(f"{name:5s} {len(lines):7d} lines in {dt:6.2f} s = {len(lines) / dt:9.0f} lines/s")
    same = all(
        {k: v for k, v in a.items() if k != "ts"} == {k: v for k, v in b.items() if k != "ts"}
        for (a, _), (b, _) in zip(results["json"], results["text"], strict=True)
    )
    print(f"text reads back as json (ts to the millisecond): {same}")


if __name__ == "__main__":
    main()
