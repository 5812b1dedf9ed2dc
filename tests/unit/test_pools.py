"""Resource arithmetic, the never-fits message, stale allocations and pool names (the admission
itself runs against the real database in tests/integration/test_ray_pools.py)."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from services.lib.common.cluster import LocalMachine, Resources
from services.lib.common.settings import Settings
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
