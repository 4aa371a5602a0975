"""HTTP framing rules (RFC 9110 / 9112) in http_framing, and the simulation's HTTP server layer that lets them see
in sim what they see live. Rule tests are pure; the sim runs are 4-session runs of delete_storm (about 1 s each).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_checkers_builders import RunBuilder

from harness.checkers import CHECKERS
from harness.checkers.framing import hop_by_hop
from harness.sim.world import EPOCH, SERVER_HEADER, http_server_layer

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _verdict(status: int, counts: dict[str, int], cl: int | None = None, body: int = 0) -> Any:
    b = RunBuilder()
    sid = b.create()
    op = b.invoke("delete" if status == 204 else "chat", session=sid, request_id="r1")
    b.complete(op, status=status, framing={"header_counts": counts, "content_length": cl, "body_bytes": body})
    return CHECKERS["http_framing"].check(b.build())


def test_length_with_chunked_framing_is_a_violation() -> None:
    v = _verdict(200, {"content-length": 1, "transfer-encoding": 1, "server": 1}, 10, 10)
    assert {x.kind for x in v.violations} == {"length_with_chunked"}
    assert _verdict(200, {"transfer-encoding": 1, "server": 1}, None, 10).status == "valid"


@pytest.mark.parametrize(
    ("counts", "cl", "kind"),
    [
        ({"content-length": 1}, 5, "framing_on_no_content"),
        ({"transfer-encoding": 1}, None, "framing_on_no_content"),
        ({"content-length": 1}, 0, None),  # a MUST NOT no client misreads: tolerated
        ({"server": 1, "date": 1}, None, None),
    ],
)
def test_framing_fields_on_a_204(counts: dict[str, int], cl: int | None, kind: str | None) -> None:
    v = _verdict(204, counts, cl, 0)
    assert {x.kind for x in v.violations} == ({kind} if kind else set())


def test_a_401_needs_a_challenge_and_a_412_a_precondition() -> None:
    v = _verdict(401, {"server": 1, "content-length": 1}, 2, 2)
    assert {x.kind for x in v.violations} == {"unauthorized_without_challenge"}
    assert _verdict(401, {"server": 1, "www-authenticate": 1}, None, 0).status == "valid"
    assert {x.kind for x in _verdict(412, {"server": 1}, None, 0).violations} == {"precondition_failed_unasked"}
    b = RunBuilder()
    sid = b.create()
    op = b.invoke("chat", session=sid, request_id="r1", request_headers={"If-Match": '"x"'})
    b.complete(op, status=412, framing={"header_counts": {"server": 1}, "content_length": None, "body_bytes": 0})
    assert CHECKERS["http_framing"].check(b.build()).status == "valid"
    b = RunBuilder()
    sid = b.create()
    op = b.invoke("chat", session=sid, request_id="r1")
    b.complete(op, status=401, framing={"header_counts": {"server": 1}, "content_length": None, "body_bytes": 0})
    run = b.build()
    run = dataclasses.replace(run, scenario={**run.scenario, "backend": {"faults": [{"kind": "http_401"}]}})
    assert CHECKERS["http_framing"].check(run).status == "valid"  # the backend's own 401, passed through


def test_hop_by_hop_fields_of_another_connection() -> None:
    assert hop_by_hop({"te": 1, "proxy-connection": 1, "proxy-authorization": 1}, 200) == [
        "te",
        "proxy-connection",
        "proxy-authorization",
    ]
    assert hop_by_hop({"keep-alive": 1, "upgrade": 1}, 200) == ["keep-alive", "upgrade"]
    assert hop_by_hop({"keep-alive": 1, "upgrade": 1, "connection": 1}, 200) == []  # the server's own options
    assert (
        hop_by_hop({"trailer": 1}, 200) == ["trailer"] and hop_by_hop({"trailer": 1, "transfer-encoding": 1}, 200) == []
    )
    assert hop_by_hop({"proxy-authenticate": 1}, 200) == ["proxy-authenticate"]
    assert hop_by_hop({"proxy-authenticate": 1}, 407) == []
    assert hop_by_hop({"connection": 1, "transfer-encoding": 1}, 200) == []  # uvicorn's close, aiohttp's chunks
    v = _verdict(200, {"content-length": 1, "keep-alive": 1}, 3, 3)
    assert {x.kind for x in v.violations} == {"hop_by_hop"}


def test_the_sim_http_layer_adds_what_uvicorn_adds() -> None:
    req = httpx.Request("POST", "http://s.sim:1/x")
    sized = httpx.Response(200, headers=[(b"content-length", b"2")], content=b"{}")
    http_server_layer(req, sized, EPOCH)
    assert sized.headers.raw[:2] == [(b"server", SERVER_HEADER), (b"date", b"Tue, 14 Nov 2023 22:13:20 GMT")]
    assert "transfer-encoding" not in sized.headers
    streamed = httpx.Response(200, stream=httpx.ByteStream(b"data: x\n\n"))
    http_server_layer(req, streamed, EPOCH)
    assert streamed.headers["transfer-encoding"] == "chunked"  # no length declared: the server chunks it
    empty = httpx.Response(204, stream=httpx.ByteStream(b""))
    http_server_layer(httpx.Request("DELETE", "http://s.sim:1/x"), empty, EPOCH)
    assert "transfer-encoding" not in empty.headers and "content-length" not in empty.headers


def _small(name: str) -> Any:
    from harness.scenario import load_scenario
    from harness.sim.runner import with_seed

    sc = with_seed(load_scenario(str(SCENARIOS / f"{name}.toml")), 0)
    return dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, sessions=4, concurrency=4))


@pytest.mark.parametrize(
    ("target", "variant", "kinds"),
    [
        (None, None, set()),
        ("asgi:harness.coverage._bugs:forward_hop_by_hop", None, {"hop_by_hop"}),
        (None, "echo_upstream_framing", {"duplicate_header"}),
    ],
)
def test_header_bugs_show_in_sim(target: str | None, variant: str | None, kinds: set[str]) -> None:
    from harness.sim.runner import simulate, with_seed

    sc = _small("delete_storm")
    if variant:
        sc = with_seed(sc, 0, variant)
    out = simulate(sc, 0, "random", target=target, trace=False)
    assert out.data is not None and out.error is None
    v = CHECKERS["http_framing"].check(out.data)
    assert {x.kind for x in v.violations} == kinds, [x.message for x in v.violations[:3]]
    if variant:  # server and date copied from the backend, as under uvicorn live
        assert any("server x2, date x2" in x.message for x in v.violations)
