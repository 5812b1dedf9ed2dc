"""Read-your-writes in job logs (issue 18, item 10): whoever sees a job ended finds all of its log, the
ERROR line and what the end did included. Those lines used to be written after the end was recorded,
so a client that counted a failed job's ERROR lines the moment it saw ``failed`` could find none.

A job kind of this test's own (it fails at once) runs on the engine's real runner and MongoDB; the
runner notes what the log holds when it first finds its job ended (where it used to write the rest)."""
from __future__ import annotations

import asyncio

import pytest
from pymongo import ReturnDocument

from contracts import new_id
from services.lib.common.cluster import Resources
from services.lib.common.jobs import JobLogs, now
from services.lib.jobs.runner import JobRunner, Outcome, Run, RunnerSettings

pytestmark = pytest.mark.integration

JOBS, LOGS = "log_consistency_jobs", "log_consistency_logs"


class FailsAtOnce:
    name = "log-consistency"
    jobs = JOBS
    logs = JobLogs(jobs=JOBS, logs=LOGS)
    claimable = ("queued",)

    async def claim(self, uow, *, job_id: str, run: dict) -> dict | None:
        return await uow.collection(JOBS).find_one_and_update(
            {"_id": job_id, "status": "queued"}, {"$set": {"status": "running", "run": run}},
            return_document=ReturnDocument.AFTER, session=uow.session)

    async def execute(self, run: Run) -> Outcome:
        run.log("loading the weights")
        raise RuntimeError("the weights cannot be loaded")

    def failure(self, run: Run, exc: Exception) -> Outcome:
        return Outcome(kind="failed", message=str(exc))

    async def record_end(self, uow, run: Run, outcome: Outcome) -> str | None:
        await uow.collection(JOBS).update_one({"_id": run.job_id, "run.run_id": run.run_id},
                                              {"$set": {"status": "failed", "status_message": outcome.message}},
                                              session=uow.session)
        return "no output was kept"

    async def save_progress(self, run: Run, progress: dict) -> None:
        pass

    def on_heartbeat(self, run: Run) -> None:
        pass


class WatchingRunner(JobRunner):
    """Notes the job's log the first time a flush finds the job ended."""
    log_when_ended: list[str] | None = None

    async def flush(self, run: Run) -> None:
        job = await self.platform.mongo[JOBS].find_one({"_id": run.job_id})
        if job["status"] == "failed" and self.log_when_ended is None:
            cursor = self.platform.mongo[LOGS].find({"job_id": run.job_id}).sort("seq", 1)
            self.log_when_ended = [d["line"] async for d in cursor]
        await super().flush(run)


async def test_a_job_seen_ended_already_has_its_last_log_lines(running_platform):
    platform = running_platform["platform"]
    job_id = new_id()
    await platform.mongo[JOBS].insert_one({"_id": job_id, "tenant_id": "t-logs", "name": "fails", "status": "queued",
                                           "created_at": now()})
    runner = WatchingRunner(platform, FailsAtOnce(), RunnerSettings(default_resources=Resources(cpus=0.001)))
    assert await runner.try_claim(job_id)
    await asyncio.gather(*runner.runs.values())

    lines = [d["line"] async for d in platform.mongo[LOGS].find({"job_id": job_id}).sort("seq", 1)]
    assert lines == ["loading the weights", "[maas] ERROR the weights cannot be loaded", "[maas] no output was kept"]
    assert runner.log_when_ended == lines   # nothing came after the end
    assert [d["seq"] async for d in platform.mongo[LOGS].find({"job_id": job_id}).sort("seq", 1)] == [1, 2, 3]
