"""The reconciler takes each instance's share of its service's resource pool (on a backend that
reserves pool capacity, i.e. Ray), never more than the pool holds: an instance that does not fit
waits with a visible reason and its place in the pool's queue, and starts when an instance of the
pool goes away; a lost instance's
share comes back. Local processes take no share (docs/cluster.md).

In-memory database and backend (tests/unit/test_serving_reconciler.py); the same code against the
real database and a real Ray cluster: tests/integration/test_ray_instances.py.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.lib.common.cluster import Node, Resources
from services.deployer.reconciler import Reconciler, allocation_key
from services.lib.pools import ledger
from services.lib.readmodels.serving_refs import INSTANCES, SERVICES
from tests.unit.test_serving_reconciler import SETTINGS, FakeBackend, FakePlatform, _reports


class PoolBackend(FakeBackend):
    reserves_pool_capacity = True

    def __init__(self, log):
        super().__init__(log)
        self.launches = {}

    async def start(self, launch):
        self.launches[launch.instance_id] = launch
        return await super().start(launch)


class FakeCluster:
    """Pools of nodes: ``team=2`` is one node of 2 CPUs, ``team=(2, 2)`` two nodes of 2 CPUs each."""
    kind = "ray"

    def __init__(self, **pools: float | tuple):
        self.pools = {pool: (cpus if isinstance(cpus, tuple) else (cpus,)) for pool, cpus in pools.items()}

    async def nodes(self):
        return [Node(id=f"node-{pool}" + (f"-{i}" if i else ""), pool=pool, address="127.0.0.1",
                     resources=Resources(cpus=cpus, memory_bytes=int(cpus * 4 * 2**30)))
                for pool, sizes in self.pools.items() for i, cpus in enumerate(sizes)]


def _world(backend_class, **pools):
    platform = FakePlatform()
    platform.cluster = FakeCluster(**pools)
    backend = backend_class(platform.log)
    return platform, backend, Reconciler(platform, backend, SETTINGS)


async def _service(platform, service_id: str, *, count: int, pool: str = "team", cpus: float = 1,
                   desired: str = "running", memory_gb: int = 0, spec: str = "cpu.1u4g") -> None:
    doc = {"_id": service_id, "tenant_id": "t", "name": service_id, "instance_count": count, "desired": desired,
           "model": {"version_id": "v1", "storage_uri": "s3://b/v1/", "template_id": "x"}, "status": "deploying",
           "generation": 1, "max_model_len": 2048, "instance_spec": spec,
           "placement": {"pool": pool, "cpus": cpus, "gpus": 0.0, "memory_bytes": memory_gb * 2**30},
           "created_at": datetime.now(UTC)}
    await platform.mongo[SERVICES].replace_one({"_id": service_id}, doc, upsert=True)


async def _used(platform, pool: str) -> float:
    return (await ledger.usage(platform.mongo[ledger.USAGE], pool)).cpus


async def _queue(platform, pool: str = "team") -> list[tuple]:
    """The pool's queue as the pools API lists it: (service, position, reason)."""
    return [(q["job_id"], q["position"], q["reason"]) async for q in
            platform.mongo[ledger.QUEUE].find({"pool": pool, "kind": "service"}).sort("position", 1)]


async def _allocations(platform) -> list[dict]:
    return [a async for a in platform.mongo[ledger.ALLOCATIONS].find({})]


async def test_instances_take_their_share_and_the_rest_wait_with_the_reason():
    platform, backend, reconciler = _world(PoolBackend, team=2)
    await _service(platform, "svc", count=3)
    await reconciler.reconcile("svc")

    assert len(backend.running) == 2 and await _used(platform, "team") == 2
    assert {a["_id"] for a in await _allocations(platform)} == {allocation_key(i) for i in backend.running}
    assert all(launch.pool == "team" for launch in backend.launches.values())
    docs = [d async for d in platform.mongo[INSTANCES].find({})]
    assert len(docs) == 2 and {d["pool"] for d in docs} == {"team"}   # the waiting one is not recorded
    report = _reports(platform)[-1]
    assert report.status == "alarm" and report.ready_instances == 2
    assert report.message == "waiting for 1 CPUs (0 available) in pool 'team'"


async def test_a_service_with_no_room_at_all_is_deploying_not_failed_and_starts_when_room_frees():
    platform, backend, reconciler = _world(PoolBackend, team=1)
    await _service(platform, "first", count=1)
    await reconciler.reconcile("first")
    await _service(platform, "second", count=1)
    await reconciler.reconcile("second")
    report = _reports(platform)[-1]
    assert (report.service_id, report.status, report.ready_instances) == ("second", "deploying", 0)
    assert "in pool 'team'" in report.message and len(backend.running) == 1
    await _service(platform, "third", count=1)
    await reconciler.reconcile("third")
    assert await _queue(platform) == [("second", 1, "waiting for 1 CPUs (0 available) in pool 'team'"),
                                      ("third", 2, "behind 1 earlier request(s) in the pool's queue")]
    await reconciler.reconcile("second")       # another pass keeps its place
    assert [q[0] for q in await _queue(platform)] == ["second", "third"]

    # Stopping the first gives its share back, and the waiting service tries again at once.
    await platform.mongo[SERVICES].update_one({"_id": "first"}, {"$set": {"desired": "stopped"}})
    await reconciler.reconcile("first")
    await reconciler.idle()
    # Both waiting services were woken; one got the room (no order is promised), the other moved up.
    started = [d async for d in platform.mongo[INSTANCES].find({"service_id": {"$in": ["second", "third"]}})]
    assert len(started) == 1 and started[0]["status"] == "ready"
    winner = started[0]["service_id"]
    other = "third" if winner == "second" else "second"
    assert [a["_id"] for a in await _allocations(platform)] == [allocation_key(started[0]["_id"])]
    assert await _used(platform, "team") == 1
    assert [r.status for r in _reports(platform) if r.service_id == winner][-1] == "running"
    assert await _queue(platform) == [(other, 1, "waiting for 1 CPUs (0 available) in pool 'team'")]
    await platform.mongo[SERVICES].delete_one({"_id": other})       # deleted while waiting: off the queue
    await reconciler.reconcile(other)
    assert await _queue(platform) == []


async def test_a_lost_instance_gives_its_share_back_to_its_replacement():
    platform, backend, reconciler = _world(PoolBackend, team=2)
    await _service(platform, "svc", count=2)
    await reconciler.reconcile("svc")
    lost = next(iter(backend.running))
    del backend.running[lost]                 # its node went away: the backend reads it as exited
    await reconciler.check_health()
    await reconciler.idle()
    assert len(backend.running) == 2 and lost not in backend.running
    assert await _used(platform, "team") == 2
    assert allocation_key(lost) not in {a["_id"] for a in await _allocations(platform)}


async def test_a_share_whose_instance_document_is_gone_is_released_by_the_resync():
    platform, backend, reconciler = _world(PoolBackend, team=2)
    await _service(platform, "svc", count=1)
    await reconciler.reconcile("svc")
    (instance_id,) = backend.running
    await platform.mongo[INSTANCES].delete_one({"_id": instance_id})   # removed by hand
    await reconciler.release_orphans()
    assert await _allocations(platform) == [] and await _used(platform, "team") == 0


def test_a_running_instances_share_is_not_stale():
    alloc = {"_id": "service_instances:i1", "run_id": "i1", "leased": False}
    at = datetime.now(UTC)
    assert not ledger.is_stale(alloc, {"_id": "i1", "status": "ready"}, at=at, lease_seconds=0)
    assert ledger.is_stale(alloc, None, at=at, lease_seconds=0)


async def test_local_processes_take_no_share_of_the_pool():
    platform, backend, reconciler = _world(FakeBackend, public=1)
    await _service(platform, "svc", count=3, pool="public")
    await reconciler.reconcile("svc")
    assert len(backend.running) == 3 and await _allocations(platform) == []
    assert _reports(platform)[-1].status == "running"


@pytest.mark.parametrize("stored, pool, resources", [
    ({"pool": "team", "cpus": 2.0, "gpus": 0.0, "memory_bytes": 0}, "team", Resources(cpus=2.0)),
    (None, "public", Resources(cpus=1.0, memory_bytes=4 * 2**30)),   # recorded before pools existed: its spec
])
def test_an_instances_placement_comes_from_the_service(stored, pool, resources):
    from services.deployer.reconciler import placement_of

    svc = {"instance_spec": "cpu.1u4g", **({"placement": stored} if stored else {})}
    assert placement_of(svc) == (pool, resources)


async def test_each_instance_is_started_on_the_node_the_ledger_gave_it_with_its_memory():
    platform, backend, reconciler = _world(PoolBackend, team=(2, 2))
    await _service(platform, "svc", count=3, memory_gb=4)
    await reconciler.reconcile("svc")
    launches = list(backend.launches.values())
    assert sorted(launch.node_id for launch in launches) == ["node-team", "node-team", "node-team-1"]   # packed
    assert all(launch.memory_bytes == 4 * 2**30 and launch.cpus == 1 for launch in launches)
    allocations = {a["job_id"]: a["nodes"] for a in await _allocations(platform)}
    assert allocations == {i: [launch.node_id] for i, launch in backend.launches.items()}


async def test_an_instance_that_fits_the_pool_but_no_node_waits_until_a_node_frees():
    """Fragmentation: two nodes with 1 CPU free each hold no 2-CPU instance; it waits in the queue
    (not in Ray) with a reason that says so, and starts once one node is free enough."""
    platform, backend, reconciler = _world(PoolBackend, team=(2, 2))
    for name in ("s1", "s2", "s3"):
        await _service(platform, name, count=1, memory_gb=4)
        await reconciler.reconcile(name)
    node_of = {launch.service_id: launch.node_id for launch in backend.launches.values()}
    assert node_of["s1"] == node_of["s2"] != node_of["s3"]
    await platform.mongo[SERVICES].update_one({"_id": "s1"}, {"$set": {"desired": "stopped"}})
    await reconciler.reconcile("s1")          # now 1 CPU free on each node: 2 in the pool
    assert await _used(platform, "team") == 2

    await _service(platform, "big", count=1, cpus=2, memory_gb=8, spec="cpu.2u8g")
    await reconciler.reconcile("big")
    reason = ("waiting for a node of pool 'team' with 2 CPUs, 8.0 GiB memory free; "
              "largest free share is 1 CPUs, 4.0 GiB memory")
    assert await _queue(platform) == [("big", 1, reason)]
    report = _reports(platform)[-1]
    assert (report.service_id, report.status, report.message) == ("big", "deploying", reason)
    assert not [d async for d in platform.mongo[INSTANCES].find({"service_id": "big"})]

    await platform.mongo[SERVICES].update_one({"_id": "s3"}, {"$set": {"desired": "stopped"}})
    await reconciler.reconcile("s3")          # s3's node is free whole: the big one starts there
    await reconciler.idle()
    [big] = [launch for launch in backend.launches.values() if launch.service_id == "big"]
    assert big.node_id == node_of["s3"] and big.cpus == 2 and big.memory_bytes == 8 * 2**30
    assert await _queue(platform) == [] and _reports(platform)[-1].status == "running"
