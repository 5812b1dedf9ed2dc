"""Lease watchdog of the tuning service: a running job whose worker stopped renewing its lease (the
process died, the machine went away) is re-queued from its latest checkpoint when auto-restart
allows it, and failed with the reason otherwise."""
from __future__ import annotations

import asyncio
import logging

from contracts.tuning import TuneFailed, TuneHangSuspected, TuneRequested
from services.common.context import Platform
from services.tuning.jobs import now, subject, transact, transition
from services.tuning.logstore import append_lines
from services.tuning.models import JOBS, JobStatus
from services.tuning.settings import TuningSettings

log = logging.getLogger(__name__)


async def recover_expired(platform: Platform) -> int:
    """Handle every running job whose lease has expired; the number handled."""
    at = now()
    handled = 0
    async for job in platform.mongo[JOBS].find({"status": JobStatus.running.value, "run.lease_until": {"$lt": at}}):
        message = await transact(platform, lambda uow, job=job: _recover(uow, job, at))
        if message is not None:
            handled += 1
            log.warning("tuning job %s: %s", job["_id"], message)
            await append_lines(platform, job_id=job["_id"], tenant_id=job["tenant_id"], lines=[f"[maas] {message}"])
    return handled


async def _recover(uow, job: dict, at) -> str | None:
    """Re-queue (auto-restart) or fail one job; the message, or None if its worker came back meanwhile."""
    run = job["run"]
    # The fence: only this run, and only if its lease is still expired (no late renewal won).
    fence = {"run.run_id": run["run_id"], "run.lease_until": {"$lt": at}}
    policy = job.get("auto_restart") or {}
    restarts = job.get("restart_count", 0)
    latest = job["checkpoints"][-1]["iteration"] if job["checkpoints"] else 0
    reason = f"worker {run['worker_id']} stopped responding (no heartbeat since {run['lease_until']:%H:%M:%S})"
    tenant, subj = job["tenant_id"], subject(job["_id"])
    if policy.get("enabled") and restarts < policy.get("max_restarts", 3):
        where_from = f"the checkpoint at iteration {latest}" if latest else "the start (no checkpoint yet)"
        message = f"{reason}; auto-restart {restarts + 1}/{policy['max_restarts']} from {where_from}"
        doc = await transition(uow, job["_id"], JobStatus.waiting, where=fence, message=message,
                               set_={"run.active": False, "last_error": reason}, inc={"restart_count": 1})
        if doc is None:
            return None
        uow.emit(TuneFailed(job_id=job["_id"], message=reason, restart_count=restarts + 1, will_restart=True),
                 tenant_id=tenant, subject=subj)
        uow.emit(TuneRequested(job_id=job["_id"], reason="restarted", restart_count=restarts + 1),
                 tenant_id=tenant, subject=subj)
        return message
    why = "auto-restart is off" if not policy.get("enabled") else f"it was restarted {restarts} times, the maximum"
    message = f"{reason}; {why}"
    doc = await transition(uow, job["_id"], JobStatus.failed, where=fence, message=message,
                           set_={"run.active": False, "finished_at": at, "last_error": reason})
    if doc is None:
        return None
    uow.emit(TuneFailed(job_id=job["_id"], message=message, restart_count=restarts), tenant_id=tenant, subject=subj)
    return message


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
            await append_lines(platform, job_id=job["_id"], tenant_id=job["tenant_id"], lines=[
                f"[maas] WARNING no iteration finished for {idle / 60:.0f} min: the job may be hung"])
    return flagged


async def watch_leases(platform: Platform) -> None:
    settings = TuningSettings()
    while True:
        try:
            await recover_expired(platform)
            await report_hangs(platform, hang_seconds=settings.hang_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("tuning lease watchdog failed; retrying")
        await asyncio.sleep(settings.watchdog_seconds)
