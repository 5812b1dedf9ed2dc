"""Job writes shared by the API and the worker: status transitions, task records, log lines
(the shared mechanics are in services.common.jobs; this binds them to compression's collections)."""
from __future__ import annotations

from typing import Any

from services.common import jobs as common
from services.common.jobs import now  # noqa: F401 (re-exported for the API and worker)
from services.compression.models import JOBS, LOGS, JobStatus

TASK_KIND = "compression"
JOB_LOGS = common.JobLogs(jobs=JOBS, logs=LOGS)

# Which statuses a job may enter from which.
ALLOWED_FROM: dict[JobStatus, tuple[JobStatus, ...]] = {
    JobStatus.pending: (JobStatus.running,),          # re-queued after its worker vanished
    JobStatus.running: (JobStatus.pending,),
    JobStatus.completed: (JobStatus.running,),
    JobStatus.failed: (JobStatus.pending, JobStatus.running),
}


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
