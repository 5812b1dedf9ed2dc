"""A checkpoint conversion takes its share of the tuning job's pool like a job: admitted with its
claim, placed on the admitted node, released once with its end (and metered), waiting in the
pool's queue while the pool is full, and freed by the sweep when its worker died.

In-memory: mongomock stands in for MongoDB, a fake executor for the job process."""
from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from services.lib.common.cluster import Node, Resources
from services.lib.jobs.executor import Placement
from services.lib.pools import ledger
from services.lib.pools import usage as compute_usage
from services.lib.pools.ledger import is_stale
from services.tuning.models import CONVERSIONS, JOBS
from services.tuning.worker import CheckpointConversions

GIB = 2**30
SHARE = Resources(cpus=1.0, memory_bytes=4 * GIB)   # one CPU and what a tuning rank reserves


class _Uow:
    session = None

    def __init__(self, db, emitted: list):
        self.db, self.emitted = db, emitted

    def collection(self, name):
        return self.db[name]

    def emit(self, data, *, tenant_id: str, subject: str) -> None:
        self.emitted.append(data)


class _Store:
    async def download_prefix(self, path, folder):
        folder.mkdir(parents=True, exist_ok=True)

    async def ensure_bucket(self, bucket):
        pass

    async def upload_folder(self, folder, target):
        pass


class _Cluster:
    kind = "ray"   # cluster mode: the work is placed on the node the ledger gave it

    def __init__(self, nodes):
        self._nodes = nodes

    async def nodes(self):
        return self._nodes


class _Executor:
    """Records each work's placement; a work runs until ``finish`` is set."""

    def __init__(self):
        self.placements: list[Placement] = []
        self.finish = asyncio.Event()

    async def run(self, work, listener):
        self.placements.append(work.placement)
        await self.finish.wait()
        return str(work.args["out_dir"])


def _platform(tmp_path, *, cpus: float = 1.0):
    from mongomock_motor import AsyncMongoMockClient
    db, emitted = AsyncMongoMockClient()["maas"], []

    @contextlib.asynccontextmanager
    async def uow():
        yield _Uow(db, emitted)

    nodes = [Node(id="n0", pool="team-a", address="127.0.0.1", resources=Resources(cpus=cpus, memory_bytes=8 * GIB))]
    return SimpleNamespace(mongo=db, uow=uow, emitted=emitted, store=_Store(), cluster=_Cluster(nodes),
                           settings=SimpleNamespace(work_dir=str(tmp_path)))


async def _a_conversion(platform, conversion_id: str = "c1") -> None:
    await platform.mongo[JOBS].insert_one({
        "_id": "job-1", "tenant_id": "t", "template_id": "tpl", "placement": {"pool": "team-a", "cpus": 1.0},
        "source": {"weights_uri": "s3://maas/base/"},
        "checkpoints": [{"iteration": 4, "uri": "s3://out/ck/", "format": "lora"}]})
    at = datetime.now(UTC)
    await platform.mongo[CONVERSIONS].insert_one({
        "_id": conversion_id, "tenant_id": "t", "job_id": "job-1", "iteration": 4, "kind": "weight_conversion",
        "target": "new_model", "model_name": "m", "model_id": None, "description": "", "validate_weights": True,
        "status": "running", "message": None, "weights_uri": f"s3://out/converted/{conversion_id}/",
        "created_at": at, "updated_at": at})


def _worker(platform, executor, name: str = "w1") -> CheckpointConversions:
    return CheckpointConversions(platform, executor, worker_id=name)


async def _used(platform) -> Resources:
    return await ledger.usage(platform.mongo[ledger.USAGE], "team-a")


async def _ended(worker: CheckpointConversions) -> None:
    await asyncio.gather(*worker.conversions.values())


async def test_a_conversion_is_admitted_placed_on_its_node_and_released_once(tmp_path):
    platform, executor = _platform(tmp_path), _Executor()
    await _a_conversion(platform)
    worker = _worker(platform, executor)
    await worker.claim_conversions()
    await asyncio.sleep(0)
    assert await _used(platform) == SHARE
    allocation = await platform.mongo[ledger.ALLOCATIONS].find_one({})
    assert allocation["kind"] == "weight_conversion" and allocation["tenant_id"] == "t"
    assert executor.placements == [Placement(pool="team-a", resources=SHARE, node_ids=("n0",))]

    executor.finish.set()
    await _ended(worker)
    assert (await platform.mongo[CONVERSIONS].find_one({"_id": "c1"}))["status"] == "completed"
    assert await _used(platform) == Resources()
    assert await platform.mongo[ledger.ALLOCATIONS].count_documents({}) == 0
    records = [r async for r in platform.mongo[compute_usage.USAGE_RECORDS].find({})]
    assert [(r["kind"], r["pool"], r["job_id"]) for r in records] == [("weight_conversion", "team-a", "c1")]
    assert len(platform.emitted) == 1   # the artifact, once

    await worker.claim_conversions()    # the next round finds nothing to claim or free
    assert await platform.mongo[compute_usage.USAGE_RECORDS].count_documents({}) == 1
    assert await _used(platform) == Resources() and len(executor.placements) == 1


async def test_a_failed_conversion_gives_its_share_back_too(tmp_path):
    platform = _platform(tmp_path)
    await _a_conversion(platform)
    await platform.mongo[JOBS].update_one({"_id": "job-1"}, {"$set": {"checkpoints": []}})   # gone meanwhile
    worker = _worker(platform, _Executor())
    await worker.claim_conversions()
    await _ended(worker)
    doc = await platform.mongo[CONVERSIONS].find_one({"_id": "c1"})
    assert doc["status"] == "failed" and doc["message"] == "the job or its checkpoint no longer exists"
    assert await _used(platform) == Resources()
    assert await platform.mongo[compute_usage.USAGE_RECORDS].count_documents({}) == 1


async def test_a_conversion_waits_in_the_queue_while_the_pool_is_full_and_runs_when_room_frees(tmp_path):
    platform, executor = _platform(tmp_path), _Executor()
    await _a_conversion(platform)
    # A tuning job holds the pool's only CPU.
    job = ledger.Holder(kind="tuning", collection=JOBS, job_id="job-0", run_id="r0", tenant_id="t")
    await ledger.admit(_Uow(platform.mongo, []), holder=job, pool="team-a", request=SHARE,
                       capacity=Resources(cpus=1.0, memory_bytes=8 * GIB), nodes=await platform.cluster.nodes())
    worker = _worker(platform, executor)
    await worker.try_convert("c1")        # the request event: no room, left to the poll loop
    await worker.claim_conversions()
    assert executor.placements == [] and not worker.conversions
    entry = await platform.mongo[ledger.QUEUE].find_one({"_id": f"{CONVERSIONS}:c1"})
    assert entry["kind"] == "weight_conversion" and entry["pool"] == "team-a" and entry["position"] == 1
    assert entry["reason"].startswith("waiting for 1 CPUs (0 available)")
    doc = await platform.mongo[CONVERSIONS].find_one({"_id": "c1"})
    assert doc["message"] == entry["reason"] and doc["status"] == "running" and doc.get("claimed_until") is None

    await ledger.release(_Uow(platform.mongo, []), key=job.key)
    await worker.claim_conversions()
    await asyncio.sleep(0)
    assert len(executor.placements) == 1 and await _used(platform) == SHARE
    assert await platform.mongo[ledger.QUEUE].count_documents({}) == 0
    executor.finish.set()
    await _ended(worker)
    assert await _used(platform) == Resources()


async def test_the_share_of_a_dead_workers_conversion_is_freed_and_the_conversion_runs_again(tmp_path):
    platform, executor = _platform(tmp_path), _Executor()
    await _a_conversion(platform)
    dead = _worker(platform, executor, "dead")
    await dead.claim_conversions()
    await asyncio.sleep(0)
    assert await _used(platform) == SHARE
    for task in dead.conversions.values():   # the worker dies: no end, no release, no renewal
        task.cancel()
    await asyncio.gather(*dead.conversions.values(), return_exceptions=True)
    alive = _worker(platform, executor, "alive")
    await alive.tidy()
    assert await _used(platform) == SHARE            # its claim has not run out yet: still held

    await platform.mongo[CONVERSIONS].update_one(
        {"_id": "c1"}, {"$set": {"claimed_until": datetime.now(UTC) - timedelta(seconds=1)}})
    await alive.tidy()
    assert await _used(platform) == Resources()
    assert await platform.mongo[compute_usage.USAGE_RECORDS].count_documents({}) == 1   # metered as it ended

    await alive.claim_conversions()
    await asyncio.sleep(0)
    assert await _used(platform) == SHARE
    executor.finish.set()
    await _ended(alive)
    assert (await platform.mongo[CONVERSIONS].find_one({"_id": "c1"}))["worker_id"] == "alive"
    assert await _used(platform) == Resources()


@pytest.mark.parametrize("conversion, stale", [
    ({"status": "running", "claim_id": "r1", "claimed_until": 10}, False),     # converting
    ({"status": "running", "claim_id": "r2", "claimed_until": 10}, True),      # claimed again
    ({"status": "completed", "claim_id": "r1", "claimed_until": 10}, True),    # ended, its release lost
    ({"status": "running", "claim_id": "r1", "claimed_until": -1}, True),      # its claim ran out
])
def test_a_conversion_allocation_outlives_only_its_claim(conversion, stale):
    at = datetime.now(UTC)
    conversion["claimed_until"] = at + timedelta(seconds=conversion["claimed_until"])
    assert is_stale({"run_id": "r1"}, conversion, at=at, lease_seconds=0) is stale
