"""Hostile input to the fake SGLang: a 4xx on its own input, never a 500; /stats always answers.

Issue 13: deep JSON or a lone surrogate in ``model`` / ``rid`` answered 500;
after one request with a surrogate ``rid`` (which a session server forwards
as is) ``/stats`` answered 500 for ever, and the harness silently collected no
executions; ``PUT /admin/plan`` accepted NaN.
"""

from __future__ import annotations

import json

import pytest
from hostile import raw_request

from harness.fake_sglang import PlanError, create_app, parse_fault_header, plan_from_text

JSON_CT = (b"content-type", b"application/json")
OK = b'{"input_ids":[1,2,3]'


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"input_ids":[1,2,3],"model":"\\ud800"}', "surrogate"),
        (b'{"input_ids":[1,2,3],"rid":"r\\udfff"}', "surrogate"),
        (b'{"input_ids":[1,2,3],"\\udc00":1}', "surrogate"),
        (b'{"input_ids":[1,2,3],"model":"\xed\xa0\x80"}', "UTF-8"),
        (b'{"input_ids":[1,2,3],"temperature":NaN}', "non-finite"),
        (b'{"input_ids":[1,2,3],"max_tokens":1e999}', "non-finite"),
        (b'{"input_ids":[1,2,3],"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nest"),
        (b'{"input_ids":[1,2,3],"x":' + b"[" * 70 + b"]" * 70 + b"}", "nest"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/generate", "/abort_request"])
async def test_hostile_bodies_are_400_naming_the_reason(raw: bytes, why: str, path: str) -> None:
    fake = create_app(seed=1)
    resp = await raw_request(fake, "POST", path, headers=[JSON_CT], body=raw)
    assert resp.status == 400, resp.body
    assert why in resp.json()["error"]["message"]
    stats = await raw_request(fake, "GET", "/stats")
    assert stats.status == 200 and stats.json()["executions"] == {}


async def test_stats_answers_whatever_id_is_stored() -> None:
    fake = create_app(seed=1)
    ok = await raw_request(fake, "POST", "/generate", headers=[JSON_CT, (b"x-request-id", b"r\xe9")], body=OK + b"}")
    assert ok.status == 200
    (entries,) = fake.executions.values()
    entries[0]["rid"] = "\ud800"  # however it got there: /stats must still serve the log
    entries[0]["latency_ms"] = float("nan")
    stats = await raw_request(fake, "GET", "/stats")
    assert stats.status == 200
    data = json.loads(stats.body)
    (got,) = data["executions"].values()
    assert got[0]["rid"] == "\ud800" and got[0]["latency_ms"] is None and got[0]["request_id"] == "ré"


async def test_body_over_the_limit_is_413() -> None:
    fake = create_app(seed=1)
    fake.max_body_bytes = 1000
    chunks = [b" " * 600] * 20
    resp = await raw_request(fake, "POST", "/generate", headers=[JSON_CT], chunks=chunks)
    assert resp.status == 413 and resp.chunks_read <= 2
    declared = await raw_request(fake, "POST", "/generate", headers=[(b"content-length", b"99999")], chunks=chunks)
    assert declared.status == 413 and declared.chunks_read == 0


BAD_PLANS = [
    ('{"rules":[{"fault":"abort","probability":NaN}]}', "rules[0].probability"),
    ('{"latency":{"model":"fixed","ms":Infinity}}', "latency.ms"),
    ('{"latency":{"model":"fixed","ms":1e999}}', "latency.ms"),
    ('{"latency":{"model":"fixed","ms":1e12}}', "latency.ms"),
    ('{"latency":{"model":"uniform","min_ms":0,"max_ms":-Infinity}}', "latency.max_ms"),
    ('{"latency":{"spikes":{"probability":0.5,"ms":NaN}}}', "latency.spikes.ms"),
    ('{"rules":[{"fault":"abort","params":{"fraction":NaN}}]}', "rules[0].fault.fraction"),
    ('{"rules":[{"fault":"slow_drip","params":{"seconds":1e9}}]}', "rules[0].fault.seconds"),
    ('{"rules":[{"fault":"spike","params":{"ms":Infinity}}]}', "rules[0].fault.ms"),
    ('{"rules":[{"fault":"tool_calls","params":{"count":100000}}]}', "rules[0].fault.count"),
    ('{"generation":{"max_words":1000000000}}', "generation.max_words"),
    ('{"generation":{"context_length":100000000000}}', "generation.context_length"),
    ('{"generation":{"tool_call_probability":NaN}}', "generation.tool_call_probability"),
    ('{"rules":[{"fault":"abort","name":"\\ud800"}]}', "surrogate"),
    ('{"rules":' + "[" * 5000 + "]" * 5000 + "}", "nest"),
    ("[[rules]]\nfault = 'abort'\nprobability = nan", "rules[0].probability"),
    ("[latency]\nmodel = 'fixed'\nms = inf", "latency.ms"),
    ("x = " + "[" * 5000 + "]" * 5000, "nest"),
]


@pytest.mark.parametrize(("text", "key"), BAD_PLANS)
async def test_put_plan_rejects_non_finite_and_out_of_range_numbers(text: str, key: str) -> None:
    fake = create_app(seed=1)
    before = json.dumps(fake.plan.describe())
    ctype = b"application/json" if text.startswith("{") else b"application/toml"
    resp = await raw_request(fake, "PUT", "/admin/plan", headers=[(b"content-type", ctype)], body=text.encode())
    assert resp.status == 400, resp.body
    err = resp.json()["error"]
    assert err["type"] == "plan_error" and key in err["message"], err
    assert json.dumps(fake.plan.describe()) == before
    assert (await raw_request(fake, "GET", "/admin/plan")).status == 200


@pytest.mark.parametrize(
    "header", ["spike;ms=inf", "spike;ms=nan", "slow_drip;seconds=inf", "hang;seconds=nan", "abort;fraction=nan"]
)
def test_fault_header_rejects_non_finite_numbers(header: str) -> None:
    with pytest.raises(PlanError, match=r"finite|at most|within"):
        parse_fault_header(header)


def test_plan_bounds_still_accept_the_shipped_plans() -> None:
    p = plan_from_text('{"latency":{"model":"fixed","ms":600000},"generation":{"max_words":4096}}', fmt="json")
    assert p.latency.ms == 600000.0 and p.generation.max_words == 4096


async def test_odd_header_bytes_are_a_400_or_ignored_never_a_500() -> None:
    fake = create_app(seed=1)
    odd = [(b"content-length", b"\xb2"), (b"x-request-id", b"\xff\x00"), (b"x-smg-routing-key", b"k\xe9")]
    ok = await raw_request(fake, "POST", "/generate", headers=[JSON_CT, *odd], body=OK + b"}")
    assert ok.status == 200, ok.body
    # a malformed harness header is ignored, as a real backend ignores headers it does not know
    for name, value in ((b"x-turn", b"\xb2"), (b"x-turn", b"abc"), (b"x-attempt", b"-1")):
        odd_turn = await raw_request(fake, "POST", "/generate", headers=[JSON_CT, (name, value)], body=OK + b"}")
        assert odd_turn.status == 200, (name, value, odd_turn.body)
    assert (await raw_request(fake, "GET", "/stats")).json()["executions"]["k\xe9"][0]["request_id"] == "\xff\x00"
