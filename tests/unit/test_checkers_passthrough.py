"""passthrough: a plain pass-through request to one of the backend's own routes is never refused on a live session."""

from __future__ import annotations

import re

from harness.checkers import CHECKERS, Verdict
from harness.checkers.passthrough import BACKEND_ROUTES, plain_path
from harness.fake_sglang.app import create_app
from harness.history import History
from harness.rundata import RunData

SRV = "http://s0"


class Tick:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 0.001
        return self.t

    def wall(self) -> float:
        return self.t


def _run(
    cases: list[tuple[str, str, int]],
    *,
    delete_first: bool = False,
    plan: object = None,
    target: dict[str, object] | None = None,
) -> Verdict:
    h = History(Tick())
    op = h.invoke(process="fuzzer", f="create", server=SRV)
    h.ok(op, status=200, session="v")
    if delete_first:
        d = h.invoke(process="agent", f="delete", session="v", server=SRV)
        h.ok(d, status=204)
    for method, tail, status in cases:
        op = h.invoke(process="fuzzer", f="fuzz", session="v", server=SRV, method=method, path=f"/sessions/v/{tail}")
        (h.ok if 200 <= status < 300 else h.fail)(op, status=status)
    scenario: dict[str, object] = {} if plan is None else {"backend": {"faults": plan}}
    if target is not None:
        scenario["target"] = target
    return CHECKERS["passthrough"].check(RunData(scenario=scenario, history=h.events))


def test_a_refused_backend_route_is_flagged_and_its_answer_is_not() -> None:
    v = _run([("GET", "health", 200), ("POST", "generate", 200), ("GET", "./v1/models", 403)])
    assert v.status == "invalid"
    assert [x.kind for x in v.violations] == ["legal_passthrough_refused"]
    assert "/v1/models" in v.violations[0].message
    assert _run([("GET", "health", 200), ("GET", "v1/models/../models", 200)]).status == "valid"


def test_hostile_spellings_admin_paths_and_dead_sessions_are_not_judged() -> None:
    odd = [
        ("POST", "abort_request", 403),
        ("POST", "../../admin/reset", 400),
        ("GET", "%2e%2e/health", 400),
        ("GET", "a\\..\\health", 400),
        ("GET", "..", 400),
        ("GET", "./v1//models", 404),  # an empty segment: another backend path, which the backend may not know
        ("POST", "health", 405),  # not the route's method
        ("POST", "v1/chat/completions", 400),  # the tracked chat endpoint
    ]
    v = _run(odd)
    assert v.status == "valid" and not re.search(r"(?<!not_)judged \d", v.notes), v.notes
    assert _run([("GET", "health", 404)], delete_first=True).status == "valid"
    assert _run([("POST", "generate", 400)], plan=[{"kind": "http_400"}]).status == "valid"
    assert _run([("GET", "health", 400)], plan=[{"kind": "http_400"}]).status == "invalid"


def test_plain_path_is_rfc3986_dot_removal_and_refuses_odd_bytes() -> None:
    assert plain_path("./v1/models") == "/v1/models"
    assert plain_path("./v1//models") is None and plain_path("v1/models/") is None
    assert plain_path("v1/models/../models") == "/v1/models"
    for odd in ("..", "a/../../x", "%2e%2e", "a\\b", "a?b", "x#y", "h\x00", "h\u00e9"):
        assert plain_path(odd) is None, odd


def test_the_routes_are_the_fake_backends_own_and_answer_2xx() -> None:
    import asyncio
    import json

    import httpx

    app = create_app(seed=0)
    assert not {p for _, p in BACKEND_ROUTES} & {"/abort_request", "/stats", "/admin/plan", "/admin/reset"}

    async def call(method: str, path: str) -> int:
        body = (
            {"text": "Name one prime number.", "sampling_params": {"max_new_tokens": 4}} if method == "POST" else None
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as c:
            r = await c.request(method, path, content=None if body is None else json.dumps(body))
            return r.status_code

    for method, path in sorted(BACKEND_ROUTES):
        assert 200 <= asyncio.run(call(method, path)) < 300, (method, path)
    assert asyncio.run(call("GET", "/v1/models/ab")) == 404  # another model: the backend's own 404, not judged


def test_retrieve_model_of_another_id_is_the_backends_404_and_limits_are_not_refusals() -> None:
    assert _run([("GET", "v1/models/m1", 404), ("POST", "generate", 413)]).status == "valid"
    v = _run([("GET", "v1/models/m1", 403)])
    assert [x.kind for x in v.violations] == ["legal_passthrough_refused"]
    assert _run([("GET", "v1/models/m1/x", 403)]).status == "valid"  # two segments: not the retrieve-model route


def test_a_control_endpoint_answered_2xx_reached_the_backends_admin_plane() -> None:
    v = _run([("GET", "stats", 200), ("POST", "./abort_request", 200), ("GET", "stats", 403)])
    assert [x.kind for x in v.violations] == ["admin_reached", "admin_reached"]
    assert _run([("GET", "stats", 404), ("POST", "admin/reset", 403)]).status == "valid"


REF = {"kind": "reference"}


def test_the_reference_servers_allowlist_refuses_a_plain_path_off_it_403() -> None:
    # off the default allowlist: the reference server's 403; relayed (the fake's 404, a 2xx) is a bypass
    ok = [("GET", "v1/models-list", 403), ("POST", "admin/reset", 403), ("GET", "stats", 403), ("GET", "health", 200)]
    assert _run(ok, target=REF).status == "valid"
    v = _run([("GET", "v1/models-list", 404), ("GET", "v1/modelsxy", 200), ("GET", "v1/models/m", 404)], target=REF)
    assert [x.kind for x in v.violations] == ["allowlist_bypassed", "allowlist_bypassed"]
    assert "/v1/models-list" in v.violations[0].message and "/v1/models/*" in v.violations[0].message
    # a control endpoint's 2xx is admin_reached alone; a dead session's 404, a 5xx, odd bytes are not judged
    v = _run([("POST", "abort_request", 200)], target=REF)
    assert [x.kind for x in v.violations] == ["admin_reached"]
    assert _run([("GET", "v1/models-list", 404)], delete_first=True, target=REF).status == "valid"
    assert _run([("GET", "v1/models-list", 502), ("GET", "a<b/../x", 400)], target=REF).status == "valid"


def test_the_allowlist_rule_is_the_reference_servers_only_and_follows_its_passthrough_path_args() -> None:
    relayed = [("GET", "v1/models-list", 404), ("POST", "admin/reset", 404)]
    assert _run(relayed).status == "valid"  # no target: any server may proxy every path (CONTEXT.md)
    assert _run(relayed, target={"kind": "command"}).status == "valid"
    # a sim --target is another server; the coverage proofs' bug wrappers are the reference app with one bug
    h = History(Tick())
    op = h.invoke(process="fuzzer", f="create", server=SRV)
    h.ok(op, status=200, session="v")
    op = h.invoke(process="fuzzer", f="fuzz", session="v", server=SRV, method="GET", path="/sessions/v/v1/models-list")
    h.fail(op, status=404)
    for sim_target, status in (("asgi:mine:app", "valid"), ("asgi:harness.coverage._bugs:open_passthrough", "invalid")):
        scenario = {"target": REF, "sim": {"target": sim_target}}
        assert CHECKERS["passthrough"].check(RunData(scenario=scenario, history=h.events)).status == status
    args = {"kind": "reference", "server_args": ["--passthrough-path", "/v1/models-list", "--passthrough-path=/x/*"]}
    v = _run([*relayed, ("GET", "x/y", 200), ("GET", "x", 404), ("POST", "v1/completions", 404)], target=args)
    assert [x.message.split(" (")[0] for x in v.violations] == [
        "POST /sessions/v/admin/reset",
        "GET /sessions/v/x",
        "POST /sessions/v/v1/completions",
    ]
