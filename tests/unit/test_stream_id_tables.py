"""The per-session pass's compact id tables (harness/checkers/stream_index.py, issue 13): ``IdTable`` (64-bit
values -> serials), ``IdSet`` (the spill's operation ids) and the LogIndex codes of 16-digit caller ids they
back. Exact whatever the values: every value colliding in one slot, growth through many resizes. <1 s."""

from __future__ import annotations

import random

import pytest

from harness.checkers.stream_index import IdSet, IdTable, LogIndex

MASK64 = (1 << 64) - 1
INV_GOLDEN = pow(0x9E3779B97F4A7C15, -1, 1 << 64)  # k * INV_GOLDEN hashes to k: all in the first slots


def _values() -> list[int]:
    rng = random.Random(13)
    colliding = [(k * INV_GOLDEN) & MASK64 for k in range(600)]  # one home slot for all at any table size
    strided = [k << 40 for k in range(600)]  # the low bits all equal
    return [0, MASK64, 1, MASK64 - 1, *range(2, 500), *colliding, *strided, *(rng.getrandbits(64) for _ in range(3000))]


def test_id_table_gives_each_distinct_value_one_serial_in_first_seen_order() -> None:
    values = _values()
    distinct = list(dict.fromkeys(values))
    table = IdTable(size=16)  # grows ~9 times on the way
    serials = [table.add(v) for v in values]
    expect = {v: i for i, v in enumerate(distinct)}
    assert serials == [expect[v] for v in values]
    assert len(table) == len(distinct) and list(table.values) == distinct
    assert [table.add(v) for v in distinct] == list(range(len(distinct)))  # adding again: the same serials
    assert all(table.get(v) == i for i, v in enumerate(distinct))
    seen = set(distinct)
    absent = [v for v in ((k * INV_GOLDEN + 7) & MASK64 for k in range(600)) if v not in seen] + [(600 << 40) + 3]
    assert all(table.get(v) is None for v in absent)
    assert table.nbytes() < 24 * len(distinct)  # compact: a value and a few slots each


def test_id_set_is_a_set_of_ids() -> None:
    ids = IdSet()
    got = [ids.add(x) for x in [5, "5", 5.0, True, 1, -3, -3, 2**70, float(2**70), "op", MASK64, 0, None, "op"]]
    #                          new  new  dup  new   dup new  dup new    dup          new   new   new new   dup
    assert got == [True, True, False, True, False, True, False, True, False, True, True, True, True, False]
    assert len(ids) == 9
    assert all(x in ids for x in [5, 5.0, "5", 1, True, 1.0, -3, 2**70, "op", MASK64, 0, None])
    assert all(x not in ids for x in [6, "6", 2.5, -4, 2**71, MASK64 - 1, float("nan")]) and False in ids  # False == 0
    with pytest.raises(TypeError):  # unhashable, as for a set (the spill's NotStreamable path catches it)
        ids.add([1])
    many = IdSet()
    assert all(many.add(k * 7 + 10_000_000) for k in range(20_000))
    assert not any(many.add(k * 7 + 10_000_000) for k in range(20_000)) and len(many) == 20_000
    assert 20_000 * 7 + 10_000_000 not in many and 10_000_007 in many


def test_log_index_codes_of_16_digit_ids_are_exact() -> None:
    ix = LogIndex([])
    values = _values()[:1500]
    strings = [format(v, "016x") for v in values] + ["0", "ffffffffffffffff"[:15], "DEADBEEFDEADBEEF", "x-1", ""]
    codes = [ix.intern(s) for s in strings]
    assert len(set(codes)) == len(set(strings))
    assert [ix.name(c) for c in codes] == strings  # each code gives back its string
    assert [ix.code(s) for s in strings] == codes
    assert ix.code(format((5 << 40) + 1, "016x")) is None  # a 16-digit id never coded
    assert ix.code("ABCDEF0123456789") is None and ix.code("0123456789abcdef0") is None


def test_a_caller_id_of_fifteen_fs_is_not_taken_for_no_caller() -> None:
    """15 hex digits of f coded to 2**64 - 1, the "no caller" marker: its chat_done was dropped from by_caller."""
    caller = "f" * 15
    lines = [
        {"event": "chat_start", "ts": 1.0, "pid": 1, "req_id": "r1", "session_id": "s", "caller_request_id": caller},
        {
            "event": "chat_done",
            "ts": 2.0,
            "pid": 1,
            "req_id": "r1",
            "session_id": "s",
            "caller_request_id": caller,
            "status": 200,
            "total_ms": 5.0,
        },
    ]
    index = LogIndex(lines)
    assert index.logged(caller)
    done = index.done_by_caller(caller)
    assert done is not None and done[:2] == (1, 200.0)
