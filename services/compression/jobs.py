"""Job writes shared by the API and the worker: status transitions, task records, log lines (the
shared mechanics are in services.lib.common.jobs; this binds them to compression's collections), and
compression as a resource of the job engine's API (``RESOURCE``: list, detail, delete, stop,
continue, logs)."""
from __future__ import annotations

from typing import Any

from contracts.compression import CompressionDeleted, CompressionRequested, CompressionStopped
from services.lib.common import jobs as common
from services.lib.common.jobs import now  # noqa: F401 (re-exported for the API and worker)
from services.compression.models import JOBS, LOGS, JobStatus, Strategy, job_view
from services.lib.jobs.resources import JobResource, Resumption, StopRules

TASK_KIND = "compression"
JOB_LOGS = common.JobLogs(jobs=JOBS, logs=LOGS)

# Which statuses a job may enter from which.
ALLOWED_FROM: dict[JobStatus, tuple[JobStatus, ...]] = {
    JobStatus.pending: (JobStatus.running, JobStatus.stopped),   # re-queued after its worker vanished; continued
    JobStatus.running: (JobStatus.pending,),
    JobStatus.stopped: (JobStatus.pending, JobStatus.running),   # by the user
    JobStatus.completed: (JobStatus.running,),
    JobStatus.failed: (JobStatus.pending, JobStatus.running),
}
STOPPABLE = ALLOWED_FROM[JobStatus.stopped]


def subject(job_id: str) -> str:
    return f"compression-jobs/{job_id}"


def announce_task_record(uow, job: dict, *, removed: bool = False) -> None:
    common.announce_task_record(uow, job, task_kind=TASK_KIND, removed=removed)


async def transition(uow, job_id: str, target: JobStatus, *, message: str | None = None,
                     where: dict[str, Any] | None = None, set_: dict[str, Any] | None = None,
                     inc: dict[str, Any] | None = None) -> dict | None:
    """Move a job to ``target`` if its current status allows it; the updated document, or None."""
    return await common.transition(uow, collection=JOBS, task_kind=TASK_KIND, job_id=job_id, target=target.value,
                                   allowed_from=[s.value for s in ALLOWED_FROM[target]], message=message,
                                   where=where, set_=set_, inc=inc)


# ---------------------------------------------------------------------------------------------
# Compression as a resource of the job API (services.lib.jobs.resources)
# ---------------------------------------------------------------------------------------------

def _stopped(uow, job: dict) -> None:
    # A running worker notices at its next heartbeat and ends the job process.
    uow.emit(CompressionStopped(job_id=job["_id"], reason="user"), tenant_id=job["tenant_id"],
             subject=subject(job["_id"]))


def _resumption(job: dict) -> Resumption:
    # No checkpoints: the job runs again from the beginning, with a fresh budget of runs (MAX_ATTEMPTS).
    return Resumption(message="continued: compression has no checkpoints, so it runs again from the beginning",
                      set_={"attempt": 0, "progress": {"fraction": 0.0, "step": "queued"}, "metrics": None,
                            "finished_at": None})


def _continued(uow, job: dict) -> None:
    uow.emit(CompressionRequested(job_id=job["_id"], strategy=job["strategy"], reason="continued",
                                  attempt=job["attempt"] + 1),
             tenant_id=job["tenant_id"], subject=subject(job["_id"]))


async def _deleted(uow, job: dict) -> None:
    uow.emit(CompressionDeleted(job_id=job["_id"], name=job["name"]), tenant_id=job["tenant_id"],
             subject=subject(job["_id"]))


async def list_filters(strategy: Strategy | None = None) -> dict:
    """Compression's own list filter (a query parameter of GET /compression-jobs)."""
    return {"strategy": strategy.value} if strategy else {}


RESOURCE = JobResource(
    path="compression-jobs", resource="compressionJobs", label="compression job", tag="compression",
    task_kind=TASK_KIND, jobs=JOBS, logs=JOB_LOGS, view=job_view,
    rules=StopRules(statuses=JobStatus, stoppable=STOPPABLE, stopped=JobStatus.stopped, resumed=JobStatus.pending,
                    still_stopping="is still ending its last run"),
    transition=transition, on_stopped=_stopped, resumption=_resumption, on_continued=_continued,
    on_deleted=_deleted, list_filters=list_filters)
