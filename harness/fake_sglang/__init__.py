"""The deterministic, fault-injecting fake SGLang backend (see docs/fake_sglang.md).

A session server is only as trustworthy as the backend it was tested against:
this one answers like SGLang where a session server looks (token ids that
decode to the content, ``meta_info.output_token_logprobs``, ``<|im_end|>``),
answers the same way for the same request identity in every run, and breaks
on purpose (aborts, HTTP errors, resets, truncated bodies, hangs, slow drips,
malformed JSON) where a TOML plan or an ``x-fake-fault`` header says so.
"""

from __future__ import annotations

from .app import FakeSGLang, create_app
from .plan import FAULTS, FaultPlan, FaultSpec, PlanError, load_plan, parse_fault_header, parse_plan, plan_from_text

__all__ = [
    "FAULTS",
    "FakeSGLang",
    "FaultPlan",
    "FaultSpec",
    "PlanError",
    "create_app",
    "load_plan",
    "parse_fault_header",
    "parse_plan",
    "plan_from_text",
]
