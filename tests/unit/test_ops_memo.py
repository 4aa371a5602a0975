"""pair_ops remembers a run's pairing on its History (every checker of a run pairs the same one): the same
list gives the same operations, and an edited list (an event appended or replaced) is paired afresh."""

from __future__ import annotations

from typing import Any

from harness.checkers.ops import pair_ops
from harness.rundata import History


def events(n: int) -> History:
    out: list[dict[str, Any]] = []
    for op in range(n):
        base = {"op": op, "f": "chat", "process": "p", "session": "s", "time": float(op)}
        out += [{**base, "type": "invoke"}, {**base, "type": "ok", "status": 200}]
    for i, e in enumerate(out):
        e["index"] = i
    return History(out)


def test_same_history_same_ops_new_list() -> None:
    h = events(3)
    a, b = pair_ops(h), pair_ops(h)
    assert a is not b and all(x is y for x, y in zip(a, b, strict=True))
    b.pop()
    assert len(pair_ops(h)) == 3  # a caller's edit of its list touches no one else's


def test_edited_history_is_paired_again() -> None:
    h = events(3)
    assert [o.status for o in pair_ops(h)] == [200, 200, 200]
    h[-1] = {**h[-1], "status": 503}  # replaced, same length
    assert [o.status for o in pair_ops(h)] == [200, 200, 503]
    h.append({"op": 9, "f": "get", "process": "p", "type": "invoke", "time": 9.0, "index": 6})
    ops = pair_ops(h)
    assert len(ops) == 4 and ops[-1].completion is None
