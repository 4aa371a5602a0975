"""Caller request ids (``x-request-id``): wide enough not to collide in a 10^5-session run, still seeded.

exactly_once, no_resurrection and log_consistency join backend executions and server log lines to chats by the
caller request id; two chats sharing one are merged into one entry, so a collision reads as a double execution
or an unknown one. 8 hex digits (32 bits) gave ~16 colliding pairs among the ~3.7 x 10^5 chats of a
10^5-session run.
"""

from __future__ import annotations

import re

from harness.seams import IdSource
from harness.workload import derive_seed


def test_caller_request_ids_of_a_large_run_do_not_collide() -> None:
    # 4 x 10^5 ids (a 10^5-session run's chats) from agents' sources seeded as plan_sessions seeds them;
    # 40 sources of 10^4 ids each rather than 10^5 of 4 (the same count of pairs, a second instead of 20)
    ids = [IdSource(derive_seed(13, "agent", i)) for i in range(40)]
    got = [src.caller_request_id() for src in ids for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", r) for r in got[:1000])
    assert len(set(got)) == len(got)


def test_caller_request_ids_are_seeded_and_leave_the_other_draws_alone() -> None:
    a, b, plain = IdSource(7), IdSource(7), IdSource(7)
    assert [a.caller_request_id() for _ in range(5)] == [b.caller_request_id() for _ in range(5)]
    # the first half is request_id()'s draw: the generator's later draws (message content) are unchanged
    assert IdSource(7).caller_request_id()[:8] == IdSource(7).request_id()
    [plain.request_id() for _ in range(5)]
    assert a.rng.random() == plain.rng.random()
    assert IdSource(8).caller_request_id() != IdSource(7).caller_request_id()
