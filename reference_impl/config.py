"""Server configuration and the registry of named variants.

Why variants live in one registry: the harness proves it has teeth by running
the same scenarios against deliberately broken servers and asserting that a
checker flags each one. A variant is therefore a *name* a scenario can carry,
validated up front (a misspelt variant that silently runs the correct server
would prove nothing), and each name maps to one line saying what it changes.

Design alternatives (defensible choices, compared side by side):
``lock_restore``, ``delete_cancel``, ``conflict_409``. Known-bad variants
(each a real bug class seen in session servers): the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BAD_VARIANTS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_PASSTHROUGH_PATHS",
    "DESIGN_VARIANTS",
    "VARIANTS",
    "ServerConfig",
    "VariantError",
]

# Request limits (docs/reference_server.md, "Limits"): 4 MiB holds a 128k-token conversation several times
# over; 64 levels holds any tool schema seen in practice and keeps the parser far from recursion limits.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64

# Backend paths a session's pass-through may reach: generation and read-only model info. Never the
# engine's control plane (/abort_request, /flush_cache, /update_weights*) nor the fake's /admin/*.
DEFAULT_PASSTHROUGH_PATHS: tuple[str, ...] = (
    "/generate",
    "/v1/completions",
    "/v1/models",
    "/v1/models/*",
    "/get_model_info",
    "/health",
    "/health_generate",
)

DESIGN_VARIANTS: dict[str, str] = {
    "lock_restore": "hold the session lock across the backend call (Phase 2): serialized, no stale writers, slower",
    "delete_cancel": "DELETE cancels the session's in-flight backend call and POSTs /abort_request {rid} to it",
    "conflict_409": "a Phase 3 skip because state changed answers 409 SessionStateConflictError, not a silent 200",
}

BAD_VARIANTS: dict[str, str] = {
    "auto_create": "BAD: chat to an unknown session id creates it, so deleted sessions come back",
    "commit_aborted": "BAD: finish_reason=abort is treated as stop: partial turn committed, no x-sglang-aborted header",
    "no_closing_recheck": "BAD: Phases 1 and 3 skip the closing re-check: a chat racing a DELETE commits into a dead "
    "session and answers 200",
    "no_num_assistant_guard": "BAD: Phase 3 skips the num_assistant guard: stale concurrent writers all commit",
    "provisional_never_superseded": "BAD: a successful retry leaves the provisional record in place (two records "
    "for one turn, provisional not at the tail)",
    "leak_deleted": "BAD: DELETE answers 204 but the session object stays in memory forever",
    "inflight_leak": "BAD: the in-flight counter is decremented only on the committed path",
    "echo_upstream_framing": "BAD: the backend's server/date/content-length headers are copied onto the reply",
    "retokenize_history": "BAD: every turn re-renders and re-encodes the whole history (no checkpoint, no prefix "
    "check): the model's own tokens are silently replaced by the template's re-rendering",
}

VARIANTS: dict[str, str] = {**DESIGN_VARIANTS, **BAD_VARIANTS}


class VariantError(ValueError):
    """An unknown variant name; the message lists the allowed ones."""


def check_variants(names: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> frozenset[str]:
    unknown = sorted(set(names) - VARIANTS.keys())
    if unknown:
        allowed = ", ".join(sorted(VARIANTS))
        raise VariantError(f"unknown variant(s) {', '.join(unknown)}; allowed: {allowed}")
    return frozenset(names)


@dataclass(frozen=True)
class ServerConfig:
    """Everything one server process needs; the seams (clock, ids, executor, transport) come separately."""

    backend_url: str = "http://127.0.0.1:30000"
    tokenizer: str | None = None
    variants: frozenset[str] = field(default_factory=frozenset)
    max_trim_tokens: int = 2
    worker_port: int = 0
    heartbeat_interval: float = 30.0
    tokenize_in_thread: bool = True
    backend_timeout: float = 600.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    passthrough_paths: tuple[str, ...] = DEFAULT_PASSTHROUGH_PATHS

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", check_variants(self.variants))
        object.__setattr__(self, "backend_url", self.backend_url.rstrip("/"))
        if self.max_trim_tokens < 0:
            raise ValueError(f"max_trim_tokens must be >= 0, got {self.max_trim_tokens}")
        if self.heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0 seconds, got {self.heartbeat_interval}")
        if self.backend_timeout <= 0:
            raise ValueError(f"backend_timeout must be > 0 seconds, got {self.backend_timeout}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if not 2 <= self.max_json_depth <= 512:
            raise ValueError(f"max_json_depth must be within [2, 512], got {self.max_json_depth}")
        object.__setattr__(self, "passthrough_paths", tuple(self.passthrough_paths))
        for p in self.passthrough_paths:
            if not p.startswith("/") or "//" in p or "/." in p or "%" in p:
                raise ValueError(f"passthrough path {p!r} must be a normalized absolute path such as /v1/models")

    def has(self, variant: str) -> bool:
        return variant in self.variants
