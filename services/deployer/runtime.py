"""The deployer's process-wide parts: its backend, its reconciler and the loops that keep them honest."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.lib.common.cluster import RayCluster
from services.lib.common.context import Platform
from services.deployer.backend import InstanceBackend
from services.deployer.local import LocalProcessBackend
from services.deployer.modelcache import ModelCache
from services.deployer.ray_backend import RayInstanceBackend
from services.deployer.reconciler import Reconciler
from services.deployer.settings import DeployerSettings, deployer_settings

log = logging.getLogger(__name__)


def make_backend(platform: Platform, settings: DeployerSettings) -> InstanceBackend:
    """Ray actors in the service's pool on a Ray cluster, else local processes: the one decision;
    nothing above the backend differs."""
    if settings.backend != "local":
        raise ValueError(f"unknown deployer backend {settings.backend!r}; available: local")
    # In cluster mode this folder must be on the shared work folder: Ray nodes read the models there.
    root = Path(settings.root or Path(platform.settings.work_dir or ".") / "deployer").resolve()
    models = ModelCache(platform.store, root / "models", cache_bucket=platform.settings.system_bucket)
    if isinstance(platform.cluster, RayCluster):
        return RayInstanceBackend(platform.cluster, root=root, models=models, host=settings.ray_host or None)
    return LocalProcessBackend(root=root, models=models, host=settings.host,
                               advertise_host=settings.advertise_host or None)


def build_reconciler(platform: Platform) -> Reconciler:
    """The deployer's component: one reconciler per process, built by the composition root."""
    settings = deployer_settings()
    return Reconciler(platform, make_backend(platform, settings), settings)


async def _every(seconds: float, what, name: str) -> None:
    while True:
        try:
            await what()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("deployer %s failed", name)
        await asyncio.sleep(seconds)


async def run_deployer(reconciler: Reconciler) -> None:
    """Background task: resync, health checks and log shipping; stops every instance on shutdown."""
    settings = reconciler.settings
    loops = [asyncio.create_task(_every(settings.resync_seconds, reconciler.resync, "resync")),
             asyncio.create_task(_every(settings.health_interval_seconds, reconciler.check_health, "health check")),
             asyncio.create_task(_every(settings.log_ship_seconds, reconciler.ship_logs, "log shipping"))]
    try:
        await asyncio.gather(*loops)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await reconciler.close()
