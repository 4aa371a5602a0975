"""Re-check a run folder: ``python -m harness.checkers RUN_DIR [--checker NAME ...] [--json]``.

Runs the checkers that have per-session steps over the folder a session group
at a time (harness/checkers/stream.py, bounded memory), then loads the folder
with :meth:`RunData.load` for the others and the judgement (same verdicts as
checking the loaded run), and prints one line per checker (and its
violations), one line saying which checkers ran per session and which on the
whole run, then one line saying how many
verdicts were unknown and why, and one listing declared faults that never
fired. The scenario's enabled checkers are run (``--checker`` for others) and,
without ``--checker``, ``verdicts.json`` is rewritten, so ``harness report``
and everything else read these verdicts, not an older run's.

Exit codes are the one verdict's (harness/verdict.py), as in every command:
0 pass, 1 a violation or a failed SLO (``--strict`` / ``checks.strict``: also
unknown verdicts and declared-but-not-exercised faults), 2 bad input, 3 cannot
judge (``--fail-on-unknown`` / ``checks.fail_on_unknown``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.checkers import CHECKERS, Verdict
from harness.rundata import RUN_FILES, RunData


def format_table(verdicts: list[Verdict], max_violations: int = 5) -> str:
    width = max([len(v.checker) for v in verdicts] + [7])
    lines = [f"{'checker':<{width}}  {'status':<8}  violations  notes"]
    for v in verdicts:
        lines.append(f"{v.checker:<{width}}  {v.status:<8}  {len(v.violations):>10}  {v.notes}")
        for x in v.violations[:max_violations]:
            where = f" session={x.session}" if x.session else ""
            lines.append(f"{'':<{width}}    - {x.message} (ops {x.ops}{where})")
        if len(v.violations) > max_violations:
            lines.append(f"{'':<{width}}    ... {len(v.violations) - max_violations} more")
    return "\n".join(lines)


def _use_server_logs(run: RunData, files: list[Path]) -> None:
    """Replace the run's log lines by those of ``files`` that belong to its sessions (OSError, ValueError)."""
    from harness.serverlog import LogConfig, lines_of_run, read_server_logs

    target = run.scenario.get("target") or {}
    config = LogConfig.from_mapping(target.get("logs") or {}) if isinstance(target, dict) else LogConfig()
    lines, stats = read_server_logs(files, config)
    sessions = {str(e["session"]) for e in run.history if e.get("session")}
    run.server_logs = lines_of_run(lines, sessions)
    print(f"--server-log: {stats.summary()}; {len(run.server_logs)} line(s) of this run's sessions", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="harness check", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a scenario's run folder (holds history.jsonl)")
    p.add_argument("--checker", action="append", default=None, help=f"one of {sorted(CHECKERS)} (repeatable)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 on unknown verdicts and declared-but-not-exercised faults too"
    )
    p.add_argument(
        "--fail-on-unknown", action="store_true", help="exit 3 (cannot judge) on unknown verdicts or SLOs without data"
    )
    p.add_argument(
        "--per-session",
        choices=("auto", "always", "never"),
        default="auto",
        help="check a session group at a time where a checker can (same verdicts, less memory): auto = where it "
        "saves memory, a folder of 64 MiB of run data or more whose checkers all have per-session steps "
        "(default); always; never",
    )
    p.add_argument(
        "--server-log",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="the server's log file (JSON or key=value lines; repeatable): its lines of this run's sessions "
        "replace the folder's server_logs.jsonl, read with the scenario's [target.logs]",
    )
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not (args.run_dir / RUN_FILES["history"]).is_file():
        print(f"{args.run_dir}: no {RUN_FILES['history']} here; expected a run folder", file=sys.stderr)
        return 2
    missing = [str(f) for f in args.server_log if not f.is_file()]
    if missing:
        print(f"--server-log: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    bad = [n for n in args.checker or [] if n not in CHECKERS]
    if bad:
        print(f"--checker: unknown checker(s) {bad}; allowed: {', '.join(sorted(CHECKERS))}", file=sys.stderr)
        return 2
    from harness.verdict import check_folder, judge, run_checkers, write_verdicts

    try:
        if args.server_log:  # the folder's own logs are replaced: every checker reads the loaded, joined run
            run = RunData.load(args.run_dir)
            _use_server_logs(run, args.server_log)
            verdicts = run_checkers(run, args.checker)
            how = "checked on the whole run (--server-log replaces the folder's server logs): all"
        else:
            mode = {"auto": None, "always": True, "never": False}[args.per_session]
            fc = check_folder(args.run_dir, args.checker, per_session=mode)
            run, verdicts, how = fc.run, fc.verdicts, fc.how()
        if args.checker is None:  # the scenario's own set: what every other command reads
            write_verdicts(args.run_dir, verdicts, server_logs=[str(f) for f in args.server_log])
        j = judge(args.run_dir, run=run, verdicts=verdicts, strict=args.strict, fail_on_unknown=args.fail_on_unknown)
    except (ValueError, OSError) as exc:
        print(f"{args.run_dir}: {exc}", file=sys.stderr)
        return 2
    from harness.report.summary import attention

    att = attention(args.run_dir, verdicts, run)
    said = f"verdict: {j.verdict.upper()} (exit {j.exit_code})" + (f": {'; '.join(j.reasons)}" if j.reasons else "")
    if args.json:
        print(json.dumps(verdicts, indent=2))
        print(how, file=sys.stderr)
        print(said, file=sys.stderr)
    else:
        print(format_table([Verdict.from_dict(v) for v in verdicts]))
        print(how)
        for line in att.lines:
            print(line)
        for c in j.slo.get("checks") or []:
            if c.get("status") != "pass":
                bound = f"SLO {c.get('series')} {c.get('key')} <= {c.get('threshold_ms')} ms"
                print(f"{bound}: {str(c.get('status')).upper()}, observed {c.get('observed_ms')} ms")
        print(said)
    return j.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
