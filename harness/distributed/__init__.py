"""Ray as the engine beyond one machine (issue 15; docs/distributed.md).

Optional: ``pip install 'session-race-harness[ray]'``. Nothing here imports
Ray at module load, so the harness works (and these modules import) without it;
:func:`harness.distributed.pool.ray_available` says whether it is there.
"""

from harness.distributed.pool import RayPool, RayUnavailable, ray_available

__all__ = ["RayPool", "RayUnavailable", "ray_available"]
