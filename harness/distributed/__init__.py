"""Ray as the engine beyond one machine (issue 15; docs/distributed.md).

Optional: ``pip install 'session-race-harness[ray]'``. Nothing here imports
Ray at module load, so the harness works (and these modules import) without it;
:func:`harness.distributed.pool.ray_available` says whether it is there.
"""

import argparse

from harness.distributed.pool import RayPool, RayUnavailable, ray_available

__all__ = ["RayPool", "RayUnavailable", "add_ray_option", "ray_available"]


def add_ray_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """Every command's ``--ray [ADDRESS]``: bare, a local head on 127.0.0.1 (``"local"``); else a cluster."""
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help=f"{what} (docs/distributed.md)")
