"""The mutation score over a fixed sample cannot silently drop.

A seeded sample of 40 cosmic-ray mutants of the protocol modules
(reference_impl/app.py, tito.py, sessions.py, proxy.py), each killed (or not)
by the cheapest library scenarios in sim mode, one seed, stopping at the first
kill: the score must stay at or above FLOOR. The full measurement (every
scenario, a larger sample, triage of every survivor) is
``bench/bench_mutation.py`` -> bench/results_mutation.md.

The sample follows the modules: when someone edits app.py or tito.py the
seeded choice lands on other mutants and the score moves a little either way,
hence a floor a few mutants below the measured score rather than the exact
figure. A drop past it means a change made the library blind to bugs it used
to catch (or made the server's code paths unreachable by the scenarios):
look at the printed survivors before lowering FLOOR, and say why in the commit.
"""

from __future__ import annotations

import pytest

from harness.mutate import PROTOCOL_MODULES, MutationConfig, run_mutation
from harness.mutate._driver import ROOT
from harness.mutate._report import summary

SAMPLE = 40
SEED = 12
# the cheapest scenarios that, between them, made every kill of a 40-mutant trial sample, plus the ones
# that reach the hardening and TITO code: client bad input and the pass-through (malformed_requests),
# backend transport faults, and the tool and reasoning chat templates (``scenario:family`` runs the fake and
# the server on that shipped tokenizer family). tool_retry_rollback runs under `tools` only: it kills the
# same mutants as under chatml here, for half the seconds.
SCENARIOS = [
    "client_disconnect",
    "abort_retries_exhausted",
    "delete_during_proxy",
    "duplicate_inflight_retry",
    "variant_comparison",
    "tool_retry_rollback:tools",
    "abort_retries_exhausted:reasoning",
    "malformed_requests",
    "transport_faults",
    "retokenized_prompt",  # a backend that reports other prompt ids: the prefix invariant (R07), ~2 s a case
    "template_kwargs",  # chat_template_kwargs on the reasoning family, ~5 s a case at load 15
    "length_continue",  # a turn after a length-cut answer (checkpoint without the stop token), ~3 s a case
    "strict_tool_template",  # tool calls on a stricter template (scenarios/tokenizers/strict_tools), ~4 s a case
    "retokenized_tail",  # a reported prompt that rewrites one token near the checkpoint's end (R07's tail)
    "reasoning_length_cut",  # a reasoning turn cut by the length limit: the suffix after an unclosed think block
    "slow_tokenizer_template",  # a tokenizer with no Rust backend: how Tito.encode and the stand-in encode, ~1 s a case
    "empty_answers:tools",  # empty assistant content (with and without tool calls): _stand_in's marks, ~0.3 s a case
]
# measured on t12-teeth (main f71537f): 26 killed / 13 survived / 1 equivalent = 0.667 (commit 174179b's full
# sample, 462 s with 2 jobs at load ~13, the old 6-scenario set took 475 s at the same load; plus a60f3cde9426
# killed at 71fbd5a). The same sample scored 0.400 with the old kill set on f71537f (12 of its 40 were
# survivors cut by the old 3x timeout), 0.375 on f14cc1e; every step is in bench/results_mutation.md.
# The floor allows ~2 mutants of drift.
# t12-teeth3 commit 06fcc62 (the two scenarios above added, exactly_once's delete_cancel rule): 30 killed /
# 9 survived / 1 equivalent = 0.769 (652.5 s with 2 jobs at load ~15; 0b86e99 without the delete_cancel
# rule: 0.744 in 484.5 s), bench/results_mutation.md rows 5 and 6.
# t12-score (b4cbcd6..ff8c1fe: length_continue and strict_tool_template added last to the kill set,
# 01d81f4dcbae equivalent): 33 killed / 5 survived / 2 equivalent = 0.868 (796 s with 2 jobs at load ~10 with
# two other runs of mine beside it; the unchanged config took 297 s at load ~5 just before). The two scenarios
# run only for mutants the first eleven leave alive (8 of 40 here): ~3 s and ~4 s of CPU a case.
# t12-triage (58757a8: the fuzz's PUT chat, model route, rollback probe and plain-client turn reach
# malformed_requests): the same 33 / 5 / 2 = 0.868, 562 s with 2 jobs at load ~12-14 (the 120-sample measurement
# beside it); seconds to kill in sim median 12.3, p90 45.7, max 74.1 (first figures: the test did not print them).
# lead, 2026-12-02 (247b4af: Tito.encode's truncation guard adds 4 positions to tito.py, so the seeded sample moved:
# 27 killed / 8 survived / 5 equivalent = 0.771 with the 13 scenarios above; of its 8 survivors the whole library
# kills 5b97a1b5fab3 (reasoning_length_cut) and 526c78428e10 (retokenized_tail), so both join the kill set; the
# other 6 survive the whole library, untriaged: bench/results_mutation.md).
# t12-tito3b: slow_tokenizer_template added last (it kills 5cc269e38023 and 0e75e9fdc33c, two of the sample's
# survivors, by `harness mutate --ids`); the sample test itself was not re-run on that branch.
# lead, 2026-12-02 evening (main 204fa5d, after the t12-* merges: parse_answer's logprob check and the harmony
# closer in Tito add positions, 1,510 -> 1,558, so the seeded sample moved again; empty_answers:tools joined):
# 33 killed / 7 survived / 0 equivalent = 0.825, 101.6 s with 2 jobs beside one other run (on the previous
# draw, just before: 31 / 4 / 5 = 0.886). Its 7 survivors are listed in bench/results_mutation.md.
# Then the review's guard in Tito._followed_closer (one more position, 1,559: drawn again): 33 killed / 6 survived
# / 1 equivalent = 0.846, 43 s with 2 jobs on an idle box (main after 3276795).
MEASURED = 0.846
FLOOR = 0.77


@pytest.mark.slow
@pytest.mark.timeout(1500)  # 297-817 s measured on the shared box at load 5-15 (old kill set: 475 s at ~13, 79 s idle)
def test_mutation_score_over_the_fixed_sample_stays_above_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_mutation(
        MutationConfig(modules=PROTOCOL_MODULES, sample=SAMPLE, seed=SEED, seeds=[0], scenarios=SCENARIOS, jobs=2)
    )
    assert len(run.results) == SAMPLE
    assert not run.excluded_cases, f"the correct server is flagged on {run.excluded_cases}"
    counts = run.counts()
    assert counts.get("not_run", 0) == 0
    survivors = [r for r in run.results if r.status in ("survived", "timeout")]
    stk = summary(run, ROOT)["seconds_to_kill_sim"]  # the same figures as harness mutate's summary.md
    with capsys.disabled():
        print(f"\nmutation sample: score {run.score:.3f} (floor {FLOOR}), {counts}, {run.elapsed_s:.0f} s")
        print(f"  seconds to kill in sim: median {stk['median']}, p90 {stk['p90']}, max {stk['max']}")
        for r in survivors:
            m = r.mutant
            print(f"  {r.status} {m.id} {m.module}:{m.position.line} {m.position.function}: {m.before} -> {m.after}")
    assert run.score is not None and run.score >= FLOOR, f"score {run.score:.3f} < floor {FLOOR}"
