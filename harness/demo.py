"""``harness demo``: the whole stack in one process, one conversation, printed.

A first look for a new user, and a smoke test that needs no ports: the fake
SGLang and the reference session server run in-process, wired by httpx's
ASGI transport. The conversation shows the paths that matter most: a normal
turn, a forced abort that leaves a provisional record and the
``x-sglang-aborted`` header, the retry that supersedes it, a tool-call turn,
the collect-then-delete at the end, and the 404 that proves the session is gone.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from harness.fake_sglang import create_app as create_fake
from harness.seams import IdSource, LoopClock
from reference_impl import ServerConfig, create_app
from reference_impl.logs import ListSink


async def _conversation(seed: int, tokenizer: str | None, console: Console) -> int:
    fake = create_fake(seed=seed, tokenizer=tokenizer)
    logs = ListSink()
    app = create_app(
        ServerConfig(backend_url="http://fake-sglang", tokenizer=tokenizer),
        clock=LoopClock(epoch=0.0),
        ids=IdSource(seed),
        backend_transport=httpx.ASGITransport(app=fake),
        log_sink=logs,
    )
    table = Table(title="demo conversation (in-process fake SGLang + reference server)")
    for col in ("step", "request", "status", "aborted hdr", "finish", "records", "note"):
        table.add_column(col)
    failures = 0

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://session-server") as client:
        sid = (await client.post("/sessions")).json()["session_id"]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Plan the steps to fix the failing test."},
        ]

        async def chat(step: str, turn: int, attempt: int, fault: str | None = None, note: str = "") -> dict[str, Any]:
            nonlocal failures
            headers = {"x-turn": str(turn), "x-attempt": str(attempt), "x-request-id": f"demo-{turn}-{attempt}"}
            if fault:
                headers["x-fake-fault"] = fault
            r = await client.post(f"/sessions/{sid}/v1/chat/completions", json={"messages": messages}, headers=headers)
            body: dict[str, Any] = r.json()
            state = (await client.get(f"/sessions/{sid}")).json()
            kinds = ",".join(rec["kind"][0] for rec in state["records"]) or "-"
            finish = body.get("choices", [{}])[0].get("finish_reason", "-") if r.status_code == 200 else "-"
            table.add_row(
                step,
                f"turn {turn} attempt {attempt}" + (f" [{fault}]" if fault else ""),
                str(r.status_code),
                r.headers.get("x-sglang-aborted", ""),
                str(finish),
                kinds,
                note,
            )
            if r.status_code != 200:
                failures += 1
            return body

        body = await chat("1", 0, 0, note="committed")
        messages.append(body["choices"][0]["message"])
        messages.append({"role": "user", "content": "Now run the tests."})
        await chat("2", 1, 0, fault="abort", note="aborted: provisional record at the tail (p)")
        body = await chat("3", 1, 1, note="retry supersedes the provisional")
        messages.append(body["choices"][0]["message"])
        messages.append({"role": "user", "content": "Search the docs for the error, with a tool."})
        body = await chat("4", 2, 0, fault="tool_calls", note="tool-call turn")
        msg = body["choices"][0]["message"]
        messages.append(msg)
        for call in msg.get("tool_calls") or []:
            messages.append({"role": "tool", "tool_call_id": call.get("id", "call"), "content": "3 results found"})
        await chat("5", 3, 0, note="tool result appended; TITO suffix tokenized")

        state = (await client.get(f"/sessions/{sid}")).json()
        deleted = await client.delete(f"/sessions/{sid}")
        gone = await client.get(f"/sessions/{sid}")
        table.add_row("6", "DELETE", str(deleted.status_code), "", "", "", "collect, then delete")
        table.add_row("7", "GET after DELETE", str(gone.status_code), "", "", "", "deleted sessions never come back")
        if deleted.status_code != 204 or gone.status_code != 404:
            failures += 1

    console.print(table)
    meta = state["metadata"]
    console.print(
        f"session {sid}: {len(state['records'])} records "
        f"({', '.join(r['kind'] for r in state['records'])}), "
        f"{len(meta['token_ids'])} token ids, num_assistant={meta['num_assistant']}, "
        f"token_mismatch={meta.get('token_mismatch')}"
    )
    done = logs.events("chat_done")
    console.print(f"server log: {len(done)} chat_done lines; outcomes: {', '.join(e['outcome'] for e in done)}")
    buckets = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
    if done:
        console.print("last chat_done buckets: " + ", ".join(f"{b}={done[-1][b]}" for b in buckets))
    console.print("[green]demo ok[/green]" if failures == 0 else f"[red]demo: {failures} unexpected answers[/red]")
    return 0 if failures == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tokenizer", default=None, help="local Hugging Face tokenizer directory")
    args = parser.parse_args(argv)
    return asyncio.run(_conversation(args.seed, args.tokenizer, Console(width=130)))


if __name__ == "__main__":
    raise SystemExit(main())
