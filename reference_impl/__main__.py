"""``python -m reference_impl``: see launcher.py (``harness serve`` dispatches here)."""

from __future__ import annotations

import sys

from .launcher import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
