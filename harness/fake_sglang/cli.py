"""``harness fake-sglang``: serve the fake SGLang on a loopback port with uvicorn.

A separate process, as a real SGLang would be, so live runs measure the
session server's sockets and event loop, not an in-process shortcut. Bad
input (an invalid plan, a tokenizer directory that cannot be used) exits 2
with a message naming the file and the key, before any port is opened.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from harness.tokenizer import TokenizerError, load_tokenizer

from .app import create_app
from .plan import FaultPlan, PlanError, load_plan

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness fake-sglang", description="Run the deterministic, fault-injecting fake SGLang."
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; keep it loopback)")
    p.add_argument("--port", type=int, default=30000, help="TCP port (default 30000)")
    p.add_argument("--seed", type=int, default=0, help="seed: answers, latencies and faults are a function of it")
    p.add_argument("--plan", default=None, help="TOML fault plan (docs/fake_sglang.md); default: no faults")
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME|DIR",
        help="shipped tokenizer (chatml, reasoning, tools, headers, trail) or local HF tokenizer dir; default chatml",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (default warning)",
    )
    p.add_argument("--http", default="auto", help="uvicorn HTTP protocol: auto, h11 or httptools")
    p.add_argument(
        "--reasoning-parser",
        action="store_true",
        help="answer as SGLang with --reasoning-parser: reasoning_content apart from the content, the token ids "
        "unchanged (the plan's generation.reasoning_parser; default off)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = load_plan(args.plan) if args.plan else FaultPlan()
        if args.reasoning_parser:
            plan = dataclasses.replace(plan, generation=dataclasses.replace(plan.generation, reasoning_parser=True))
        tok = load_tokenizer(args.tokenizer)
        # a restarted process must not look like the one a run started with: its own boot id (not protocol state)
        boot_id = f"{os.getpid():x}-{os.urandom(4).hex()}"
        app = create_app(seed=args.seed, plan=plan, tokenizer=tok, boot_id=boot_id)
    except (PlanError, TokenizerError) as exc:
        print(f"harness fake-sglang: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a tokenizer whose chat template the fake cannot use
        print(f"harness fake-sglang: --tokenizer {args.tokenizer}: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        http=args.http,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
