"""token_state rule 5: the tokens a turn adds are the appended messages, rendered once.

Built runs (test_checkers_builders.RunBuilder) whose records carry real token ids of the shipped
ChatML tokenizer, and whose chat requests carry the agent's message probe (harness.agents.message_probe).
"""

from __future__ import annotations

from typing import Any

from test_checkers_builders import RunBuilder

from harness.agents import message_probe
from harness.checkers import CHECKERS
from harness.rundata import RunData
from harness.tokenizer import load_tokenizer

TOK = load_tokenizer(None)
SYS = "You answer briefly and plainly."
HEAD = f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n"
GEN = "<|im_start|>assistant\n"


def enc(text: str) -> list[int]:
    return list(TOK.encode(text, add_special_tokens=False))


def run_with(second_suffix: str, last: str = "And another one?", first_answer: str = "Two.<|im_end|>") -> RunData:
    b = RunBuilder()
    sid = b.create()
    b.chat(sid, 0)
    b.chat(sid, 1)
    run = b.build()
    msgs0 = [{"role": "system", "content": SYS}, {"role": "user", "content": "Name a prime."}]
    msgs1 = [*msgs0, {"role": "assistant", "content": "Two."}, {"role": "user", "content": last}]
    probes = iter([message_probe(msgs0), message_probe(msgs1)])
    for e in run.history:
        if e.get("f") == "chat" and e.get("type") == "invoke":
            e["probe"] = next(probes)
    st = run.final_states[sid]
    assert st is not None
    r0, r1 = st["records"]
    p0, c0 = enc(HEAD + GEN), enc(first_answer)
    p1, c1 = [*p0, *c0, *enc(second_suffix)], enc("Three.<|im_end|>")
    for rec, p, c in ((r0, p0, c0), (r1, p1, c1)):
        rec["request"]["input_ids"] = p
        rec["response"]["choices"][0]["meta_info"]["output_token_logprobs"] = [[-0.1, t] for t in c]
    st["metadata"]["token_ids"] = [*p1, *c1]
    st["metadata"]["checkpoints"] = [len(p0) + len(c0), len(p1) + len(c1)]
    return run


def kinds(run: RunData) -> dict[str, Any]:
    return {v.kind: v.message for v in CHECKERS["token_state"].check(run).violations}


def test_the_appended_message_rendered_once_is_valid() -> None:
    run = run_with(f"\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}")
    assert kinds(run) == {}


def test_the_history_rendered_again_after_the_stored_tokens_is_flagged() -> None:
    again = f"\n{HEAD}<|im_start|>assistant\nTwo.<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    assert set(kinds(run_with(again))) == {"history_resent"}


def test_an_appended_message_that_never_reached_the_model_is_flagged() -> None:
    run = run_with(f"\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}", last="A retried tool result.")
    assert set(kinds(run)) == {"appended_missing"}


def test_a_prompt_without_the_generation_prompt_is_flagged() -> None:
    assert set(kinds(run_with("\n<|im_start|>user\nAnd another one?<|im_end|>\n"))) == {"no_generation_prompt"}


def test_an_agent_that_quotes_its_first_message_is_not_a_resend() -> None:
    quoted = f"You said: {SYS}"
    run = run_with(f"\n<|im_start|>user\n{quoted}<|im_end|>\n{GEN}", last=quoted)
    assert kinds(run) == {}


def test_a_join_that_closes_the_stored_turn_again_is_flagged() -> None:
    # rule 6: the model's stop token closed the turn; a suffix that starts with the closer again (a stop search
    # that missed it, a closer search that took another special token) renders a prompt no template renders
    doubled = f"<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    assert set(kinds(run_with(doubled))) == {"join_doubled"}


def test_a_length_cut_turn_closed_by_the_suffix_is_one_closing() -> None:
    # the model did not generate its stop token (finish_reason length): the suffix brings the closer, once
    closed = f"<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    assert kinds(run_with(closed, first_answer="Two")) == {}


def test_an_earlier_answer_rendered_again_after_the_stored_tokens_is_flagged() -> None:
    # a cut at the wrong stored message (2a55bb68a016: the first assistant turn) renders stored turns again
    answer = "Two is the smallest prime number."
    again = f"\n<|im_start|>assistant\n{answer}<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    assert set(kinds(run_with(again, first_answer=f"{answer}<|im_end|>"))) == {"history_resent"}
    once = f"\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    assert kinds(run_with(once, first_answer=f"{answer}<|im_end|>")) == {}


def test_an_appended_message_before_the_last_may_quote_an_earlier_answer() -> None:
    # two messages appended (a user note quoting the answer, then the question): the quote exemption reads every
    # appended message of the forwarded request, not only the last one (a correct server, no resend)
    answer = "Two is the smallest prime number."
    quote = f"You said: {answer}"
    suffix = f"\n<|im_start|>user\n{quote}<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    run = run_with(suffix, first_answer=f"{answer}<|im_end|>")
    msgs0 = [{"role": "system", "content": SYS}, {"role": "user", "content": "Name a prime."}]
    msgs1 = [
        *msgs0,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": quote},
        {"role": "user", "content": "And another one?"},
    ]
    st = run.final_states[next(iter(run.final_states))]
    assert st is not None
    for rec, msgs in zip(st["records"], (msgs0, msgs1), strict=True):
        rec["request"]["messages"] = msgs
    assert kinds(run) == {}
    # the same prompt with the stored answer rendered again (no message quotes it twice) is still a resend
    again = f"\n<|im_start|>assistant\n{answer}<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n{GEN}"
    run = run_with(again, first_answer=f"{answer}<|im_end|>")
    st = run.final_states[next(iter(run.final_states))]
    assert st is not None
    msgs1 = [*msgs0, {"role": "assistant", "content": answer}, {"role": "user", "content": "And another one?"}]
    for rec, msgs in zip(st["records"], (msgs0, msgs1), strict=True):
        rec["request"]["messages"] = msgs
    assert set(kinds(run)) == {"history_resent"}
