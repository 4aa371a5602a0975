"""``harness``: one command, a subcommand per job.

Each subcommand lives in the module that owns it and exposes
``main(argv: list[str]) -> int``; this file only dispatches, so modules stay
independent and import cost is paid only for the command that runs.
Exit codes, the same in every command (harness/verdict.py, docs/ci.md): 0 pass,
1 a violation / failed SLO / regression, 2 bad input, 3 cannot judge.

A reader that stops reading (``harness run --list | head -1``) is not an
error of the command: further output is dropped, quietly, and the command
still exits with its own code.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from importlib import metadata
from typing import Any, TextIO

# name -> (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fake-sglang": ("harness.fake_sglang.cli:main", "run the deterministic, fault-injecting fake SGLang"),
    "serve": ("reference_impl.launcher:serve_main", "run the reference session server (N processes)"),
    "demo": ("harness.demo:main", "start the fake + reference server in-process and drive a short conversation"),
    "run": ("harness.runner.cli:main", "run scenarios and check invariants"),
    "explore": ("harness.sim.cli:explore_main", "simulation: many seeds until an invariant breaks; shrink it"),
    "replay": ("harness.sim.cli:replay_main", "simulation: replay one seed exactly (prints the digests)"),
    "check": ("harness.checkers.__main__:main", "re-check a run folder's invariants"),
    "report": ("harness.report.cli:report_main", "regenerate a run folder's report from its history"),
    "baseline": ("harness.report.baseline:baseline_main", "save green run folders as a committed latency baseline"),
    "compare": ("harness.report.cli:compare_main", "gate: compare a run's percentiles against a baseline"),
    "model": ("harness.model.cli:main", "capacity model (simpy): predicted bucket percentiles, --sweep"),
    "incident": ("harness.incident.cli:main", "turn production log lines into a replayable scenario"),
    "tokenizer": ("harness.tokenizer.check:main", "check NAME|DIR: will token-in/token-out hold with its template?"),
    "mutate": ("harness.mutate.cli:main", "mutation testing: cosmic-ray mutants of reference_impl vs the sim library"),
    "coverage": (
        "harness.coverage.cli:main",
        "rule coverage: CONTEXT.md rules -> runs -> checkers -> proofs (docs/coverage.md)",
    ),
}


def _usage() -> str:
    lines = ["usage: harness COMMAND [ARGS...]", "", "commands:"]
    for name, (_, help_) in COMMANDS.items():
        lines.append(f"  {name:<12} {help_}")
    lines.append("")
    lines.append("`harness COMMAND --help` for a command's options; `harness --version` for the version.")
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version (the source tree's, in an editable install)."""
    try:
        return metadata.version("session-race-harness")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


class _QuietPipe:
    """sys.stdout that drops output once the reader has gone (BrokenPipeError), instead of a traceback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def _gone(self) -> None:
        self.broken = True
        try:  # the interpreter's own flush at exit must not fail on the closed pipe either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    if not isinstance(sys.stdout, _QuietPipe) and sys.stdout is not None:
        sys.stdout = _QuietPipe(sys.stdout)
    try:
        return _main(argv)
    except BrokenPipeError:  # a write that bypassed the wrapper (a library's own handle on stdout)
        if isinstance(sys.stdout, _QuietPipe):
            sys.stdout._gone()
        return 0


def _main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"harness {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"harness: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    mod_name, func_name = target.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and mod_name.startswith(exc.name):
            print(f"harness: command {name!r} is not available in this build ({exc})", file=sys.stderr)
            return 2
        raise
    result = getattr(module, func_name)(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
