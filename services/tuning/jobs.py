"""Job status writes shared by the API, the worker and the watchdog.

A transition is one conditional update (the current status must be one the state machine allows)
plus its events, in the caller's unit of work; the source model's task record follows every change.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

from contracts.events import TaskRecordChanged
from contracts.notifications import NotificationRuleChanged
from services.tuning.models import JOBS, JobStatus
from services.tuning.states import allowed_from


T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def subject(job_id: str) -> str:
    return f"tuning-jobs/{job_id}"


def announce_task_record(uow, job: dict, *, removed: bool = False) -> None:
    """Tell the registry that this job uses the source model version (its "task records")."""
    source = job["source"]
    if source.get("kind") != "model":
        return  # a template's preset weights: no model of the user's to record it on
    uow.emit(TaskRecordChanged(task_id=job["_id"], task_kind="tuning", task_name=job["name"],
                               model_id=source["model_id"], version_id=source["version_id"],
                               status=job["status"], removed=removed),
             tenant_id=job["tenant_id"], subject=f"models/{source['model_id']}")


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
    at = now()
    update: dict[str, Any] = {
        "$set": {"status": target.value, "status_message": message, "updated_at": at, **(set_ or {})},
        "$push": {"history": {"status": target.value, "at": at, "message": message}},
    }
    if inc:
        update["$inc"] = inc
    doc = await uow.collection(JOBS).find_one_and_update(
        {"_id": job_id, "status": {"$in": allowed_from(target)}, **(where or {})}, update,
        return_document=ReturnDocument.AFTER, session=uow.session)
    if doc is not None:
        announce_task_record(uow, doc)
    return doc


async def transact(platform, work: Callable[[Any], Awaitable[T]], *, attempts: int = 8) -> T | None:
    """Run ``work(uow)`` in a unit of work, again on a transient transaction error.

    Workers renew leases and write progress on the job document outside transactions, so a
    transaction that touches the same document can hit a write conflict; MongoDB labels those
    TransientTransactionError and the whole transaction is safe to repeat.
    """
    for attempt in range(attempts):
        try:
            async with platform.uow() as uow:
                return await work(uow)
        except PyMongoError as exc:
            transient = exc.has_error_label("TransientTransactionError") or exc.has_error_label(
                "UnknownTransactionCommitResult")
            if not transient or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.02 * (2 ** attempt) * (0.5 + random.random()))
    return None
