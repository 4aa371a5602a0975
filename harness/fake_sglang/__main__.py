"""``python -m harness.fake_sglang``: the same as ``harness fake-sglang``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
