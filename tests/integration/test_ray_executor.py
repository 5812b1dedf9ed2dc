"""The Ray executor on a real multi-node Ray cluster: the job engine's executor contract (messages,
questions, errors, cancelling) holds, work lands only on nodes of its pool, and a lost node fails
the work as an environmental failure (the engine's restart rules take it from there)."""
from __future__ import annotations

import asyncio

import pytest

from services.lib.common.cluster import Resources
from services.lib.common.settings import Settings
from services.lib.jobs.executor import Placement, Work, WorkFailed
from services.lib.jobs.ray_executor import RayExecutor
from services.lib.common.cluster import RayCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own


@pytest.fixture(scope="module")
def executor(ray_cluster):
    ex = RayExecutor(RayCluster(Settings(ray_address=ray_cluster.address)), entry_package="tests")
    yield ex
    ex.close()


def work(tmp_path, entry: str, *, pool: str = "public", cpus: float = 1, **args) -> Work:
    return Work(entry=f"tests.unit.{entry}", args=args, workdir=tmp_path / "proc",
                placement=Placement(pool=pool, resources=Resources(cpus=cpus)))


async def test_work_runs_on_a_node_of_its_pool_and_its_messages_arrive(executor, ray_cluster, tmp_path):
    for pool in ("team-a", "public"):
        heard = []
        result = await executor.run(work(tmp_path, "ray_entries:where", pool=pool), lambda k, d: heard.append((k, d)))
        assert result["node_id"] in ray_cluster.node_ids(pool)
        placed = [d for k, d in heard if k == "placed"]
        assert [p["node_id"] for p in placed] == [result["node_id"]]
        assert ("log", {"line": "hello from a node"}) in heard


async def test_messages_arrive_in_the_order_they_were_sent_and_all_before_the_end(executor, tmp_path):
    heard = []
    assert await executor.run(work(tmp_path, "ray_entries:many_logs", count=300),
                              lambda k, d: heard.append((k, d))) == 300
    assert heard[0][0] == "placed"
    assert [d["line"] for k, d in heard[1:]] == [str(n) for n in range(300)]


async def test_questions_get_the_listeners_answers(executor, tmp_path):
    asked = []

    def listener(kind, data):
        if kind == "stop?":
            asked.append(1)
            return len(asked) >= 3
        return None

    assert await executor.run(work(tmp_path, "job_entries:count_until_stopped"), listener) == 2


def _alive_mailbox_nodes() -> list[str]:
    import ray

    return [a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if a["ActorClassName"].endswith("Mailbox") and a["State"] == "ALIVE"]


async def test_a_runs_channel_lives_on_the_drivers_node_not_on_a_work_node(executor, ray_cluster, tmp_path):
    """A pool node's loss must not take a healthy run's channel with it (a soft affinity sent about
    half the mailboxes to the pool's nodes; CI then lost a tuning job whose node was removed)."""
    import ray

    driver = ray.get_runtime_context().get_node_id()
    for _ in range(6):
        homes = []
        await executor.run(work(tmp_path, "ray_entries:where", pool="team-a"),
                           lambda k, d: homes.extend(_alive_mailbox_nodes()) if k == "placed" else None)
        assert homes == [driver]


async def test_an_input_error_and_a_crash_are_told_apart(executor, tmp_path):
    with pytest.raises(WorkFailed) as bad_input:
        await executor.run(work(tmp_path, "job_entries:fail_on_input"), lambda k, d: None)
    assert bad_input.value.input_error and "learning_rate" in bad_input.value.message
    with pytest.raises(WorkFailed) as crash:
        await executor.run(work(tmp_path, "job_entries:crash"), lambda k, d: None)
    assert not crash.value.input_error and crash.value.kind == "RuntimeError" and "boom" in crash.value.detail


async def test_a_dying_process_is_reported(executor, tmp_path):
    with pytest.raises(WorkFailed) as died:
        await executor.run(work(tmp_path, "job_entries:die"), lambda k, d: None)
    assert died.value.kind in ("ProcessExited", "NodeLost")


async def test_only_functions_of_the_named_package_run(executor, tmp_path):
    with pytest.raises(WorkFailed) as refused:
        await executor.run(Work(entry="os:system", args={}, workdir=tmp_path), lambda k, d: None)
    assert "is not a function of the tests package" in refused.value.message


async def test_a_cancelled_run_ends_its_task_and_frees_the_cpus(executor, ray_cluster, tmp_path):
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    # team-a has 2 CPUs: a 2-CPU task holds the whole pool until it is cancelled.
    running = asyncio.create_task(executor.run(work(tmp_path, "ray_entries:slow_where", pool="team-a", cpus=2),
                                               lambda k, d: loop.call_soon_threadsafe(started.set)))
    await asyncio.wait_for(started.wait(), 120)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The pool's CPUs are free again: the next 2-CPU task starts (it would wait forever otherwise).
    result = await asyncio.wait_for(executor.run(work(tmp_path, "ray_entries:where", pool="team-a", cpus=2),
                                                 lambda k, d: None), 120)
    assert result["node_id"] in ray_cluster.node_ids("team-a")


async def test_a_lost_node_fails_its_work_as_node_lost(executor, ray_cluster, tmp_path):
    node = ray_cluster.add_node("doomed", cpus=1)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    running = asyncio.create_task(executor.run(work(tmp_path, "ray_entries:slow_where", pool="doomed"),
                                               lambda k, d: loop.call_soon_threadsafe(started.set)))
    await asyncio.wait_for(started.wait(), 120)
    await asyncio.to_thread(ray_cluster.remove_node, node)
    with pytest.raises(WorkFailed) as lost:
        await asyncio.wait_for(running, 120)
    assert lost.value.kind in ("NodeLost", "ProcessExited")
