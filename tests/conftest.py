"""Suite-wide collection order: the slow tests first.

``make test`` runs on two pytest-xdist workers (``--dist worksteal``). A test of
a minute or two that starts last keeps one worker busy while the other idles, so
the ``slow``-marked tests are queued first and the many short ones fill in
behind them (longest-first scheduling). The order within each group is kept.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: False (slow) first
