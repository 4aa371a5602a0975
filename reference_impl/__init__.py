"""The reference session server: TITO chat proxy with the three-phase split lock (CONTEXT.md).

``create_app(config, ...)`` builds the ASGI app; ``python -m reference_impl``
(or ``harness serve``) runs it as N independent uvicorn processes.

The names below are imported on first use (PEP 562): ``python -m reference_impl``
imports this package first, and the launcher's parent of N processes and its
``--help`` need neither the app nor its HTTP libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import VARIANTS, ServerConfig, VariantError

__all__ = ["VARIANTS", "ServerConfig", "VariantError", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("VARIANTS", "ServerConfig", "VariantError"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
