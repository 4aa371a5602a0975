"""Which library scenario provokes each known-bad variant in simulation, and which checker must flag it.

One table for every reader: tests/unit/test_sim_teeth.py (each variant flagged within a few seeds),
bench/bench_sim.py (time to the first flagged seed) and bench/bench_ray_teeth.py (explore on Ray against
``--jobs``). ``TEETH_TOKENIZER`` names the tokenizer family a variant's bug needs: ``retokenize_history``
is visible only where re-rendering the history changes the tokens.
"""

from __future__ import annotations

__all__ = ["TEETH", "TEETH_TOKENIZER"]

# known-bad variant -> (the cheapest library scenario that provokes it, the checker that must flag it)
TEETH: dict[str, tuple[str, str]] = {
    "auto_create": ("delete_during_proxy", "no_resurrection"),
    "commit_aborted": ("abort_retries_exhausted", "provisional"),
    "no_closing_recheck": ("client_disconnect", "no_resurrection"),
    "no_num_assistant_guard": ("duplicate_inflight_retry", "stale_writers"),
    "provisional_never_superseded": ("abort_retry_supersede", "provisional"),
    "leak_deleted": ("abort_retries_exhausted", "leaks"),
    "inflight_leak": ("abort_retries_exhausted", "log_consistency"),
    "echo_upstream_framing": ("abort_retries_exhausted", "http_framing"),
    "retokenize_history": ("abort_retry_supersede", "token_state"),
}
# variants whose bug only shows with some chat templates -> the tokenizer family their test runs on
TEETH_TOKENIZER: dict[str, str] = {"retokenize_history": "reasoning"}
