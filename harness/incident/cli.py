"""``harness incident``: turn production log lines into a replayable scenario, and check the replay.

    harness incident import LOGFILE [LOGFILE...] [--session ID ...] [--window FROM..TO]
                            [--name NAME] [--note TEXT] [--variant V ...] -o scenarios/incidents/NAME.toml
                            [--log-format auto|json|kv] [--field THEIRS=OURS ...] [--pattern EVENT=REGEX ...]
    harness incident replay SCENARIO [--seed S] [--strategy random|pct|fifo] [--tokenizer NAME|DIR]

``import`` prints what it read (lines used, skipped by reason), what it
reconstructed and where it wrote the scenario; a log with nothing usable in
the chosen sessions and window is an error (exit 2), a malformed line never
is. ``replay`` simulates the scenario and compares each session's outcome
sequence with the original's: exit 0 reproduced, 1 not reproduced, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.incident._parse import WindowError, filter_events, parse_window, read_logs
from harness.incident._reconstruct import reconstruct
from harness.incident._replay import replay
from harness.incident._write import scenario_text
from harness.serverlog import FORMATS, LogConfig, LogConfigError

__all__ = ["import_main", "main", "replay_main"]


def _import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness incident import", description="log lines -> scenario")
    p.add_argument("logs", nargs="+", metavar="LOGFILE", help="JSON or key=value log lines (files are merged)")
    p.add_argument("--session", action="append", default=[], metavar="ID", help="keep this session (id or prefix)")
    p.add_argument("--window", metavar="FROM..TO", help="epoch seconds, ISO times, or +S offsets from the first line")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the scenario to write")
    p.add_argument("--name", help="scenario name (default: the output file's stem)")
    p.add_argument("--note", default="", help="the write-up: what happened, in your words")
    p.add_argument("--variant", action="append", default=[], help="server variant the incident ran (repeatable)")
    add_log_options(p)
    return p


def add_log_options(p: argparse.ArgumentParser) -> None:
    """``--log-format``, ``--field``, ``--pattern``: a :class:`LogConfig` from the command line."""
    p.add_argument("--log-format", default="auto", choices=FORMATS, help="how the lines are written (default auto)")
    p.add_argument("--field", action="append", default=[], metavar="THEIRS=OURS", help="rename a field (repeatable)")
    p.add_argument("--event", action="append", default=[], metavar="THEIRS=OURS", help="rename an event (repeatable)")
    p.add_argument(
        "--pattern", action="append", default=[], metavar="EVENT=REGEX", help="free-text line -> event (repeatable)"
    )


def log_config(args: argparse.Namespace, base: LogConfig | None = None) -> LogConfig:
    """The options over ``base`` (a scenario's ``[target.logs]``); raises LogConfigError naming the option."""

    def pairs(option: str, values: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for v in values:
            k, sep, val = v.partition("=")
            if not sep or not k or not val:
                raise LogConfigError(option, f"expected NAME=VALUE, got {v!r}")
            out[k] = val
        return out

    b = base or LogConfig()
    data = {
        "format": args.log_format if args.log_format != "auto" else b.format,
        "fields": {**b.fields, **pairs("--field", args.field)},
        "events": {**b.events, **pairs("--event", args.event)},
        "patterns": {**b.patterns, **pairs("--pattern", args.pattern)},
    }
    return LogConfig.from_mapping(data)


def import_main(argv: list[str]) -> int:
    args = _import_parser().parse_args(argv)
    try:
        window = parse_window(args.window) if args.window else None
    except WindowError as exc:
        print(f"harness incident import: {exc}", file=sys.stderr)
        return 2
    missing = [p for p in args.logs if not Path(p).is_file()]
    if missing:
        print(f"harness incident import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        config = log_config(args)
    except LogConfigError as exc:
        print(f"harness incident import: {exc}", file=sys.stderr)
        return 2
    parsed = read_logs(args.logs, config)
    events = filter_events(parsed.events, args.session, window)
    inc = reconstruct(events)
    if not inc.sessions:
        print(f"read: {parsed.summary()}")
        print("harness incident import: no session events in the chosen sessions and window", file=sys.stderr)
        return 2
    out = Path(args.out)
    name = args.name or out.stem.removesuffix(".toml")
    filters = " ".join(
        [*(f"--session {s}" for s in args.session), *([f"--window {args.window}"] if args.window else [])]
    )
    text = scenario_text(
        inc,
        name=name,
        sources=[Path(p).name for p in args.logs],
        note=args.note,
        filters=filters,
        parse_summary=parsed.summary(),
        variants=args.variant,
    )
    import tomllib

    from harness.scenario import ScenarioError, parse_scenario

    try:
        parse_scenario(tomllib.loads(text), str(out))
    except (ScenarioError, tomllib.TOMLDecodeError) as exc:  # a bug here, not the user's: say so
        print(f"harness incident import: the written scenario does not load: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    reqs = inc.requests()
    print(
        f"reconstructed: {len(inc.sessions)} session(s), {len(reqs)} chat(s), "
        f"{sum(len(s.deleted_ts) for s in inc.sessions)} delete(s), {len(inc.processes)} process(es)"
    )
    for note in inc.notes[:5]:
        print(f"  note: {note}")
    print(f"wrote {out}")
    print(f"replay: harness incident replay {out}")
    print(f"read: {parsed.summary()}")  # last, so a partial log is the last thing on the screen
    return 0


def replay_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="harness incident replay", description="simulate an incident and compare")
    p.add_argument("scenario")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="random", choices=("random", "pct", "fifo"))
    p.add_argument("--tokenizer", metavar="NAME|DIR", help="override the scenario's tokenizer (fake and servers)")
    args = p.parse_args(argv)
    from harness.scenario import ScenarioError, load_scenario
    from harness.tokenizer import TokenizerError, resolve_tokenizer

    try:
        if args.tokenizer is not None:
            resolve_tokenizer(args.tokenizer)
        sc = load_scenario(args.scenario).with_tokenizer(args.tokenizer)
        check = replay(sc, args.seed, args.strategy)
    except (ScenarioError, TokenizerError, ValueError) as exc:
        print(f"harness incident replay: {exc}", file=sys.stderr)
        return 2
    print(f"{sc.name} (seed {args.seed}, {args.strategy}): {check.report()}")
    return 0 if check.reproduced else 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    subs = {"import": import_main, "replay": replay_main}
    if not args or args[0] not in subs:
        usage = "usage:\n" + (__doc__ or "").strip().split("\n\n")[1]
        wants_help = bool(args) and args[0] in ("-h", "--help")
        print(usage, file=sys.stdout if wants_help else sys.stderr)
        return 0 if wants_help else 2
    return subs[args[0]](args[1:])
