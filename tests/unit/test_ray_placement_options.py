"""What the Ray backends ask Ray for: the node the pool's ledger gave the work (a hard affinity), the
spec's CPUs and memory (Ray enforces the same reservation), and, without a node, any node of the
pool (a hard label constraint). Plain option objects: no cluster is started here (the same code on
a real cluster: tests/integration/test_ray_instances.py and test_ray_pools.py)."""
from __future__ import annotations

from pathlib import Path

from ray.util.placement_group import NODE_ID_LABEL_KEY
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, NodeLabelSchedulingStrategy

from services.deployer.backend import InstanceLaunch
from services.deployer.ray_backend import RayInstanceBackend
from services.lib.common.cluster import POOL_LABEL, RayCluster, Resources
from services.lib.common.settings import Settings
from services.lib.jobs.executor import Placement, Work
from services.lib.jobs.ray_executor import RayExecutor
from services.lib.mlkit.training.ray_ranks import RayPlacement

GIB = 2**30
N1, N2, N7 = "1" * 56, "2" * 56, "7" * 56   # node ids as Ray writes them (28 bytes, hex)


def _cluster() -> RayCluster:
    return RayCluster(Settings(ray_address="127.0.0.1:1"))


def test_a_jobs_task_runs_on_its_node_with_its_cpus_and_memory():
    executor = RayExecutor(_cluster())
    try:
        work = Work(entry="x:y", args={}, workdir=Path("."), placement=Placement(
            pool="team-a", resources=Resources(cpus=2, memory_bytes=8 * GIB), node_ids=(N1,)))
        options = executor.task_options(work)
        assert (options["num_cpus"], options["memory"]) == (2, 8 * GIB)
        strategy = options["scheduling_strategy"]
        assert isinstance(strategy, NodeAffinitySchedulingStrategy) and strategy.node_id == N1 and not strategy.soft

        # The coordinator of ranks on several nodes takes nothing and may run on any node of the pool.
        spread = Work(entry="x:y", args={}, workdir=Path("."), placement=Placement(
            pool="team-a", resources=Resources(cpus=2, memory_bytes=8 * GIB), nodes=2, node_ids=(N1, N2)))
        options = executor.task_options(spread)
        assert options["num_cpus"] == 0 and "memory" not in options
        assert isinstance(options["scheduling_strategy"], NodeLabelSchedulingStrategy)
    finally:
        executor.close()


async def test_an_instance_actor_runs_on_its_node_with_its_spec(tmp_path):
    backend = RayInstanceBackend(_cluster(), root=tmp_path / "deployer")
    try:
        launch = InstanceLaunch(instance_id="i1", service_id="s", served_model_name="s", model_uri="s3://b/m/",
                                max_model_len=64, secret="x", cpus=2, pool="serve-a", memory_bytes=8 * GIB,
                                node_id=N7)
        options = backend.actor_options(launch)
        assert (options["num_cpus"], options["memory"], options["lifetime"]) == (2, 8 * GIB, "detached")
        # Pinned by labels (the pool's and Ray's node id): it waits, not fails, while a new node settles.
        strategy = options["scheduling_strategy"]
        assert isinstance(strategy, NodeLabelSchedulingStrategy)
        assert {e.key: e.operator.values for e in strategy.hard} == {POOL_LABEL: ["serve-a"], NODE_ID_LABEL_KEY: [N7]}
        unplaced = backend.actor_options(InstanceLaunch(instance_id="i2", service_id="s", served_model_name="s",
                                                        model_uri="s3://b/m/", max_model_len=64, secret="x"))
        assert "memory" not in unplaced and isinstance(unplaced["scheduling_strategy"], NodeLabelSchedulingStrategy)
    finally:
        await backend.close()


def test_each_training_rank_is_pinned_to_the_node_the_ledger_gave_it():
    placement = RayPlacement(pool="train", cpus_per_rank=1, memory_per_rank=4 * GIB, node_ids=("a", "b"))
    assert placement.bundle() == {"CPU": 1, "memory": float(4 * GIB)}
    assert placement.selectors(2) == [{POOL_LABEL: "train", NODE_ID_LABEL_KEY: "a"},
                                      {POOL_LABEL: "train", NODE_ID_LABEL_KEY: "b"}]
    assert RayPlacement(pool="train").selectors(2) == [{POOL_LABEL: "train"}] * 2   # no nodes given: any two
