"""The deployer's process-wide parts: its backend, its reconciler and the loops that keep them honest."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.lib.common.cluster import RayCluster
from services.lib.common.context import Platform
from services.lib.common.leader import LEADERS, LeaderLease, dead_on_this_machine, holder_name
from services.deployer.backend import InstanceBackend
from services.deployer.local import LocalProcessBackend
from services.deployer.modelcache import ModelCache
from services.deployer.ray_backend import RayInstanceBackend
from services.deployer.reconciler import Reconciler
from services.deployer.settings import DeployerSettings, deployer_settings

log = logging.getLogger(__name__)

_HANDED_NUDGES_SECONDS = 1.0


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
    """Background task: while this deployer leads, resync, health checks, log shipping and the events
    standbys handed over; a standby only tries for the lead. Stops every instance on shutdown."""
    settings = reconciler.settings
    lease = LeaderLease(reconciler.platform.mongo[LEADERS], name="deployer",
                        holder=holder_name(), lease_seconds=settings.leader_lease_seconds,
                        gone=dead_on_this_machine)
    loops: list[asyncio.Task] = []
    try:
        while True:
            leads = await _leads(lease)
            if leads and not loops:
                log.info("this deployer leads (%s)", lease.holder)
                reconciler.leading = True
                loops = [asyncio.create_task(_every(seconds, what, name)) for seconds, what, name in (
                    (settings.resync_seconds, reconciler.resync, "resync"),
                    (settings.health_interval_seconds, reconciler.check_health, "health check"),
                    (settings.log_ship_seconds, reconciler.ship_logs, "log shipping"),
                    (_HANDED_NUDGES_SECONDS, reconciler.take_handed_nudges, "handed events"))]
            elif leads is False and loops:
                log.warning("another deployer took the lead: this one steps down and stops its instances")
                await _cancel(loops)
                loops = []
                await reconciler.step_down()
            await asyncio.sleep(settings.leader_renew_seconds)
    finally:
        await _cancel(loops)
        await reconciler.close()
        if reconciler.leading:
            try:
                await lease.release()
            except Exception:   # MongoDB gone at shutdown: the lease lapses by itself
                log.warning("could not give the deployer lead back; a standby takes it when it lapses")


async def _leads(lease: LeaderLease) -> bool | None:
    """True: this process leads; False: another one does; None: MongoDB did not answer. Unknown is
    not a reason to step down: stopping every instance because the database blinked would turn an
    outage of the control plane into one of inference (a standby cannot take the lead either)."""
    try:
        return await lease.hold()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("the deployer lead could not be renewed: %s: %s", type(exc).__name__, exc)
        return None


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
