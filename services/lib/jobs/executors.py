"""Which executor a job kind's runner uses: the composition root's one decision, from the platform's
compute cluster (``Settings.ray_address``). Nothing above the executor differs between the two."""
from __future__ import annotations

from collections.abc import Callable

from services.lib.common.cluster import RayCluster
from services.lib.common.context import Platform
from services.lib.jobs.executor import Executor
from services.lib.jobs.ray_executor import RayExecutor


def executor_for(platform: Platform, *, local: Callable[[], Executor], max_concurrent: int = 4) -> Executor:
    """A ``RayExecutor`` on a Ray cluster, else what ``local`` builds (a ``LocalProcessExecutor``)."""
    if isinstance(platform.cluster, RayCluster):
        return RayExecutor(platform.cluster, max_concurrent=max_concurrent)
    return local()
