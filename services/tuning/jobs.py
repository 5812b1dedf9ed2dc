"""Job status writes shared by the API, the worker and the watchdog, and tuning as a resource of the
job engine's API (``RESOURCE``: list, detail, delete, stop, continue, logs).

A transition is one conditional update (the current status must be one the state machine allows)
plus its events, in the caller's unit of work; the source model's task record follows every change.
"""
from __future__ import annotations

from typing import Any

from contracts.tuning import TuneDeleted, TuneRequested, TuneStopped
from services.lib.common import jobs as common
from services.lib.common.context import Platform
from services.lib.common.context import transact  # noqa: F401 (re-exported for the API, worker and watchdog)
from services.lib.common.jobs import now  # noqa: F401 (re-exported for the API, worker and watchdog)
from services.lib.jobs import resources
from services.lib.jobs.resources import JobResource, Resumption, StopRules
from services.tuning.models import CONVERSIONS, JOBS, LOGS, JobStatus, job_view, managed_root
from services.tuning.states import STOPPABLE, allowed_from

TASK_KIND = "tuning"
JOB_LOGS = common.JobLogs(jobs=JOBS, logs=LOGS)


def subject(job_id: str) -> str:
    return f"tuning-jobs/{job_id}"


def announce_task_record(uow, job: dict, *, removed: bool = False) -> None:
    common.announce_task_record(uow, job, task_kind=TASK_KIND, removed=removed)


def announce_notification_rule(uow, job: dict, *, removed: bool = False) -> None:
    """Hand the job's "event notification" setting to the notifier (its events carry the same subject)."""
    resources.announce_notification_rule(uow, job, subject=subject(job["_id"]), removed=removed)


async def transition(uow, job_id: str, target: JobStatus, *, message: str | None = None,
                     where: dict[str, Any] | None = None, set_: dict[str, Any] | None = None,
                     inc: dict[str, Any] | None = None) -> dict | None:
    """Move a job to ``target`` if its current status allows it; the updated document, or None."""
    return await common.transition(uow, collection=JOBS, task_kind=TASK_KIND, job_id=job_id, target=target.value,
                                   allowed_from=allowed_from(target), message=message, where=where, set_=set_,
                                   inc=inc)


# ---------------------------------------------------------------------------------------------
# Tuning as a resource of the job API (services.lib.jobs.resources)
# ---------------------------------------------------------------------------------------------

def _stopped(uow, job: dict) -> None:
    # A running worker notices at its next heartbeat and saves a checkpoint where it stopped.
    uow.emit(TuneStopped(job_id=job["_id"], reason="user", iteration=job["progress"]["iteration"]),
             tenant_id=job["tenant_id"], subject=subject(job["_id"]))


def _resumption(job: dict) -> Resumption:
    latest = job["checkpoints"][-1]["iteration"] if job["checkpoints"] else 0
    return Resumption(message=f"continued from the checkpoint at iteration {latest}" if latest
                      else "continued from the start (no checkpoint yet)", set_={"unconditional_streak": 0})


def _continued(uow, job: dict) -> None:
    uow.emit(TuneRequested(job_id=job["_id"], reason="continued", restart_count=job["restart_count"]),
             tenant_id=job["tenant_id"], subject=subject(job["_id"]))


async def _deleted(uow, job: dict) -> None:
    await uow.collection(CONVERSIONS).delete_many({"job_id": job["_id"], "tenant_id": job["tenant_id"]},
                                                  session=uow.session)
    uow.emit(TuneDeleted(job_id=job["_id"], name=job["name"]), tenant_id=job["tenant_id"], subject=subject(job["_id"]))


async def _remove_managed_files(platform: Platform, job: dict) -> None:
    # Platform-owned copies go; checkpoints and weights in the user's output path stay theirs.
    await platform.store.remove_prefix(managed_root(job["tenant_id"], job["_id"]))


RESOURCE = JobResource(
    path="tuning-jobs", resource="tuningJobs", label="tuning job", tag="tuning", task_kind=TASK_KIND, jobs=JOBS,
    logs=JOB_LOGS, view=job_view,
    rules=StopRules(statuses=JobStatus, stoppable=tuple(s for s in JobStatus if s in STOPPABLE),
                    stopped=JobStatus.stopped, resumed=JobStatus.creating,
                    still_stopping="is still saving its last checkpoint"),
    transition=transition, on_stopped=_stopped, resumption=_resumption, on_continued=_continued,
    on_deleted=_deleted, after_delete=_remove_managed_files)
