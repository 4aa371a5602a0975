"""blocking: a DELETE that completed after an overlapping chat, settled by the server's evidence (issue 16).

From client timing alone such a DELETE either waited behind the chat's proxy
phase or reached the server late (unknown). The server's lines settle it as no
wait when the chat's proxy phase, placed on the client's clock
(harness/checkers/clock.py), had ended before the DELETE was sent (the client
read the chat's answer late), or when the DELETE's ``session_deleted`` came
before that proxy phase ended. Otherwise it stays unknown, never invalid.
"""

from __future__ import annotations

from test_checkers_builders import EPOCH, RunBuilder

from harness.checkers import CHECKERS, Verdict
from harness.rundata import RunData


def judge(run: RunData) -> Verdict:
    return CHECKERS["blocking"].check(run)


def delete_beside_chat(*, proxy_end: float, sent: float, deleted: float) -> RunData:
    """Chat 1.0-1.5 on the client's clock (its answer read at 1.5), whose proxy phase ended at
    ``proxy_end`` on the server; a DELETE of the session sent at ``sent``, logged ``session_deleted`` at
    ``deleted`` and read (204) at 1.55, after the chat's answer."""
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0, t0=0.5, t1=0.6)  # answered at once: pins the server's clock to the client's
    b.chat(sid, 1, t0=1.0, t1=1.5)
    done = [ln for ln in b.logs if ln["event"] == "chat_done"][-1]
    done.update(ts=EPOCH + proxy_end + 0.0004, total_ms=(proxy_end - 1.0) * 1000 + 0.4, tokenize_out_ms=0.4)
    done.update(proxy_elapsed_ms=(proxy_end - 1.0) * 1000 - 1.0)
    d = b.invoke("delete", at=sent, session=sid, request_id=b.uid("r"), process="nemesis")
    b.log("session_deleted", "http://127.0.0.1:9001", deleted, session_id=sid)
    b.complete(d, status=204, at=1.55, framing=b.framing(0))
    b.deleted.add(sid)
    return b.build()


def test_a_delete_sent_after_the_proxy_phase_ended_did_not_wait_behind_it() -> None:
    """The server finished the chat's proxy at 1.2; the starved client read its answer only at 1.5, and
    sent the DELETE at 1.3 in between."""
    v = judge(delete_beside_chat(proxy_end=1.2, sent=1.3, deleted=1.52))
    assert v.status == "valid", v.notes
    # the pinning chat bounds the offset to 10 ms (chat_start only: the client read its answer 0.1 s after it
    # was sent, and chat_done is no bound), so the proxy phase had at most 10 ms left when the DELETE went out
    assert "at most 10 ms left" in v.notes, v.notes
    v = judge(delete_beside_chat(proxy_end=1.49, sent=1.3, deleted=1.52))  # the proxy was still running
    assert v.status == "unknown" and not v.violations and "reached the server late" in v.notes, v.notes


def test_a_delete_done_before_the_proxy_phase_ended_did_not_wait_behind_it() -> None:
    v = judge(delete_beside_chat(proxy_end=1.49, sent=1.05, deleted=1.06))
    assert v.status == "valid" and "session_deleted" in v.notes, v.notes
    v = judge(delete_beside_chat(proxy_end=1.49, sent=1.05, deleted=1.495))  # done after it: waited, or late
    assert v.status == "unknown" and not v.violations, v.notes
