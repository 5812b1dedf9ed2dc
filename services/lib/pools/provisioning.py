"""Resizing dedicated pools: the desired node count and shape live on the pool's document
(``node_count``, ``node_resources``); a **provisioner** starts and stops the pool's nodes until the
cluster has them. This module holds the protocol, the reconcile pass and which setting allows what.

Provisioners (``Settings.pool_provisioner``), chosen by the composition root:

- ``local``: ``maas up --ray`` starts Ray worker processes on this machine
  (``services.apps.cli.local_ray.LocalRayWorkers``), run by its supervisor thread;
- ``kuberay``: the pool's worker group of the RayCluster is scaled (``services.lib.pools.kuberay``),
  run by the gateway's background task;
- ``none``: the platform engineer starts the nodes; the API refuses a node count (409).

Shrinking never kills work: the API refuses a size smaller than what is allocated in the pool, and
a provisioner removes only nodes that Ray reports idle (all their CPUs and accelerators free).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Protocol

from services.lib.common.cluster import POOL_LABEL, RayCluster, Resources
from services.lib.common.settings import Settings
from services.lib.pools.ledger import ALLOCATIONS
from services.lib.pools.models import POOLS

log = logging.getLogger(__name__)

# Names a node the platform started (a local worker process); on KubeRay the node's host name (its pod).
NODE_LABEL = "openmaas.io/node"
GIB = 2**30


@dataclass(frozen=True)
class PoolTarget:
    """What a pool should have: ``count`` nodes of ``cpus`` CPUs and ``memory_bytes`` each;
    ``cpus`` 0: the cluster's own template decides the shape (KubeRay without ``node_resources``)."""
    pool: str
    count: int
    cpus: int = 0
    memory_bytes: int = 0

    @classmethod
    def of(cls, doc: dict) -> "PoolTarget":
        shape = doc.get("node_resources") or {}
        count = 0 if doc.get("deleting") else int(doc.get("node_count") or 0)
        return cls(pool=doc["_id"], count=count, cpus=int(shape.get("cpus", 0)),
                   memory_bytes=int(float(shape.get("memory_gb", 0)) * GIB))


@dataclass(frozen=True)
class PoolNode:
    """An alive Ray node as a provisioner sees it: whether anything runs on it now."""
    id: str
    pool: str | None
    name: str                 # the NODE_LABEL of a node we started, else the node's host name
    resources: Resources
    idle: bool


class NodeProvisioner(Protocol):
    kind: str

    async def apply(self, target: PoolTarget, nodes: list[PoolNode]) -> str:
        """Move the pool's nodes toward ``target`` (``nodes``: its alive nodes now); return what
        keeps it from getting there, in words ("" when nothing does)."""
        ...

    async def close(self) -> None:
        ...


def refusal(settings: Settings, pool: str) -> str | None:
    """Why this platform cannot resize ``pool`` (the 409's message), or None when it can."""
    if not settings.ray_address:
        return (f"node_count: the embedded default has one machine, the public pool; pool '{pool}' gets nodes "
                "in cluster mode (`maas up --ray`, or MAAS_RAY_ADDRESS with MAAS_POOL_PROVISIONER)")
    if settings.pool_provisioner != "none":
        return None
    return (f"node_count: this platform does not manage the nodes of pool '{pool}'; label nodes "
            f"{POOL_LABEL}={pool} (docs/cluster.md), or set MAAS_POOL_PROVISIONER=kuberay on Kubernetes")


def read_ray_nodes() -> list[PoolNode]:
    """The alive nodes of the connected Ray cluster, with whether each is idle. Ray's public state
    API (``ray.util.state``) needs the dashboard, which our heads do not run; its GCS view of each
    node's available resources is the same data."""
    import ray
    from ray._private import state

    available = state.available_resources_per_node()
    nodes = []
    for info in ray.nodes():
        if not info.get("Alive"):
            continue
        total = info.get("Resources") or {}
        free = available.get(info["NodeID"], total)
        idle = all(free.get(key, 0) >= total.get(key, 0) - 1e-9 for key in ("CPU", "GPU", "NPU"))
        labels = info.get("Labels") or {}
        nodes.append(PoolNode(
            id=info["NodeID"], pool=labels.get(POOL_LABEL),
            name=labels.get(NODE_LABEL) or info.get("NodeManagerHostname", ""),
            resources=Resources(float(total.get("CPU", 0)), float(total.get("GPU", 0) + total.get("NPU", 0)),
                                int(total.get("memory", 0))),
            idle=idle))
    return nodes


def ray_node_reader(settings: Settings) -> Callable[[], Awaitable[list[PoolNode]]]:
    cluster = RayCluster(settings)

    async def read() -> list[PoolNode]:
        def connected_read() -> list[PoolNode]:
            cluster.connect()
            if settings.ray_address.startswith("ray://"):
                # Ray Client proxies only the public API: read the cluster's state in a task on it.
                import ray
                return ray.get(ray.remote(num_cpus=0)(read_ray_nodes).remote(), timeout=60)
            return read_ray_nodes()
        return await asyncio.to_thread(connected_read)
    return read


async def reconcile_once(*, mongo, provisioner: NodeProvisioner, nodes: list[PoolNode]) -> None:
    """One pass over every pool with a desired size: the provisioner acts, its word is stored on the
    pool (``status_message``), and a deleted pool's document goes once its last node has. A node
    the ledger has given work to is busy even before Ray runs it there (admission picks the node first)."""
    async for doc in mongo[POOLS].find({"node_count": {"$ne": None}}):
        target = PoolTarget.of(doc)
        held = set(await mongo[ALLOCATIONS].distinct("nodes", {"pool": target.pool}))
        mine = [replace(n, idle=n.idle and n.id not in held) for n in nodes if n.pool == target.pool]
        try:
            message = await provisioner.apply(target, mine)
        except Exception as exc:   # noqa: BLE001 - the next pass tries again; the pool says why meanwhile
            log.warning("resizing pool %s failed (trying again): %s", target.pool, exc)
            message = f"resizing failed, trying again: {exc}"
        if doc.get("deleting") and not mine and not message:
            # Its name is free again only now: another account's pool never gets these nodes.
            await mongo[POOLS].delete_one({"_id": doc["_id"], "deleting": True})
            continue
        if message != doc.get("status_message", ""):
            await mongo[POOLS].update_one({"_id": doc["_id"]}, {"$set": {"status_message": message}})


async def reconcile_forever(*, mongo, provisioner: NodeProvisioner,
                            read_nodes: Callable[[], Awaitable[list[PoolNode]]], interval: float,
                            stop: threading.Event | None = None) -> None:
    """Reconcile every ``interval`` seconds until ``stop`` is set (or the task is cancelled)."""
    failing = ""
    while stop is None or not stop.is_set():
        try:
            await reconcile_once(mongo=mongo, provisioner=provisioner, nodes=await read_nodes())
            failing = ""
        except Exception as exc:   # noqa: BLE001 - MongoDB or Ray away for a moment: the next pass
            if str(exc) != failing:
                log.warning("reconciling pool nodes failed (trying again every %.0f s): %s", interval, exc)
                failing = str(exc)
        if stop is None:
            await asyncio.sleep(interval)
        else:
            await asyncio.to_thread(stop.wait, interval)


async def reconcile_pool_nodes(owner) -> None:
    """The gateway's background task (``owner``: its component, which holds the platform): resize
    pools on KubeRay. The local provisioner runs in ``maas up``'s supervisor instead, the process
    that owns the Ray head; ``none`` has nothing to do."""
    platform = getattr(owner, "platform", owner)
    settings = platform.settings
    if settings.pool_provisioner != "kuberay":
        return
    from services.lib.pools.kuberay import KubeRayNodes

    provisioner = KubeRayNodes(settings)
    try:
        await reconcile_forever(mongo=platform.mongo, provisioner=provisioner, read_nodes=ray_node_reader(settings),
                                interval=settings.pool_reconcile_seconds)
    finally:
        await provisioner.close()
