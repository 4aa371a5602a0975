"""Does a replay reproduce the incident? Compare outcome sequences, session by session.

The claim an incident scenario makes is narrow and checkable: run it (in
simulation, on a seed) and the ``chat_done`` lines of its sessions show the
same outcome classes in the same order as the production log did: the same
request loses the ``state_changed_during_proxy`` race, the same turn is
aborted and then retried, the same chat finds its session closing. Latency
figures and token counts are not compared (contents are not in the logs, and
simulated time is not production time).

Sessions are joined by label: the replay's session ids are chosen by its
server, and the scripted agent records which label each chat belongs to
(``script_session`` on the history's chat invokes). Within a session the
sequences (``chat_done`` outcomes and ``session_deleted``) are compared in
log order; across sessions the global
order is reported but not required (independent sessions that finished a
millisecond apart may swap without changing what happened to either).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.scenario import Scenario

__all__ = ["ReplayCheck", "compare", "expected_outcomes", "replay", "replay_outcomes"]


@dataclass
class ReplayCheck:
    expected: dict[str, list[str]]  # session label -> outcomes in chat_done order
    actual: dict[str, list[str]]
    expected_order: list[str] = field(default_factory=list)  # "label:outcome" globally
    actual_order: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def reproduced(self) -> bool:
        return self.error is None and self.expected == self.actual

    @property
    def same_global_order(self) -> bool:
        return self.expected_order == self.actual_order

    def report(self) -> str:
        if self.error is not None:
            return f"replay failed: {self.error}"
        lines = []
        for sid in sorted(set(self.expected) | set(self.actual)):
            e, a = self.expected.get(sid, []), self.actual.get(sid, [])
            mark = "same" if e == a else "DIFFERENT"
            lines.append(f"  {sid[:12]}: {mark}\n    original: {' -> '.join(e)}\n    replay:   {' -> '.join(a)}")
        verdict = "REPRODUCED" if self.reproduced else "NOT REPRODUCED"
        order = "same global order" if self.same_global_order else "global order differs across sessions"
        return f"{verdict} ({order})\n" + "\n".join(lines)


def _split(seq: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    per: dict[str, list[str]] = {}
    for item in seq:
        sid, _, outcome = item.rpartition(":")
        if outcome == "unfinished":
            continue
        per.setdefault(sid, []).append(outcome)
    return per, [s for s in seq if not s.endswith(":unfinished")]


def expected_outcomes(sc: Scenario) -> list[str]:
    """``label:outcome`` in original chat_done order, from ``checks.options.incident.outcomes``."""
    inc = sc.checks.options.get("incident")
    raw = inc.get("outcomes") if isinstance(inc, Mapping) else None
    if not isinstance(raw, list):
        raise ValueError(f"{sc.source}: no [checks.options.incident] outcomes: not an imported incident")
    return [str(x) for x in raw]


def replay_outcomes(history: Sequence[Mapping[str, Any]], server_logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """``label:outcome`` of a replay's chat_done lines, joined to script labels through the history."""
    label: dict[str, str] = {}
    for ev in history:
        if ev.get("type") == "invoke" and ev.get("f") == "chat" and ev.get("script_session") and ev.get("session"):
            label[str(ev["session"])] = str(ev["script_session"])
    out = []
    for ln in server_logs:
        sid = str(ln.get("session_id"))
        if ln.get("event") == "chat_done":
            out.append(f"{label.get(sid, sid)}:{ln.get('outcome')}")
        elif ln.get("event") == "session_deleted":
            out.append(f"{label.get(sid, sid)}:deleted")
    return out


def compare(expected: Sequence[str], actual: Sequence[str]) -> ReplayCheck:
    e, eo = _split(expected)
    a, ao = _split(actual)
    return ReplayCheck(e, a, eo, ao)


def replay(sc: Scenario, seed: int = 0, strategy: str = "random") -> ReplayCheck:
    """Simulate ``sc`` once and compare its outcomes with the incident's."""
    from harness.sim.runner import simulate

    expected = expected_outcomes(sc)
    out = simulate(sc, seed, strategy, trace=False)
    if out.data is None or out.error is not None:
        return ReplayCheck({}, {}, error=out.error or "no data")
    return compare(expected, replay_outcomes(out.data.history, out.data.server_logs))
