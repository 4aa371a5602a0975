"""Our reference server, built-in target vs command target, on a whole suite: same verdicts? what overhead?

    python bench/bench_command_target.py [--suite default] [--out DIR]

Runs every scenario of the suite twice, live: once with the built-in
``reference`` target (``--variant default``), once with ``[target] kind =
"command"`` starting ``python -m reference_impl`` from a command line. Prints,
per scenario, the composed status of each, the checkers whose status differs
(with the first violation), and the wall-clock seconds of each run (process
startup dominates the difference). Reports are skipped. Exit 1 if any status
differs, so it can be watched; the always-run test covers three scenarios
(tests/integration/test_runner_command_equivalence.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.runner import find_scenarios, run_scenario
from harness.runner._suite import SCENARIO_DIR, load_for_target

CMD = (
    "{python} -m reference_impl --host {host} --port {port} --backend-url {backend_url} "
    "--tokenizer {tokenizer} --heartbeat-interval 1.0"
)


def one(path: Path, out: Path, target: dict[str, object] | None) -> tuple[str, float, dict[str, tuple[str, str]]]:
    sc = load_for_target(path, target)
    res = run_scenario(sc, out, "default" if target is None else None, report=False)
    by = {}
    for v in res.verdicts:
        first = (v.get("violations") or [{}])[0].get("message") or v.get("notes") or ""
        by[str(v["checker"])] = (str(v["status"]), str(first)[:160])
    return (res.status if not res.error else f"error: {res.error[:80]}"), res.duration_s, by


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="default", choices=("default", "all"))
    ap.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temp dir)")
    args = ap.parse_args()
    paths = find_scenarios([], args.suite, root=SCENARIO_DIR)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_command_target."))
    print(f"{'scenario':<26} {'built-in':<9} {'s':>6}  {'command':<9} {'s':>6}  differing checkers")
    differ = 0
    total = [0.0, 0.0]
    for p in paths:
        a_status, a_s, a = one(p, out / "built_in", None)
        b_status, b_s, b = one(p, out / "command", {"kind": "command", "cmd": CMD})
        total[0] += a_s
        total[1] += b_s
        diff = [c for c in sorted(set(a) | set(b)) if a.get(c, ("-",))[0] != b.get(c, ("-",))[0]]
        differ += bool(diff) or a_status != b_status
        print(f"{p.stem:<26} {a_status:<9} {a_s:6.1f}  {b_status:<9} {b_s:6.1f}  {', '.join(diff) or '-'}", flush=True)
        for c in diff:
            print(f"    {c}: built-in {a.get(c)}  command {b.get(c)}")
    print(f"{'total':<26} {'':<9} {total[0]:6.1f}  {'':<9} {total[1]:6.1f}  {differ} scenario(s) differ")
    print(f"run folders under {out}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
