"""Every fault of the fake SGLang over real loopback sockets: what a client actually sees.

In-process tests cannot show a TCP reset or a truncated body; these start
``harness fake-sglang`` as a subprocess (as live runs do) and talk to it with
httpx and with raw sockets. The server is always killed at the end, and its
stderr must be free of ASGI tracebacks (a drop is deliberate, not a crash).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "Hello over the wire"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "fake-sglang", "--port", str(port), "--seed", "5"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake did not start: {log.read_text()}")
                time.sleep(0.05)
            yield url, log
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI" not in text, text


def post(url: str, fault: str | None = None, *, timeout: float = 5.0, **body: Any) -> httpx.Response:
    headers = {"x-smg-routing-key": "wire"} | ({"x-fake-fault": fault} if fault else {})
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": MSGS, **body}, headers=headers, timeout=timeout)


def raw_exchange(url: str, fault: str, *, stream: bool = False) -> tuple[bytes, BaseException | None]:
    """Send one request over a plain socket; return every byte received and how the read ended."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"messages": MSGS, "stream": stream}).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-fake-fault: {fault}\r\n\r\n"
    ).encode() + body
    got, ended = b"", None
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(req)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except OSError as exc:
            ended = exc
    return got, ended


def test_ok_answer(server: tuple[str, Path]) -> None:
    r = post(server[0])
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"


def test_reset_before_any_byte(server: tuple[str, Path]) -> None:
    got, ended = raw_exchange(server[0], "reset")
    assert got == b"" and isinstance(ended, ConnectionResetError)
    with pytest.raises(httpx.ReadError, match="reset"):
        post(server[0], "reset")


def test_close_mid_body_after_200(server: tuple[str, Path]) -> None:
    got, ended = raw_exchange(server[0], "close_mid_body;fraction=0.4")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and ended is None  # a clean FIN, not a reset
    length = int(next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")).split(b":")[1])
    assert 0 < len(body) < length
    with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message body"):
        post(server[0], "close_mid_body")


def test_sse_cut_mid_stream(server: tuple[str, Path]) -> None:
    url = server[0]
    lines: list[str] = []
    body = {"messages": MSGS, "stream": True}
    hdrs = {"x-fake-fault": "sse_cut;fraction=0.5"}
    with (
        pytest.raises(httpx.RemoteProtocolError),  # the cut surfaces while iterating
        httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=hdrs, timeout=5) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
    data = [ln for ln in lines if ln.startswith("data: ")]
    assert len(data) >= 2 and "data: [DONE]" not in data


def test_hang_until_client_times_out(server: tuple[str, Path]) -> None:
    url = server[0]
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post(url, "hang;seconds=20", timeout=0.5)
    assert 0.45 < time.monotonic() - t0 < 3
    # The fake notices the client left and records the execution as dropped.
    for _ in range(100):
        log = httpx.get(url + "/stats").json()["executions"]["wire"]
        if [e for e in log if e["fault"] == "hang;seconds=20.0" and e["outcome"] == "dropped"]:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("hang not recorded as dropped")


@pytest.mark.parametrize("code", [400, 429, 500, 503])
def test_status_codes(server: tuple[str, Path], code: int) -> None:
    r = post(server[0], f"http_{code}")
    assert r.status_code == code and r.json()["error"]["message"]


def test_malformed_bodies(server: tuple[str, Path]) -> None:
    url = server[0]
    assert "meta_info" not in post(url, "no_meta_info").json()["choices"][0]
    assert post(url, "null_content").json()["choices"][0]["message"]["content"] is None
    meta = post(url, "logprob_mismatch").json()["choices"][0]["meta_info"]
    assert len(meta["output_token_logprobs"]) != meta["completion_tokens"]
    bad = post(url, "invalid_json")
    assert bad.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        bad.json()


def test_slow_drip(server: tuple[str, Path]) -> None:
    url = server[0]
    t0 = time.monotonic()
    r = post(url, "slow_drip;seconds=1.0;chunks=5")
    assert time.monotonic() - t0 >= 0.95 and r.json()["choices"][0]["finish_reason"] == "stop"
    with pytest.raises(httpx.ReadTimeout):  # each gap (0.2 s) is longer than the read timeout
        post(url, "slow_drip;seconds=1.0;chunks=5", timeout=httpx.Timeout(5.0, read=0.1))


def test_latency_spike(server: tuple[str, Path]) -> None:
    t0 = time.monotonic()
    assert post(server[0], "spike;ms=300").status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_abort_and_plan_replacement(server: tuple[str, Path]) -> None:
    url = server[0]
    # 10 tokens at 300 ms each: a 3 s window for the abort, however slow the box is to start the request
    plan = '[latency]\nmodel = "per_token"\nttft_ms = 10\nitl_ms = 300\n[[rules]]\nfault = "length"\nsession = "cut"\n'
    assert httpx.put(url + "/admin/plan", content=plan).status_code == 200
    try:
        import threading

        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.setdefault("r", post(url, rid="wire-1", timeout=30)))
        t.start()
        # abort once the fake has the request in flight (its execution log says so), not after a guessed sleep:
        # on a starved CI box the request can take longer than any fixed sleep to arrive
        deadline = time.monotonic() + 20
        while not any(
            e["rid"] == "wire-1" and e["outcome"] == "inflight"
            for es in httpx.get(url + "/stats").json()["executions"].values()
            for e in es
        ):
            assert time.monotonic() < deadline and t.is_alive(), "the request never showed in flight"
            time.sleep(0.02)
        assert httpx.post(url + "/abort_request", json={"rid": "wire-1"}).json() == {"aborted": 1}
        t.join(30)
        ch = out["r"].json()["choices"][0]
        assert ch["finish_reason"] == "abort" and 0 < ch["meta_info"]["completion_tokens"] < 10
        r = httpx.post(url + "/v1/chat/completions", json={"messages": MSGS}, headers={"x-smg-routing-key": "cut"})
        assert r.json()["choices"][0]["finish_reason"] == "length"
    finally:
        httpx.put(url + "/admin/plan", content="")


def test_cli_rejects_bad_plan(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nfault = "abrt"\n')
    p = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fake-sglang", "--port", "1", "--plan", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert str(bad) in p.stderr and "rules[0].fault" in p.stderr and "allowed" in p.stderr
