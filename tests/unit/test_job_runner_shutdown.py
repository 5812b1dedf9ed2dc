"""A runner's shutdown: its runs are asked to stop, get their grace, and then none outlives it."""
from __future__ import annotations

import asyncio
from pathlib import Path

from services.lib.jobs.runner import JobRunner, Run, RunnerSettings


def _runner_with_a_run(*, obeys_stop: bool) -> tuple[JobRunner, Run, dict]:
    runner = JobRunner(platform=None, kind=None, settings=RunnerSettings())
    run = Run(job={"_id": "job-1", "tenant_id": "t"}, run_id="r1", worker_id=runner.worker_id,
              work=Path("."), loop=asyncio.get_running_loop())
    seen: dict = {}

    async def work():
        try:
            while not (obeys_stop and run.stop.is_set()):
                await asyncio.sleep(0.01)
            seen["ended"] = "stopped"
        except asyncio.CancelledError:
            seen["ended"] = "cancelled"   # where an executor ends its process or Ray task
            raise

    runner.active["job-1"] = run
    runner.runs["job-1"] = asyncio.create_task(work())
    return runner, run, seen


async def test_a_run_that_stops_in_its_grace_ends_as_stopped():
    runner, run, seen = _runner_with_a_run(obeys_stop=True)
    await runner.shutdown(grace_seconds=5)
    assert run.stop_reason == "shutdown" and seen == {"ended": "stopped"}
    assert runner.draining and not runner.has_capacity()


async def test_a_run_still_going_after_the_grace_is_cancelled_and_waited_for():
    runner, run, seen = _runner_with_a_run(obeys_stop=False)
    task = runner.runs["job-1"]
    await runner.shutdown(grace_seconds=0.05)
    assert task.done() and task.cancelled()
    assert seen == {"ended": "cancelled"} and run.stop_reason == "shutdown"
