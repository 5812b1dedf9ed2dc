"""Resource arithmetic, the never-fits message, stale allocations and pool names (the admission
itself runs against the real database in tests/integration/test_ray_pools.py)."""
from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from services.lib.common.cluster import LocalMachine, Resources
from services.lib.common.settings import Settings
from services.lib.pools import ledger
from services.lib.pools.ledger import is_stale
from services.lib.pools.models import NAME_PATTERN


def test_resources_add_subtract_scale_and_fit():
    a, b = Resources(cpus=2, gpus=1), Resources(cpus=1.5)
    assert a + b == Resources(cpus=3.5, gpus=1) and a - b == Resources(cpus=0.5, gpus=1)
    assert b.times(2) == Resources(cpus=3) and b.fits_in(a) and not a.fits_in(b)
    assert Resources(cpus=0.1).times(3).fits_in(Resources(cpus=0.3))   # float sums do not refuse


def test_the_shortfall_names_what_is_missing_and_what_is_there():
    lacking = Resources(cpus=4, gpus=2).shortfall(Resources(cpus=2))
    assert lacking == ["4 CPUs (2 available)", "2 accelerators (0 available)"]
    assert Resources(cpus=1).shortfall(Resources(cpus=2)) == []


def test_the_local_machine_is_one_public_node_sized_by_settings():
    node = LocalMachine(Settings(local_pool_cpus=3))._node
    assert node.pool == "public" and node.resources.cpus == 3 and node.resources.memory_bytes > 0


@pytest.mark.parametrize("job, stale", [
    (None, True),                                                                       # deleted
    ({"status": "running", "run": {"run_id": "other", "active": True}}, True),          # another run now
    ({"status": "completed", "run": {"run_id": "r1", "active": False}}, True),          # ended
    ({"status": "running", "run": {"run_id": "r1", "active": True}}, False),            # running
    ({"status": "stopped", "run": {"run_id": "r1", "active": True}}, False),            # saving its checkpoint
])
def test_an_allocation_outlives_only_a_run_that_is_over(job, stale):
    at = datetime.now(UTC)
    if job is not None:
        job["run"]["lease_until"] = at + timedelta(seconds=10)
    assert is_stale({"run_id": "r1"}, job, at=at, lease_seconds=30) is stale


def test_an_allocation_of_a_dead_runner_is_freed_a_whole_lease_after_its_lease_expired():
    at = datetime.now(UTC)
    job = {"status": "running", "run": {"run_id": "r1", "active": True}}
    job["run"]["lease_until"] = at - timedelta(seconds=20)
    assert not is_stale({"run_id": "r1"}, job, at=at, lease_seconds=30)
    job["run"]["lease_until"] = at - timedelta(seconds=31)
    assert is_stale({"run_id": "r1"}, job, at=at, lease_seconds=30)


@pytest.mark.parametrize("name, ok", [("team-a", True), ("public", True), ("a", True), ("A", False),
                                      ("-a", False), ("a-", False), ("a_b", False), ("x" * 33, False)])
def test_pool_names_are_node_label_values(name, ok):
    assert bool(re.match(NAME_PATTERN, name)) is ok


def _nodes(*cpus: float) -> list:
    from services.lib.common.cluster import Node
    return [Node(id=f"n{i}", pool="p", address="127.0.0.1", resources=Resources(cpus=c)) for i, c in enumerate(cpus)]


@pytest.mark.parametrize("nodes, share, count, refusal", [
    ((2, 2), Resources(cpus=2), 1, None),
    ((1, 1), Resources(cpus=2), 1, "runs on one node and needs 2 CPUs (1 on its largest node) of pool 'p'"),
    ((1, 1), Resources(cpus=1), 2, None),
    ((2, 1), Resources(cpus=2), 2, "needs 2 distinct nodes but pool 'p' has 1 that could hold 2 CPUs each"),
    ((1, 1), Resources(cpus=2), 2, "runs on 2 distinct nodes and needs 2 CPUs (1 on its largest node) of pool 'p' "
                                   "on each"),
    ((), Resources(cpus=8), 1, None),   # no node joined yet: left to the queue
])
def test_work_that_no_node_could_ever_hold_is_refused_with_the_numbers(nodes, share, count, refusal):
    """A job's task, a training rank and an instance each run on one node: the pool's total is not enough."""
    from services.lib.common.errors import ApiError
    from services.lib.pools.service import _require_nodes_fit

    if refusal is None:
        _require_nodes_fit(_nodes(*nodes), share=share, count=count, pool="p", what="the job", field="resource_pool")
        return
    with pytest.raises(ApiError) as caught:
        _require_nodes_fit(_nodes(*nodes), share=share, count=count, pool="p", what="the job", field="resource_pool")
    assert (caught.value.status, caught.value.field) == (400, "resource_pool")
    assert refusal in caught.value.message and "it could never start there" in caught.value.message


# -- admission on nodes (services.lib.pools.ledger against an in-memory database) -------------------

GIB = 2**30


class _SlowCollection:
    """A collection whose every call first yields to the event loop a varying number of times, so
    concurrent admissions interleave between their reads and their conditional updates."""

    def __init__(self, inner, rng):
        self._inner, self._rng = inner, rng

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name == "find":
            return attr

        async def call(*args, **kwargs):
            for _ in range(self._rng.randrange(4)):
                await asyncio.sleep(0)
            return await attr(*args, **kwargs)
        return call


class _Uow:
    session = None

    def __init__(self, db, rng=None):
        self.db, self.rng = db, rng

    def collection(self, name):
        return _SlowCollection(self.db[name], self.rng) if self.rng else self.db[name]


def _db():
    from mongomock_motor import AsyncMongoMockClient
    return AsyncMongoMockClient()["maas"]


def _pool(*shapes: tuple[float, int]) -> list:
    from services.lib.common.cluster import Node
    return [Node(id=f"n{i}", pool="p", address="127.0.0.1", resources=Resources(cpus=c, memory_bytes=g * GIB))
            for i, (c, g) in enumerate(shapes)]


def _total(nodes) -> Resources:
    total = Resources()
    for node in nodes:
        total = total + node.resources
    return total


def _holder(name: str):
    from services.lib.pools.ledger import Holder
    return Holder(kind="compression", collection="jobs", job_id=name, run_id=f"run-{name}", tenant_id="t")


async def _admit(db, nodes, name: str, request: Resources, *, spread: int = 1, rng=None) -> list[str]:
    return await ledger.admit(_Uow(db, rng), holder=_holder(name), pool="p", request=request,
                              capacity=_total(nodes), nodes=nodes, spread=spread)


async def _node_used(db) -> dict[str, Resources]:
    """What each node holds (nodes holding nothing left out)."""
    used = {d["_id"]: Resources.from_dict(d) async for d in db[ledger.NODE_USAGE].find({})}
    return {node: r for node, r in used.items() if not r.is_empty}


async def test_admission_picks_the_fullest_node_that_holds_the_share():
    db, nodes = _db(), _pool((2, 8), (2, 8))
    one = Resources(cpus=1, memory_bytes=4 * GIB)
    first = await _admit(db, nodes, "a", one)
    assert await _admit(db, nodes, "b", one) == first            # best fit: packed, not spread
    assert await _admit(db, nodes, "c", Resources(cpus=2, memory_bytes=8 * GIB)) != first   # a whole node is left
    allocation = await db[ledger.ALLOCATIONS].find_one({"_id": "jobs:a"})
    assert allocation["nodes"] == first and allocation["per_node"]["memory_bytes"] == 4 * GIB
    assert (await ledger.usage(db[ledger.USAGE], "p")) == Resources(cpus=4, memory_bytes=16 * GIB)


async def test_a_request_that_fits_the_pool_but_no_node_waits_and_says_so():
    db, nodes = _db(), _pool((2, 8), (2, 8))
    one = Resources(cpus=1, memory_bytes=4 * GIB)
    a = await _admit(db, nodes, "a", one)
    await _admit(db, nodes, "b", one)
    await _admit(db, nodes, "c", one)
    assert await ledger.release(_Uow(db), key="jobs:a")          # now 1 CPU free on each node
    before = await _node_used(db), await ledger.usage(db[ledger.USAGE], "p")
    with pytest.raises(ledger.NoRoom) as caught:
        await _admit(db, nodes, "big", Resources(cpus=2, memory_bytes=8 * GIB))
    assert caught.value.reason == ("waiting for a node of pool 'p' with 2 CPUs, 8.0 GiB memory free; "
                                   "largest free share is 1 CPUs, 4.0 GiB memory")
    assert (await _node_used(db), await ledger.usage(db[ledger.USAGE], "p")) == before   # nothing taken
    assert await db[ledger.ALLOCATIONS].find_one({"_id": "jobs:big"}) is None
    # The pool's own shortfall keeps its words (the whole pool lacks room).
    with pytest.raises(ledger.NoRoom) as caught:
        await _admit(db, nodes, "huge", Resources(cpus=3))
    assert caught.value.reason == "waiting for 3 CPUs (2 available) in pool 'p'"
    # A node freed whole: the big one fits there.
    holder_on_a_node = "jobs:b" if (await db[ledger.ALLOCATIONS].find_one({"_id": "jobs:b"}))["nodes"] == a else "jobs:c"
    assert await ledger.release(_Uow(db), key=holder_on_a_node)
    assert await _admit(db, nodes, "big", Resources(cpus=2, memory_bytes=8 * GIB)) == a


async def test_memory_is_reserved_on_the_node_too():
    db, nodes = _db(), _pool((4, 8))
    await _admit(db, nodes, "a", Resources(cpus=1, memory_bytes=6 * GIB))
    with pytest.raises(ledger.NoRoom) as caught:    # CPUs are free, memory is not
        await _admit(db, nodes, "b", Resources(cpus=1, memory_bytes=4 * GIB))
    assert "4.0 GiB memory (2.0 GiB available)" in caught.value.reason


async def test_ranks_take_equal_shares_on_distinct_nodes():
    db, nodes = _db(), _pool((1, 4), (1, 4), (2, 8))
    given = await _admit(db, nodes, "train", Resources(cpus=2, memory_bytes=8 * GIB), spread=2)
    assert sorted(given) == ["n0", "n1"]          # best fit: the small nodes, the big one stays whole
    used = await _node_used(db)
    assert all(used[n] == Resources(cpus=1, memory_bytes=4 * GIB) for n in given)
    # The pool has 2 CPUs free, all on one node: two more ranks wait, and say how many nodes could hold one.
    before = await _node_used(db)
    with pytest.raises(ledger.NoRoom) as caught:
        await _admit(db, nodes, "train2", Resources(cpus=2, memory_bytes=8 * GIB), spread=2)
    assert caught.value.reason == ("waiting for 2 nodes of pool 'p' with 1 CPUs, 4.0 GiB memory free each; "
                                   "1 node has that free")
    assert await _node_used(db) == before         # the share it took on the big node went back
    assert await ledger.release(_Uow(db), key="jobs:train")
    assert not set(given) & set(await _node_used(db))


async def test_a_claimed_again_holder_keeps_its_nodes_and_work_that_takes_nothing_has_none():
    db, nodes = _db(), _pool((2, 8), (2, 8))
    first = await _admit(db, nodes, "a", Resources(cpus=2, memory_bytes=8 * GIB))
    assert await _admit(db, nodes, "a", Resources(cpus=2, memory_bytes=8 * GIB)) == first
    assert await _admit(_db(), [], "validation", Resources()) == []      # no share: no node needed


async def test_a_node_that_is_gone_is_never_offered_and_its_shares_still_come_back():
    db, nodes = _db(), _pool((2, 8), (2, 8))
    [lost] = await _admit(db, nodes, "a", Resources(cpus=2, memory_bytes=8 * GIB))
    alive = [n for n in nodes if n.id != lost]
    with pytest.raises(ledger.NoRoom):   # the pool's total shrank with the node
        await _admit(db, alive, "b", Resources(cpus=2, memory_bytes=8 * GIB), spread=1)
    assert await ledger.release(_Uow(db), key="jobs:a")           # the lost work's share is freed
    assert await _admit(db, alive, "b", Resources(cpus=2, memory_bytes=8 * GIB)) == [alive[0].id]


@pytest.mark.parametrize("seed", range(5))
async def test_concurrent_admissions_never_over_commit_a_node(seed):
    """Many runners admit at once (every database call may yield to another): each node ends at or
    under its capacity, and exactly as many requests got in as the nodes hold."""
    import random

    db, nodes = _db(), _pool((2, 8), (3, 12), (1, 4))
    rng = random.Random(seed)
    one = Resources(cpus=1, memory_bytes=4 * GIB)

    async def attempt(i: int):
        try:
            return await _admit(db, nodes, f"j{i}", one, rng=rng)
        except ledger.NoRoom:
            return None
    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    admitted = [r for r in results if r is not None]
    used = await _node_used(db)
    assert len(admitted) == 6
    for node in nodes:
        assert used.get(node.id, Resources()).fits_in(node.resources)
        assert sum(1 for r in admitted if r == [node.id]) == node.resources.cpus
    assert (await ledger.usage(db[ledger.USAGE], "p")) == Resources(cpus=6, memory_bytes=24 * GIB)


def test_the_local_pool_never_refuses_by_memory_what_its_cpus_admit():
    assert LocalMachine(Settings(local_pool_cpus=64))._node.resources.memory_bytes >= 64 * 4 * GIB
    exact = LocalMachine(Settings(local_pool_cpus=2, local_pool_memory_bytes=3 * GIB))._node.resources
    assert exact.memory_bytes == 3 * GIB    # set exactly: no floor


def test_one_spec_table_for_serving_the_deployer_compression_and_tuning():
    from services.compression.models import SPEC_RESOURCES
    from services.deployer.reconciler import placement_of
    from services.lib.pools.specs import INFERENCE_SPECS
    from services.serving.models import INSTANCE_SPECS, instance_resources
    from services.tuning.models import node_resources

    assert {s.id: (s.cpus, s.memory_gb) for s in INSTANCE_SPECS.values()} == \
        {s.id: (s.cpus, s.memory_gb) for s in INFERENCE_SPECS.values()}
    assert instance_resources("cpu.1u4g") == Resources(cpus=1, memory_bytes=4 * GIB)
    assert placement_of({"instance_spec": "cpu.2u8g"}) == ("public", Resources(cpus=2, memory_bytes=8 * GIB))
    assert SPEC_RESOURCES["cpu.4u16g"] == Resources(cpus=4, memory_bytes=16 * GIB)
    assert node_resources("cpu.1") == Resources(cpus=1, memory_bytes=4 * GIB)
    assert node_resources("gpu.8") == Resources(cpus=1, gpus=8, memory_bytes=4 * GIB)
