"""The reference session server: TITO chat proxy with the three-phase split lock (CONTEXT.md).

``create_app(config, ...)`` builds the ASGI app; ``python -m reference_impl``
(or ``harness serve``) runs it as N independent uvicorn processes.
"""

from .app import create_app
from .config import VARIANTS, ServerConfig, VariantError

__all__ = ["VARIANTS", "ServerConfig", "VariantError", "create_app"]
