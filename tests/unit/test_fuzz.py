"""The fuzz workload: bad requests derived from the chat request schema, a function of the seed alone."""

from __future__ import annotations

import json

import pytest

from harness.fuzz import CATEGORIES, SCHEMA, derive_cases
from harness.scenario import ScenarioError, parse_scenario


def test_same_seed_same_cases_other_seed_other_cases() -> None:
    a, b, c = derive_cases(7, 40), derive_cases(7, 40), derive_cases(8, 40)
    assert a == b
    assert [x.name for x in a] != [x.name for x in c]
    assert derive_cases(7, 10) == a[:10]  # a longer run extends a shorter one


def test_every_category_appears_once_n_covers_them() -> None:
    cases = derive_cases(1, len(CATEGORIES))
    assert [c.category for c in cases] == list(CATEGORIES)
    assert all(c.expect in ("4xx", "no_5xx") for c in derive_cases(3, 200))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_category_sends_every_shape_once_it_has_had_as_many_cases(seed: int) -> None:
    """Shapes are drawn in turn (a seeded start), not with replacement: at seed 0 the pass-through's ``x/../``
    spelling and the PUT to the chat path were never sent by the library, so the server code they reach ran in
    no scenario (t12-cov coverage). 6 wrong-method shapes, 15 pass-through ones."""
    n = len(CATEGORIES)
    for category, shapes in (("wrong_method", 6), ("passthrough", 15)):
        names = [c.name for c in derive_cases(seed, n * shapes) if c.category == category]
        assert len(names) == shapes and len(set(names)) == shapes, (category, names)


def test_wrong_type_cases_never_use_a_type_the_schema_allows() -> None:
    seen = set()
    for c in derive_cases(5, 400):
        if c.category != "wrong_type":
            continue
        key, _, typ = c.name.removeprefix("wrong_type:").partition("=")
        assert typ not in SCHEMA[key], c.name
        body = json.loads(c.body or b"")
        assert key in body
        assert c.expect == ("4xx" if key == "messages" else "no_5xx")
        seen.add(key)
    assert len(seen) >= len(SCHEMA) // 2  # the table is walked, not one key


def test_must_reject_cases_are_unusable_by_any_server() -> None:
    for c in derive_cases(11, 300):
        if c.expect != "4xx" or not c.chat:
            continue
        try:
            body = json.loads(c.body or b"")
        except ValueError:
            continue  # not JSON: nobody can use it
        msgs = body.get("messages") if isinstance(body, dict) else None
        assert not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs)), c.name


def test_fuzz_key_is_validated_with_file_and_key() -> None:
    assert parse_scenario({"name": "x", "workload": {"fuzz": 12}}).workload.fuzz == 12
    assert parse_scenario({"name": "x"}).workload.fuzz == 0
    with pytest.raises(ScenarioError, match=r"f\.toml: key 'workload\.fuzz': expected an integer"):
        parse_scenario({"name": "x", "workload": {"fuzz": "many"}}, "f.toml")
    with pytest.raises(ScenarioError, match=r"workload\.fuzz': must be >= 0"):
        parse_scenario({"name": "x", "workload": {"fuzz": -1}}, "f.toml")
