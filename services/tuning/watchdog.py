"""Watchdog of the tuning service: the engine's lease watchdog (``services.lib.jobs.watchdog``) re-queues
a job whose worker stopped renewing its lease from its latest checkpoint when auto-restart allows it
(``TuningJobs.recover``), and failed with the reason otherwise; here also the hang report (疑似卡死)."""
from __future__ import annotations

import logging

from contracts.tuning import TuneHangSuspected
from services.lib.common.context import Platform
from services.lib.jobs.watchdog import watch
from services.tuning.jobs import JOB_LOGS, now, subject, transact
from services.tuning.models import JOBS, JobStatus
from services.tuning.settings import TuningSettings
from services.tuning.worker import TuningJobs

log = logging.getLogger(__name__)


async def report_hangs(platform: Platform, *, hang_seconds: float) -> int:
    """Flag running jobs whose worker is alive but finished no iteration for ``hang_seconds`` (疑似卡死)."""
    at = now()
    flagged = 0
    query = {"status": JobStatus.running.value, "run.lease_until": {"$gte": at}, "hang_reported": {"$ne": True}}
    async for job in platform.mongo[JOBS].find(query):
        last = (job.get("progress") or {}).get("updated_at") or job["run"]["started_at"]
        idle = (at - last).total_seconds()
        if idle < hang_seconds:
            continue

        async def flag(uow, job=job, idle=idle) -> bool:
            updated = await uow.collection(JOBS).update_one(
                {"_id": job["_id"], "run.run_id": job["run"]["run_id"], "hang_reported": {"$ne": True}},
                {"$set": {"hang_reported": True}}, session=uow.session)
            if updated.modified_count == 1:
                uow.emit(TuneHangSuspected(job_id=job["_id"], iteration=job["progress"]["iteration"],
                                           idle_seconds=round(idle, 1)),
                         tenant_id=job["tenant_id"], subject=subject(job["_id"]))
            return updated.modified_count == 1
        if await transact(platform, flag):
            flagged += 1
            await JOB_LOGS.append(platform, job_id=job["_id"], tenant_id=job["tenant_id"], lines=[
                f"[maas] WARNING no iteration finished for {idle / 60:.0f} min: the job may be hung"])
    return flagged


async def watch_leases(platform: Platform) -> None:
    settings = TuningSettings()
    # recover() needs no executor: nothing runs here.
    kind = TuningJobs(platform, settings, executor=None)
    await watch(platform, kind, every_seconds=settings.watchdog_seconds,
                also=(lambda: report_hangs(platform, hang_seconds=settings.hang_seconds),))
