"""What is allocated in each resource pool, and the one rule: never more than the pool holds.

A job (or instance) is admitted by one conditional ``$inc`` of its pool's usage document — it
matches only while usage + request <= capacity — plus an allocation document naming the holder,
both in the caller's unit of work (the same one that moves the job to running). Concurrent runners
in any number of processes therefore cannot over-commit a pool: the loser's update matches nothing
(or conflicts, and its transaction is retried).

Releasing deletes the allocation and gives its resources back, once (the delete is the fence).
``stale_allocations`` finds what a runner that died can no longer release: allocations whose job
moved on to another run, ended, vanished, or whose lease expired a whole lease ago. A holder without
a lease (an inference instance: its document exists exactly while it holds its share) is stale only
once its document is gone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING

from services.lib.common.cluster import Resources
from services.lib.common.mongo import IndexSpec
from services.lib.pools import usage as compute_usage
from services.lib.common.jobs import now

USAGE = "pool_usage"
ALLOCATIONS = "pool_allocations"
QUEUE = "pool_queue"        # jobs and services waiting for room: one document each (runners, deployer)
INDEXES: list[IndexSpec] = [(ALLOCATIONS, [("pool", ASCENDING)], {}), (ALLOCATIONS, [("collection", ASCENDING)], {}),
                            (QUEUE, [("pool", ASCENDING), ("position", ASCENDING)], {})]


class NoRoom(Exception):
    """The pool lacks free capacity for this request now (it waits in the queue)."""

    def __init__(self, pool: str, lacking: list[str]):
        super().__init__(f"pool '{pool}' lacks {', '.join(lacking)}")
        self.pool, self.lacking = pool, lacking


@dataclass(frozen=True)
class Holder:
    """Who holds an allocation: a run of a job (``collection`` + ``job_id`` + ``run_id``), or an
    inference instance (``collection`` = the instances, ``job_id`` = ``run_id`` = its id, no lease)."""
    kind: str
    collection: str
    job_id: str
    run_id: str
    tenant_id: str
    leased: bool = True       # False: held while the holder's document exists (no run, no lease)

    @property
    def key(self) -> str:
        return f"{self.collection}:{self.job_id}"


async def usage(usage_docs, pool: str, *, session=None) -> Resources:
    """What is allocated in ``pool`` (``usage_docs``: the USAGE collection, of a uow or not)."""
    return Resources.from_dict(await usage_docs.find_one({"_id": pool}, session=session))


async def admit(uow, *, holder: Holder, pool: str, request: Resources, capacity: Resources) -> None:
    """Allocate ``request`` in ``pool`` for ``holder`` in ``uow``, or raise NoRoom. A holder that
    already has its allocation (the same job claimed again) keeps it."""
    allocations, usage_docs = uow.collection(ALLOCATIONS), uow.collection(USAGE)
    existing = await allocations.find_one_and_update(
        {"_id": holder.key}, {"$set": {"run_id": holder.run_id, "updated_at": now()}}, session=uow.session)
    if existing is not None:
        return
    await usage_docs.update_one({"_id": pool}, {"$setOnInsert": {"cpus": 0.0, "gpus": 0.0, "memory_bytes": 0}},
                                upsert=True, session=uow.session)
    room = capacity - request
    taken = await usage_docs.update_one(
        {"_id": pool, "cpus": {"$lte": room.cpus + 1e-9}, "gpus": {"$lte": room.gpus + 1e-9},
         **({"memory_bytes": {"$lte": room.memory_bytes}} if request.memory_bytes else {})},
        {"$inc": {"cpus": request.cpus, "gpus": request.gpus, "memory_bytes": request.memory_bytes}},
        session=uow.session)
    if taken.matched_count == 0:
        used = await usage(usage_docs, pool, session=uow.session)
        raise NoRoom(pool, request.shortfall(capacity - used) or ["capacity"])
    await allocations.insert_one({
        "_id": holder.key, "pool": pool, "kind": holder.kind, "collection": holder.collection,
        "job_id": holder.job_id, "run_id": holder.run_id, "tenant_id": holder.tenant_id,
        "resources": request.as_dict(), "created_at": now(), "updated_at": now(),
        **({} if holder.leased else {"leased": False})}, session=uow.session)


async def release(uow, *, key: str, run_id: str | None = None) -> bool:
    """Give back the allocation ``key`` (only if it still belongs to ``run_id``, when given)."""
    fence = {"_id": key, **({"run_id": run_id} if run_id else {})}
    doc = await uow.collection(ALLOCATIONS).find_one_and_delete(fence, session=uow.session)
    if doc is None:
        return False
    r = Resources.from_dict(doc["resources"])
    await uow.collection(USAGE).update_one(
        {"_id": doc["pool"]}, {"$inc": {"cpus": -r.cpus, "gpus": -r.gpus, "memory_bytes": -r.memory_bytes}},
        session=uow.session)
    await compute_usage.record(uow, doc, ended_at=now())   # metered (and paid) with the release
    return True


async def list_waiting(mongo, *, pool: str, kind: str, collection: str, waiting: list[dict], reason: str) -> None:
    """Record ``waiting`` (documents with ``_id``, ``tenant_id``, ``name``; first come first) as the
    queue of ``kind`` in ``pool``: the head waits for ``reason``, the others behind it."""
    for position, doc in enumerate(waiting, start=1):
        await mongo[QUEUE].update_one(
            {"_id": f"{collection}:{doc['_id']}"},
            {"$set": {"pool": pool, "kind": kind, "collection": collection, "job_id": doc["_id"],
                      "name": doc.get("name", ""), "tenant_id": doc["tenant_id"], "position": position,
                      "reason": reason if position == 1 else f"behind {position - 1} earlier request(s) in the pool's queue"},
             "$setOnInsert": {"since": now()}}, upsert=True)


async def unlist(mongo, *, collection: str, ids: list[str]) -> None:
    """Drop these documents' queue entries (they started, or no longer wait)."""
    if ids:
        await mongo[QUEUE].delete_many({"_id": {"$in": [f"{collection}:{i}" for i in ids]}})


def is_stale(allocation: dict, job: dict | None, *, at: datetime, lease_seconds: float) -> bool:
    """Whether an allocation outlived its run (the runner died or forgot to release it)."""
    if job is None:
        return True
    if allocation.get("leased", True) is False:
        return False          # held by an instance whose document still exists
    run = job.get("run") or {}
    if run.get("run_id") != allocation["run_id"]:
        return True
    lease = run.get("lease_until")
    if lease is not None and lease.tzinfo is None:
        lease = lease.replace(tzinfo=at.tzinfo)
    return not run.get("active", True) and job.get("status") != "running" or (
        lease is not None and lease < at - timedelta(seconds=lease_seconds))


async def stale_allocations(mongo, *, collection: str, lease_seconds: float) -> list[dict]:
    at, stale = now(), []
    async for allocation in mongo[ALLOCATIONS].find({"collection": collection}):
        job = await mongo[collection].find_one({"_id": allocation["job_id"]}, {"run": 1, "status": 1})
        if is_stale(allocation, job, at=at, lease_seconds=lease_seconds):
            stale.append(allocation)
    return stale

