"""The compute the platform runs jobs and instances on, seen as nodes grouped into resource pools.

Two adapters behind one protocol, chosen by ``Settings.ray_address``:

- ``LocalMachine``: this machine is the only node, in the public pool (the embedded default);
- ``RayCluster``: every alive node of a Ray cluster whose label ``openmaas.io/pool`` names its pool.
  A node without that label (typically the head) belongs to no pool and runs no work of ours.

What is *allocated* on the nodes is the platform's own bookkeeping (``services.lib.pools``), not the
cluster's: the same admission rules hold in both modes.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from services.lib.common.settings import Settings

POOL_LABEL = "openmaas.io/pool"
PUBLIC_POOL = "public"
# The environment of every Ray node the platform computes on. Ray starts its worker processes at
# niceness 15 so that its own daemons stay responsive; on our nodes the workers are the point —
# training ranks and inference servers (an actor's child inherits its niceness) — and an
# unprivileged process cannot raise its priority back. At 15 they lose to every other process of
# the node (benchmarks/bench_cluster.py, 2 ranks vs 2 local ranks, idle 2-core machine: step time
# 1.13x at 15, 1.04x at 0; 1.66x at 15 on the same machine busy with other work).
NODE_ENV = {"RAY_worker_niceness": "0"}


@dataclass(frozen=True)
class Resources:
    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus, self.memory_bytes + other.memory_bytes)

    def __sub__(self, other: "Resources") -> "Resources":
        return Resources(self.cpus - other.cpus, self.gpus - other.gpus, self.memory_bytes - other.memory_bytes)

    def times(self, n: int) -> "Resources":
        return Resources(self.cpus * n, self.gpus * n, self.memory_bytes * n)

    def share(self, n: int) -> "Resources":
        """One of ``n`` equal shares (what each node takes of work spread over ``n`` nodes)."""
        return Resources(self.cpus / n, self.gpus / n, self.memory_bytes // n)

    def fits_in(self, other: "Resources") -> bool:
        eps = 1e-9
        return (self.cpus <= other.cpus + eps and self.gpus <= other.gpus + eps
                and self.memory_bytes <= other.memory_bytes)

    def shortfall(self, available: "Resources", *, where: str = "available") -> list[str]:
        """What ``available`` lacks to hold these resources, in words ("2 CPUs (1 available)");
        ``where`` names what ``available`` is ("in the whole pool")."""
        lacking = []
        if self.cpus > available.cpus + 1e-9:
            lacking.append(f"{self.cpus:g} CPUs ({max(available.cpus, 0):g} {where})")
        if self.gpus > available.gpus + 1e-9:
            lacking.append(f"{self.gpus:g} accelerators ({max(available.gpus, 0):g} {where})")
        if self.memory_bytes > available.memory_bytes:
            lacking.append(f"{_gib(self.memory_bytes)} memory ({_gib(max(available.memory_bytes, 0))} {where})")
        return lacking

    @property
    def is_empty(self) -> bool:
        return self.cpus <= 1e-9 and self.gpus <= 1e-9 and self.memory_bytes <= 0

    def describe(self) -> str:
        """In words, what is not zero ("2 CPUs, 8.0 GiB memory"; "nothing" for none)."""
        parts = [f"{self.cpus:g} CPUs"] if self.cpus > 1e-9 else []
        if self.gpus > 1e-9:
            parts.append(f"{self.gpus:g} accelerators")
        if self.memory_bytes > 0:
            parts.append(f"{_gib(self.memory_bytes)} memory")
        return ", ".join(parts) or "nothing"

    def clamped(self) -> "Resources":
        """Never below zero (what is free of a node whose usage outgrew a shrunken capacity)."""
        return Resources(max(self.cpus, 0.0), max(self.gpus, 0.0), max(self.memory_bytes, 0))

    def as_dict(self) -> dict:
        return {"cpus": self.cpus, "gpus": self.gpus, "memory_bytes": self.memory_bytes}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Resources":
        data = data or {}
        return cls(float(data.get("cpus", 0)), float(data.get("gpus", 0)), int(data.get("memory_bytes", 0)))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass(frozen=True)
class Node:
    id: str
    pool: str | None          # None: a node of no pool (e.g. the Ray head)
    address: str
    resources: Resources


class ComputeCluster(Protocol):
    kind: str                 # "local" | "ray"

    async def nodes(self) -> list[Node]:
        """The alive nodes, now (cached for a second or two)."""
        ...


# The instance specs give each vCPU 4 GiB (services.lib.pools.specs); on the local machine memory
# never refuses what its CPUs admit (see LocalMachine).
LOCAL_MEMORY_PER_CPU = 4 * 2**30


class LocalMachine:
    """This machine as the single node of the public pool.

    Its memory is the machine's, but never less than 4 GiB per CPU of the pool: the specs' memory
    (4 GiB per vCPU) is what a job may use at most, and the models of a small machine need far
    less. Without the floor a laptop or CI runner of 7 GiB would refuse the default compression
    spec (8 GiB) that it runs fine; with it, the CPUs bind first unless the machine has more memory
    to account. ``MAAS_LOCAL_POOL_MEMORY_BYTES`` sets it exactly (no floor)."""
    kind = "local"

    def __init__(self, settings: Settings):
        cpus = settings.local_pool_cpus or float(os.cpu_count() or 1)
        memory = settings.local_pool_memory_bytes or max(_machine_memory(), int(cpus * LOCAL_MEMORY_PER_CPU))
        self._node = Node(id="local", pool=PUBLIC_POOL, address="127.0.0.1", resources=Resources(cpus, 0.0, memory))

    async def nodes(self) -> list[Node]:
        return [self._node]


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class RayCluster:
    """The nodes of a Ray cluster. Connecting makes this process a Ray driver (once per process:
    Ray's connection is process-wide)."""
    kind = "ray"
    _CACHE_SECONDS = 2.0

    def __init__(self, settings: Settings):
        self.address, self.namespace = settings.ray_address, settings.ray_namespace
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Node]] | None = None

    def connect(self) -> None:
        # Imported here, not at the top: ray takes ~1 s to import and only cluster mode needs it.
        import ray

        with self._lock:
            if not ray.is_initialized():
                ray.init(address=self.address, namespace=self.namespace, logging_level="WARNING",
                         log_to_driver=False, configure_logging=False)

    async def nodes(self) -> list[Node]:
        cached = self._cached
        if cached and time.monotonic() - cached[0] < self._CACHE_SECONDS:
            return cached[1]
        nodes = await asyncio.to_thread(self._read_nodes)
        self._cached = (time.monotonic(), nodes)
        return nodes

    def _read_nodes(self) -> list[Node]:
        import ray

        self.connect()
        nodes = []
        for info in ray.nodes():
            if not info.get("Alive"):
                continue
            res = info.get("Resources") or {}
            nodes.append(Node(
                id=info["NodeID"], pool=(info.get("Labels") or {}).get(POOL_LABEL),
                address=info.get("NodeManagerAddress", ""),
                resources=Resources(float(res.get("CPU", 0)), float(res.get("GPU", 0) + res.get("NPU", 0)),
                                    int(res.get("memory", 0)))))
        return nodes


def placed_on(pool: str, node_ids: tuple[str, ...] | list[str] = ()):
    """Ray's scheduling strategy for work of ``pool`` (a task or an actor): on the node the pool's
    ledger gave it (hard affinity: the room was reserved there, and a fragment of free capacity on
    another node must not take it), or, without one, on any node of the pool (hard label constraint)."""
    from ray.util.scheduling_strategies import In, NodeAffinitySchedulingStrategy, NodeLabelSchedulingStrategy

    if node_ids:
        return NodeAffinitySchedulingStrategy(node_id=node_ids[0], soft=False)
    return NodeLabelSchedulingStrategy(hard={POOL_LABEL: In(pool)})


def pinned_by_label(pool: str, node_id: str | None):
    """Like ``placed_on`` for an actor that must wait rather than fail: the same node, matched by Ray's
    own ``ray.io/node-id`` label (and the pool's). A hard node affinity is refused at once as
    "infeasible" while the scheduler's view of a node is not complete yet (seen under load, for nodes
    that had just joined); a label constraint waits for the view, and the deployer's start timeout
    bounds the wait if the node is really gone."""
    from ray.util.placement_group import NODE_ID_LABEL_KEY   # "ray.io/node-id": Ray labels every node with its id
    from ray.util.scheduling_strategies import In, NodeLabelSchedulingStrategy

    hard = {POOL_LABEL: In(pool), **({NODE_ID_LABEL_KEY: In(node_id)} if node_id else {})}
    return NodeLabelSchedulingStrategy(hard=hard)


def connect_cluster(settings: Settings) -> ComputeCluster:
    return RayCluster(settings) if settings.ray_address else LocalMachine(settings)
