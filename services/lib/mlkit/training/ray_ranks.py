"""Data-parallel ranks on different nodes of a Ray cluster: the same ranks as ``distributed`` (the
same ``run_rank``, gloo, the same payload), placed by a Ray placement group with one bundle per rank
spread over distinct nodes of the job's pool (``STRICT_SPREAD`` + the pool's node label), each on
the node the pool's ledger gave that rank when it gave the job its nodes (``node_ids``).

Rank 0 hosts the gloo rendezvous on its node; it reaches the coordinator (this process, the job's
work) over a TCP connection authenticated with a one-time key and speaks the same JSON messages as
a local rank 0 over its socket pair. The payload lies in ``shared_dir``, a folder every node mounts
at the same path (the platform's work folder, docs/cluster.md).
"""
from __future__ import annotations

import dataclasses
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

import ray
from ray.util import get_node_ip_address, placement_group, remove_placement_group
from ray.util.placement_group import NODE_ID_LABEL_KEY
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from services.lib.common.cluster import POOL_LABEL
from services.lib.mlkit.training.config import TrainResult
from services.lib.mlkit.training.distributed import coordinate, run_rank, write_payload
from services.lib.mlkit.training.loop import Hooks, RunInputs


class RankNodeLost(RuntimeError):
    """A rank's node (or its worker process) went away mid-run: an environmental failure."""


@dataclass(frozen=True)
class RayPlacement:
    """Where the ranks go: a pool, and what each rank takes there."""
    pool: str
    cpus_per_rank: float = 1.0
    gpus_per_rank: float = 0.0
    memory_per_rank: int = 0        # bytes
    node_ids: tuple[str, ...] = ()  # rank i on node_ids[i] (admitted there); () = any distinct nodes
    shared_dir: str = ""            # "" = next to the job's output folder (which lies in the work folder)
    # The placement group's name, one per job: a group outlives the task that made it (Ray ties it to
    # the driver), so when a coordinator dies with its node, the next run removes its orphan by name.
    group_name: str = ""

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_rank, **({"GPU": self.gpus_per_rank} if self.gpus_per_rank else {}),
                **({"memory": float(self.memory_per_rank)} if self.memory_per_rank else {})}

    def selectors(self, world_size: int) -> list[dict[str, str]]:
        """Each bundle's label selector: the pool, and the rank's own node when the ledger chose it."""
        if len(self.node_ids) == world_size:
            return [{POOL_LABEL: self.pool, NODE_ID_LABEL_KEY: node} for node in self.node_ids]
        return [{POOL_LABEL: self.pool}] * world_size


@ray.remote(num_cpus=0, max_retries=0)
def _rendezvous() -> tuple[str, int]:
    """On rank 0's node: its address and a port free there for gloo's store."""
    with socket.socket() as s:
        s.bind(("", 0))
        return get_node_ip_address(), s.getsockname()[1]


@ray.remote(max_retries=0, max_calls=1)   # a fresh process per rank: no gloo or torch state carries over
def _rank(rank: int, payload: str, coordinator: tuple[str, int] | None, key: bytes | None) -> dict:
    conn = Client(coordinator, authkey=key) if coordinator else None
    run_rank(rank, Path(payload), conn)
    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id()}


_SETTLE_SECONDS = 10


def _failed(ref) -> bool:
    try:
        ray.get(ref, timeout=0)
        return False
    except Exception:
        return True


@dataclass
class _RayRanks:
    refs: list
    nodes: list[str] = field(default_factory=list)

    def raise_if_failed(self) -> None:
        done, pending = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        if pending and any(_failed(ref) for ref in done):
            # A rank failed; if its peer's node died, the peer's loss may surface a moment later
            # than this rank's broken connection: wait for it before naming the cause.
            done, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=_SETTLE_SECONDS)
        failures = []
        for ref in done:
            try:
                ray.get(ref)
            except Exception as exc:   # the rank's exception, with its traceback, or its node's loss
                failures.append((self.refs.index(ref), exc))
        if not failures:
            return
        lost = [(rank, exc) for rank, exc in failures if not isinstance(exc, ray.exceptions.RayTaskError)]
        if lost:   # a node or its worker went away: the surroundings failed, not the training
            rank, exc = lost[0]
            raise RankNodeLost(f"training rank {rank} lost its node: {type(exc).__name__}: {str(exc)[-2000:]}")
        # Prefer the rank whose error is not just the broken connection to a peer that failed first.
        rank, exc = next(((r, e) for r, e in failures if "Connection closed by peer" not in str(e)), failures[0])
        raise RuntimeError(f"training rank {rank} failed on Ray:\n{str(exc)[-4000:]}")

    def settle(self) -> None:
        ray.wait(self.refs, num_returns=len(self.refs), timeout=5)


def run_on_ray(inputs: RunInputs, hooks: Hooks, *, world_size: int, threads_per_rank: int, timeout_s: float,
               placement: RayPlacement) -> TrainResult:
    """Train with ``world_size`` ranks on distinct nodes of ``placement.pool``; rank 0's callbacks
    reach ``hooks`` here. Returns when every rank has finished."""
    shared = Path(placement.shared_dir or inputs.output_dir.parent)
    gone = set(placement.node_ids) - {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    if gone:   # a node given to a rank was lost since: environmental, the restart is admitted afresh
        raise RankNodeLost(f"training ranks: the node(s) {', '.join(sorted(gone))} given to them are gone")
    if placement.group_name:
        _remove_orphan(placement.group_name)
    group = placement_group([placement.bundle()] * world_size, strategy="STRICT_SPREAD",
                            bundle_label_selector=placement.selectors(world_size), name=placement.group_name)
    refs: list = []
    try:
        if not group.wait(timeout_seconds=timeout_s):
            raise RuntimeError(f"training ranks: pool '{placement.pool}' has no {world_size} distinct nodes with "
                               f"{placement.bundle()} free each")
        on_rank0 = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        master_ip, port = ray.get(_rendezvous.options(scheduling_strategy=on_rank0).remote(), timeout=timeout_s)
        key = secrets.token_bytes(32)
        with tempfile.TemporaryDirectory(prefix="maas-train-", dir=shared) as tmp, \
                Listener((get_node_ip_address(), 0), authkey=key) as listener:
            payload = write_payload(Path(tmp), inputs, threads=threads_per_rank, world_size=world_size,
                                    master=f"{master_ip}:{port}", port=port, timeout_s=timeout_s)
            for rank in range(world_size):
                strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank)
                refs.append(_rank.options(scheduling_strategy=strategy, num_cpus=placement.cpus_per_rank,
                                          num_gpus=placement.gpus_per_rank,
                                          **({"memory": placement.memory_per_rank} if placement.memory_per_rank
                                             else {})).remote(
                    rank, str(payload), listener.address if rank == 0 else None, key if rank == 0 else None))
            ranks = _RayRanks(refs)
            conn = _accept(listener, ranks, timeout_s=timeout_s)
            try:
                result = coordinate(conn, hooks, ranks)
            finally:
                conn.close()
            finished = sorted(ray.get(refs, timeout=timeout_s), key=lambda f: f["rank"])
            return dataclasses.replace(result, rank_nodes=[f["node_id"] for f in finished])
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        remove_placement_group(group)


def _remove_orphan(name: str) -> None:
    """Remove a placement group left by an earlier run of the same job (its coordinator was lost)."""
    try:
        orphan = ray.util.get_placement_group(name)
    except ValueError:
        return   # none: the usual case
    remove_placement_group(orphan)


def _accept(listener: Listener, ranks: _RayRanks, *, timeout_s: float) -> Connection:
    """Rank 0's connection, unless a rank fails (or nothing connects) first."""
    accepted: list[Connection] = []
    failed: list[BaseException] = []

    def accept() -> None:
        try:
            accepted.append(listener.accept())
        except BaseException as exc:   # the listener closed under it, or a stranger failed the handshake
            failed.append(exc)

    thread = threading.Thread(target=accept, name="rank0-accept", daemon=True)
    thread.start()
    waited = 0.0
    while thread.is_alive() and waited < timeout_s:
        ranks.raise_if_failed()
        thread.join(0.1)
        waited += 0.1
    if accepted:
        return accepted[0]
    raise RuntimeError(f"training rank 0 did not connect to the coordinator within {timeout_s:g} s"
                       + (f": {failed[0]}" if failed else ""))
