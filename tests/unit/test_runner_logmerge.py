"""The run folder's server_logs.jsonl merged as it streams (issue 13): the bytes and stats read_server_logs gave.

``merge_server_logs`` never holds the logs' lines; it must still write, line for line, what ``RunData.save`` wrote
for ``read_server_logs`` of the same files (merge by time, stable; a line another file already holds counted
once; worker ports filled per pid), for sorted logs (a server's own), unsorted ones, duplicates across files (a
merged file beside the per-process ones), bad lines, text lines, offsets and two groups (the runner's own
processes and ``--server-log``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.runner._live import merge_server_logs
from harness.serverlog import LogConfig, read_server_logs


def _old_bytes(
    groups: list[tuple[list[Path], dict[str, int] | None]], config: LogConfig | None
) -> tuple[bytes, list[str]]:
    """What main wrote: each group read whole, the groups concatenated and stably sorted on ts, then save."""
    lines: list[dict[str, object]] = []
    summaries = []
    for files, offsets in groups:
        got, stats = read_server_logs(files, config, offsets=offsets)
        lines = sorted([*lines, *got], key=lambda ln: float(ln["ts"]))  # type: ignore[arg-type]
        summaries.append(stats.summary())
    return b"".join(json.dumps(ln, sort_keys=True).encode() + b"\n" for ln in lines), summaries


def _line(rng: random.Random, ts: float, pid: int, port: int | None) -> str:
    kind = rng.random()
    if kind < 0.05:
        return "not a log line {"
    if kind < 0.08:
        return ""
    if kind < 0.15:  # key=value text
        return f"ts={ts} chat_done req_id={rng.randrange(100)} pid={pid} status=200 total_ms={rng.random():.3f}"
    ev: dict[str, object] = {"ts": ts, "event": rng.choice(["chat_start", "chat_done", "heartbeat"]), "pid": pid}
    if port is not None and rng.random() < 0.7:
        ev["worker_port"] = port
    if rng.random() < 0.3:
        ev["session_id"] = f"s{rng.randrange(5)}"
    if rng.random() < 0.05:
        ev["note"] = "caf\u00e9 \ud83d\ude00 \\u2028"
    return json.dumps(ev) if rng.random() < 0.9 else json.dumps(ev, ensure_ascii=False)


def _files(tmp: Path, rng: random.Random, *, n_files: int, n_lines: int, sorted_: bool, tag: str) -> list[Path]:
    files = []
    for f in range(n_files):
        t = 1000.0
        rows = []
        for _ in range(n_lines):
            t += rng.choice([0.0, 0.0, 0.001, 0.25])  # equal times are common: the ties must keep file order
            rows.append(_line(rng, t if sorted_ or rng.random() < 0.8 else t - rng.random(), 100 + f, 8000 + f))
        p = tmp / f"{tag}-{f}.log"
        p.write_text("\n".join(rows) + ("\n" if rng.random() < 0.5 else ""), encoding="utf-8", errors="surrogatepass")
        files.append(p)
    if n_files > 1:  # a merged file holding part of the others' lines, twice for some
        merged = tmp / f"{tag}-merged.log"
        picked = [ln for p in files for ln in p.read_bytes().split(b"\n") if rng.random() < 0.4]
        merged.write_bytes(b"\n".join(picked + picked[: len(picked) // 5]) + b"\n")
        files.insert(rng.randrange(len(files) + 1), merged)
    return files


@pytest.mark.parametrize("seed", range(12))
def test_the_streamed_merge_writes_what_read_server_logs_and_save_wrote(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    own = _files(
        tmp_path, rng, n_files=rng.randrange(1, 4), n_lines=rng.randrange(0, 300), sorted_=seed % 3 != 0, tag="own"
    )
    groups: list[tuple[list[Path], dict[str, int] | None]] = [(own, None)]
    if seed % 2:
        extra = _files(tmp_path, rng, n_files=1, n_lines=200, sorted_=True, tag="extra")
        groups.append((extra, {str(extra[0]): extra[0].stat().st_size // 3}))
    config = LogConfig(fields={"latency_ms": "total_ms"}) if seed % 4 == 1 else None
    want, summaries = _old_bytes(groups, config)
    out = tmp_path / "server_logs.jsonl"
    stats = merge_server_logs(groups, config, out)
    assert out.read_bytes() == want
    assert [s.summary() if s is not None else None for s in stats] == summaries
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unreadable_group_is_left_out_only_when_the_caller_says_so(tmp_path: Path) -> None:
    good = tmp_path / "a.log"
    good.write_text(json.dumps({"ts": 1.0, "event": "heartbeat"}) + "\n")
    missing = tmp_path / "gone.log"
    out = tmp_path / "out.jsonl"
    with pytest.raises(OSError):
        merge_server_logs([([missing], None)], None, out)
    seen: list[int] = []
    stats = merge_server_logs([([missing], None), ([good], None)], None, out, on_error=lambda i, e: not seen.append(i))
    assert seen == [0] and stats[0] is None and stats[1] is not None
    assert out.read_bytes() == (json.dumps({"event": "heartbeat", "ts": 1.0}) + "\n").encode()
