"""Job status writes shared by the API, the worker and the watchdog.

A transition is one conditional update (the current status must be one the state machine allows)
plus its events, in the caller's unit of work; the source model's task record follows every change.
"""
from __future__ import annotations

from typing import Any

from contracts.notifications import NotificationRuleChanged
from services.common import jobs as common
from services.common.context import transact  # noqa: F401 (re-exported for the API, worker and watchdog)
from services.common.jobs import now  # noqa: F401 (re-exported for the API, worker and watchdog)
from services.tuning.models import JOBS, LOGS, JobStatus
from services.tuning.states import allowed_from

TASK_KIND = "tuning"
JOB_LOGS = common.JobLogs(jobs=JOBS, logs=LOGS)


def subject(job_id: str) -> str:
    return f"tuning-jobs/{job_id}"


def announce_task_record(uow, job: dict, *, removed: bool = False) -> None:
    common.announce_task_record(uow, job, task_kind=TASK_KIND, removed=removed)


def announce_notification_rule(uow, job: dict, *, removed: bool = False) -> None:
    """Hand the job's "event notification" setting to the notifier (its events carry the same subject)."""
    setting = job.get("notification") or {}
    if not setting.get("enabled"):
        return
    uow.emit(NotificationRuleChanged(subject=subject(job["_id"]), topic_name=setting["topic_name"],
                                     events=setting["events"], removed=removed),
             tenant_id=job["tenant_id"], subject=subject(job["_id"]))


async def transition(uow, job_id: str, target: JobStatus, *, message: str | None = None,
                     where: dict[str, Any] | None = None, set_: dict[str, Any] | None = None,
                     inc: dict[str, Any] | None = None) -> dict | None:
    """Move a job to ``target`` if its current status allows it; the updated document, or None."""
    return await common.transition(uow, collection=JOBS, task_kind=TASK_KIND, job_id=job_id, target=target.value,
                                   allowed_from=allowed_from(target), message=message, where=where, set_=set_,
                                   inc=inc)
