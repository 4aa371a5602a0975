"""``python -m tests.foreign_server``: one process of the foreign session server (loopback only)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import time
from typing import Any

from aiohttp import web

from tests.foreign_server.app import BUGS, Config, create_app
from tests.foreign_server.tokens import Tokens

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.foreign_server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend-url", required=True)
    p.add_argument("--tokenizer", required=True, help="a local Hugging Face tokenizer directory with a chat template")
    p.add_argument("--bug", action="append", default=[], choices=BUGS, help="a known-bad behaviour (repeatable)")
    p.add_argument("--max-trim-tokens", type=int, default=2)
    p.add_argument("--no-tokenize-thread", action="store_true", help="tokenize on the event loop")
    p.add_argument("--backend-timeout", type=float, default=60.0)
    p.add_argument("--log-file", default=None, help="also write the log lines here")
    a = p.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("--host must be a loopback address")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if a.log_file:
        handlers.append(logging.FileHandler(a.log_file, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.tokenizer, local_files_only=True)

    async def in_thread(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def inline(fn: Any, *args: Any) -> Any:
        return fn(*args)

    config = Config(
        backend_url=a.backend_url.rstrip("/"),
        worker_port=a.port,
        bugs=frozenset(a.bug),
        backend_timeout_s=a.backend_timeout,
    )
    app = create_app(
        config,
        Tokens(tok, a.max_trim_tokens),
        new_id=secrets.token_hex,
        wall=time.time,
        offload=inline if a.no_tokenize_thread else in_thread,
    )
    logging.getLogger("foreign.sessions").info(
        "foreign session server on %s:%d backend=%s bugs=%s", a.host, a.port, config.backend_url, ",".join(a.bug) or "-"
    )
    web.run_app(app, host=a.host, port=a.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
