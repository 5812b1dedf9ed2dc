"""What is allocated in each resource pool, and the one rule: never more than the pool holds.

A job (or instance) is admitted by one conditional ``$inc`` of its pool's usage document — it
matches only while usage + request <= capacity — plus an allocation document naming the holder,
both in the caller's unit of work (the same one that moves the job to running). Concurrent runners
in any number of processes therefore cannot over-commit a pool: the loser's update matches nothing
(or conflicts, and its transaction is retried).

Releasing deletes the allocation and gives its resources back, once (the delete is the fence).
``stale_allocations`` finds what a runner that died can no longer release: allocations whose job
moved on to another run, ended, vanished, or whose lease expired a whole lease ago (a claimed task
without a run, a checkpoint conversion: once it is claimed again, ended, or its claim ran out). A
holder without a lease (an inference instance: its document exists exactly while it holds its
share) is stale only once its document is gone.

Nodes: an instance, a job's work and each training rank run as one process on one node, so a pool's
free total is not enough — two nodes with 1 free CPU each cannot hold a 2-CPU instance. Given the
pool's alive nodes, ``admit`` also picks the node(s) (best fit: the fullest node that holds the
share, so large requests keep finding whole nodes) and takes each node's share with the same kind
of conditional ``$inc`` on that node's usage document (``pool_node_usage``), in the same unit of
work; the allocation records the nodes, the work is placed on them, and ``release`` gives their
shares back. Work spread over ``spread`` nodes (multi-node training) takes one equal share on each of
``spread`` distinct nodes. A request that fits the pool's total but no node waits with a reason that
says so. A node that is gone no longer counts (only alive nodes are offered); its usage document
stays until its allocations are released.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING

from services.lib.common.cluster import Node, Resources
from services.lib.common.mongo import IndexSpec
from services.lib.pools import usage as compute_usage
from services.lib.common.jobs import now

USAGE = "pool_usage"
NODE_USAGE = "pool_node_usage"   # what is allocated on each node: _id = the node's id, pool
ALLOCATIONS = "pool_allocations"
QUEUE = "pool_queue"        # jobs and services waiting for room: one document each (runners, deployer)
INDEXES: list[IndexSpec] = [(ALLOCATIONS, [("pool", ASCENDING)], {}), (ALLOCATIONS, [("collection", ASCENDING)], {}),
                            (QUEUE, [("pool", ASCENDING), ("position", ASCENDING)], {}),
                            (NODE_USAGE, [("pool", ASCENDING)], {})]
_EPS = 1e-9


class NoRoom(Exception):
    """The pool lacks free capacity for this request now (it waits in the queue). ``reason``: what
    it waits for, in words (the queue and the service's status show it)."""

    def __init__(self, pool: str, lacking: list[str], *, reason: str | None = None):
        super().__init__(f"pool '{pool}' lacks {', '.join(lacking)}")
        self.pool, self.lacking = pool, lacking
        self.reason = reason or f"waiting for {', '.join(lacking)} in pool '{pool}'"


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


async def admit(uow, *, holder: Holder, pool: str, request: Resources, capacity: Resources,
                nodes: list[Node] | None = None, spread: int = 1) -> list[str]:
    """Allocate ``request`` in ``pool`` for ``holder`` in ``uow``, or raise NoRoom; return the ids
    of the nodes it was given. ``nodes``: the pool's alive nodes — then ``request`` is also taken
    from ``spread`` distinct nodes in equal shares (None: the pool's total only). A holder that
    already has its allocation (the same job claimed again) keeps it, and its nodes."""
    allocations, usage_docs = uow.collection(ALLOCATIONS), uow.collection(USAGE)
    existing = await allocations.find_one_and_update(
        {"_id": holder.key}, {"$set": {"run_id": holder.run_id, "updated_at": now()}}, session=uow.session)
    if existing is not None:
        return list(existing.get("nodes") or [])
    await usage_docs.update_one({"_id": pool}, {"$setOnInsert": {"cpus": 0.0, "gpus": 0.0, "memory_bytes": 0}},
                                upsert=True, session=uow.session)
    if not await _take(usage_docs, pool, request, capacity, session=uow.session):
        used = await usage(usage_docs, pool, session=uow.session)
        raise NoRoom(pool, request.shortfall(capacity - used) or ["capacity"])
    chosen: list[str] = []
    share = request.share(spread)
    nodes = None if share.is_empty else nodes   # work that takes nothing may run on any node
    if nodes is not None:
        try:
            chosen = await _take_nodes(uow, pool=pool, nodes=nodes, share=share, count=spread)
        except NoRoom:
            # Give the pool's share back here too: the unit of work is a transaction that aborts, but
            # the ledger must stay right on any store (and the caller may catch and go on).
            await usage_docs.update_one({"_id": pool}, {"$inc": _negated(request)}, session=uow.session)
            raise
    await allocations.insert_one({
        "_id": holder.key, "pool": pool, "kind": holder.kind, "collection": holder.collection,
        "job_id": holder.job_id, "run_id": holder.run_id, "tenant_id": holder.tenant_id,
        "resources": request.as_dict(), "created_at": now(), "updated_at": now(),
        **({"nodes": chosen, "per_node": share.as_dict()} if nodes is not None else {}),
        **({} if holder.leased else {"leased": False})}, session=uow.session)
    return chosen


async def _take(docs, doc_id: str, request: Resources, capacity: Resources, *, session) -> bool:
    """The conditional ``$inc``: matches only while usage + request <= capacity."""
    room = capacity - request
    taken = await docs.update_one(
        {"_id": doc_id, "cpus": {"$lte": room.cpus + _EPS}, "gpus": {"$lte": room.gpus + _EPS},
         **({"memory_bytes": {"$lte": room.memory_bytes}} if request.memory_bytes else {})},
        {"$inc": request.as_dict()}, session=session)
    return taken.matched_count > 0


def _negated(r: Resources) -> dict:
    return {"cpus": -r.cpus, "gpus": -r.gpus, "memory_bytes": -r.memory_bytes}


def choose_nodes(nodes: list[Node], used: dict[str, Resources], *, share: Resources) -> list[Node]:
    """The nodes that could hold ``share`` now, best fit first: the least room left after it (GPUs,
    then CPUs, then memory), so whole nodes stay free for large requests; ties by id (deterministic)."""
    def left(node: Node) -> Resources:
        return node.resources - used.get(node.id, Resources()) - share

    fitting = [n for n in nodes if share.fits_in((n.resources - used.get(n.id, Resources())).clamped())]
    return sorted(fitting, key=lambda n: (left(n).gpus, left(n).cpus, left(n).memory_bytes, n.id))


async def _take_nodes(uow, *, pool: str, nodes: list[Node], share: Resources, count: int) -> list[str]:
    """Take ``share`` on ``count`` distinct nodes of ``nodes``. Each take is a conditional ``$inc`` of
    the node's usage: a node another admission filled meanwhile does not match, and the next
    candidate is tried — concurrent admissions never over-commit a node."""
    docs = uow.collection(NODE_USAGE)
    used = {d["_id"]: Resources.from_dict(d) async for d in
            docs.find({"_id": {"$in": [n.id for n in nodes]}}, session=uow.session)}
    chosen: list[str] = []
    for node in choose_nodes(nodes, used, share=share):
        if len(chosen) == count:
            break
        await docs.update_one({"_id": node.id}, {"$setOnInsert": {"pool": pool, "cpus": 0.0, "gpus": 0.0,
                                                                  "memory_bytes": 0}},
                              upsert=True, session=uow.session)
        if await _take(docs, node.id, share, node.resources, session=uow.session):
            chosen.append(node.id)
    if len(chosen) == count:
        return chosen
    for node_id in chosen:   # not enough: give back what this admission took
        await docs.update_one({"_id": node_id}, {"$inc": _negated(share)}, session=uow.session)
    used = {d["_id"]: Resources.from_dict(d) async for d in
            docs.find({"_id": {"$in": [n.id for n in nodes]}}, session=uow.session)}
    raise NoRoom(pool, [f"a node with {share.describe()} free"], reason=_node_reason(pool, nodes, used, share, count))


def _node_reason(pool: str, nodes: list[Node], used: dict[str, Resources], share: Resources, count: int) -> str:
    """Why a request that fits the pool's total waits: no node (or too few) has its share free."""
    free = [(n.resources - used.get(n.id, Resources())).clamped() for n in nodes]
    if not free:
        return f"waiting for a node of pool '{pool}' to join"
    if count > 1:
        holding = sum(1 for f in free if share.fits_in(f))
        return (f"waiting for {count} nodes of pool '{pool}' with {share.describe()} free each; "
                f"{holding} {'node has' if holding == 1 else 'nodes have'} that free")
    largest = max(free, key=lambda f: (f.gpus, f.cpus, f.memory_bytes))
    return (f"waiting for a node of pool '{pool}' with {share.describe()} free; "
            f"largest free share is {largest.describe()}")


async def release(uow, *, key: str, run_id: str | None = None) -> bool:
    """Give back the allocation ``key`` (only if it still belongs to ``run_id``, when given)."""
    fence = {"_id": key, **({"run_id": run_id} if run_id else {})}
    doc = await uow.collection(ALLOCATIONS).find_one_and_delete(fence, session=uow.session)
    if doc is None:
        return False
    r = Resources.from_dict(doc["resources"])
    await uow.collection(USAGE).update_one({"_id": doc["pool"]}, {"$inc": _negated(r)}, session=uow.session)
    per_node = Resources.from_dict(doc.get("per_node"))
    for node_id in doc.get("nodes") or []:   # also of a node that is gone: its document just stays
        await uow.collection(NODE_USAGE).update_one({"_id": node_id}, {"$inc": _negated(per_node)},
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
    if "claim_id" in job:     # a claimed task (a checkpoint conversion): a claim until a time, no run
        return _claim_over(allocation, job, at=at, lease_seconds=lease_seconds)
    run = job.get("run") or {}
    if run.get("run_id") != allocation["run_id"]:
        return True
    lease = run.get("lease_until")
    if lease is not None and lease.tzinfo is None:
        lease = lease.replace(tzinfo=at.tzinfo)
    return not run.get("active", True) and job.get("status") != "running" or (
        lease is not None and lease < at - timedelta(seconds=lease_seconds))


def _claim_over(allocation: dict, task: dict, *, at: datetime, lease_seconds: float) -> bool:
    """A claimed task's allocation outlives its claim once the task is claimed again, ended (its end
    releases in the same unit of work: this only catches a lost release) or its claim ran out."""
    until = task.get("claimed_until")
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=at.tzinfo)
    return (task["claim_id"] != allocation["run_id"] or task.get("status") != "running"
            or until is None or until < at - timedelta(seconds=lease_seconds))


async def stale_allocations(mongo, *, collection: str, lease_seconds: float) -> list[dict]:
    at, stale = now(), []
    async for allocation in mongo[ALLOCATIONS].find({"collection": collection}):
        job = await mongo[collection].find_one({"_id": allocation["job_id"]},
                                               {"run": 1, "status": 1, "claim_id": 1, "claimed_until": 1})
        if is_stale(allocation, job, at=at, lease_seconds=lease_seconds):
            stale.append(allocation)
    return stale

