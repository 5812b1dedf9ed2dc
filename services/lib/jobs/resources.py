"""The API side of the job engine: list, detail, delete, stop and continue, the same for every kind.

A kind describes itself once with a ``JobResource`` (its URL path and IAM resource, its collections
and view, what its state table says about stop and continue, and hooks for its own events and
clean-up); the use cases below do the rest, so a job behaves the same through the API whatever it
runs. Every query is scoped to the caller's account; every write is one unit of work. Keyword-only.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pymongo import DESCENDING

from contracts.notifications import NotificationRuleChanged
from contracts.timestamps import instants
from services.lib.common.context import Platform, transact
from services.lib.pools import ledger
from services.lib.common.errors import ApiError, bad_request, conflict, not_found
from services.lib.common.jobs import JobLogs, announce_task_record, now
from services.lib.readmodels.model_refs import model_name_taken

# (uow, job_id, target, *, message=, where=, set_=, inc=) -> the updated job or None: the kind's
# transition, which enforces its state table.
Transition = Callable[..., Awaitable[dict | None]]
Emit = Callable[[Any, dict], None]                      # (uow, job) -> emits the kind's event(s)
InUow = Callable[[Any, dict], Awaitable[None]]          # (uow, job) -> the kind's writes and events


async def no_filters() -> dict:
    """The list filters of a kind that has none beyond name and status (async, as every dependency:
    FastAPI runs a plain ``def`` in its thread pool)."""
    return {}


@dataclass(frozen=True)
class StopRules:
    """What a kind's state table says about stop and continue."""
    statuses: type[StrEnum]              # every status (the list's ``status`` filter)
    stoppable: tuple[StrEnum, ...]       # the statuses a user may stop, in the order messages list them
    stopped: StrEnum                     # where a stop moves a job
    resumed: StrEnum                     # where continue moves a stopped job
    still_stopping: str                  # "is still saving its last checkpoint": why continue must wait


@dataclass(frozen=True)
class Resumption:
    """How a kind continues a stopped job: the status message and the fields it resets."""
    message: str
    set_: dict[str, Any]


@dataclass(frozen=True)
class JobResource:
    """One kind of job as the API sees it."""
    path: str                                   # URL collection: "tuning-jobs"; also the events' subject prefix
    resource: str                               # IAM resource: "tuningJobs" (maas:tuningJobs:<verb>)
    label: str                                  # "tuning job", in messages
    tag: str                                    # OpenAPI tag
    task_kind: str                              # the source model's task records: "tuning"
    jobs: str                                   # MongoDB collection of the jobs
    logs: JobLogs
    view: Callable[[dict], dict]                # the job as the API shows it
    rules: StopRules
    transition: Transition
    on_stopped: Emit                            # the kind's stop event
    resumption: Callable[[dict], Resumption]    # how the kind continues this (stopped) job
    on_continued: Emit                          # the kind's request event for the continued job
    on_deleted: InUow                           # the kind's deleted event and its own documents
    after_delete: Callable[[Platform, dict], Awaitable[None]] | None = None   # after the commit: object storage
    # A FastAPI dependency whose query parameters are the kind's own list filters, returning MongoDB
    # conditions (e.g. compression's ``strategy``).
    list_filters: Callable[..., Awaitable[dict]] = no_filters

    def subject(self, job_id: str) -> str:
        return f"{self.path}/{job_id}"


def _either(statuses) -> str:
    values = [s.value for s in statuses]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _not_allowed(kind: JobResource, job: dict, action: str, allowed: str) -> ApiError:
    return conflict(f"{kind.label} '{job['name']}' is {job['status']}; only {allowed} jobs can be {action}",
                    code="invalid_state")


def announce_notification_rule(uow, job: dict, *, subject: str, removed: bool = False) -> None:
    """Hand the job's "event notification" setting to the notifier (its events carry the same subject)."""
    setting = job.get("notification") or {}
    if not setting.get("enabled"):
        return
    event = (NotificationRuleChanged(subject=subject, removed=True) if removed else
             NotificationRuleChanged(subject=subject, topic_name=setting["topic_name"], events=setting["events"]))
    uow.emit(event, tenant_id=job["tenant_id"], subject=subject)


def job_view(doc: dict) -> dict:
    """A job as the API shows it: the document minus internals (a kind may add to it)."""
    run = doc.get("run") or {}
    view = {k: v for k, v in doc.items() if k not in ("_id", "tenant_id", "run", "log_seq")}
    view["id"] = doc["_id"]
    view["worker_id"] = run.get("worker_id")
    return instants(view)


async def check_output_name(platform: Platform, *, jobs: str, tenant_id: str, name: str) -> None:
    """409 unless ``name`` is free for a job's output model: no model has it and no job of this kind
    that has not failed will produce it."""
    if await model_name_taken(platform, tenant_id=tenant_id, name=name):
        raise conflict(f"output_model_name: a model named '{name}' already exists", field="output_model_name")
    pending = await platform.mongo[jobs].find_one(
        {"tenant_id": tenant_id, "output.model_name": name, "status": {"$ne": "failed"}}, {"name": 1})
    if pending:
        raise conflict(f"output_model_name: job '{pending['name']}' already produces a model named '{name}'",
                       field="output_model_name")


# ---------------------------------------------------------------------------------------------
# Use cases
# ---------------------------------------------------------------------------------------------

async def job_or_404(platform: Platform, kind: JobResource, *, tenant_id: str, job_id: str) -> dict:
    doc = await platform.mongo[kind.jobs].find_one({"_id": job_id, "tenant_id": tenant_id})
    if doc is None:
        raise not_found(kind.label, job_id)
    return doc


async def list_jobs(platform: Platform, kind: JobResource, *, tenant_id: str, name: str | None = None,
                    status: str | None = None, filters: dict | None = None, offset: int = 0,
                    limit: int = 50) -> dict:
    """Newest first; ``name`` matches part of the name, case-insensitively. Items leave out the
    status history (the detail has it)."""
    query: dict = {**(filters or {}), "tenant_id": tenant_id}
    if status:
        if status not in kind.rules.statuses._value2member_map_:
            raise bad_request(f"status: must be one of {', '.join(kind.rules.statuses)}", field="status")
        query["status"] = status
    if name:
        query["name"] = {"$regex": re.escape(name), "$options": "i"}
    jobs = platform.mongo[kind.jobs]
    total = await jobs.count_documents(query)
    cursor = jobs.find(query, {"history": 0}).sort("created_at", DESCENDING).skip(offset).limit(limit)
    return {"total": total, "items": [kind.view({**d, "history": []}) async for d in cursor]}


async def get_job(platform: Platform, kind: JobResource, *, tenant_id: str, job_id: str) -> dict:
    view = kind.view(await job_or_404(platform, kind, tenant_id=tenant_id, job_id=job_id))
    # A waiting job's place in its pool's queue and what it waits for (written by the runners).
    entry = await platform.mongo[ledger.QUEUE].find_one({"_id": f"{kind.jobs}:{job_id}"})
    view["queue"] = instants({"pool": entry["pool"], "position": entry["position"], "reason": entry["reason"],
                              "since": entry["since"]} if entry else None)
    return view


async def stop_job(platform: Platform, kind: JobResource, *, tenant_id: str, job_id: str) -> dict:
    """Stop a job in one of the kind's stoppable statuses. A running worker notices at its next
    heartbeat (the job is no longer ``running``) and ends its run as the kind does."""
    rules = kind.rules
    stoppable = [s.value for s in rules.stoppable]
    job = await job_or_404(platform, kind, tenant_id=tenant_id, job_id=job_id)
    if job["status"] not in stoppable:
        raise _not_allowed(kind, job, "stopped", _either(rules.stoppable))

    async def stop(uow) -> dict | None:
        doc = await kind.transition(uow, job_id, rules.stopped, message="stopped by the user",
                                    where={"tenant_id": tenant_id, "status": {"$in": stoppable}})
        if doc is not None:
            kind.on_stopped(uow, doc)
        return doc
    doc = await transact(platform, stop)
    if doc is None:   # its status changed meanwhile (completed, failed, deleted...)
        raise _not_allowed(kind, await job_or_404(platform, kind, tenant_id=tenant_id, job_id=job_id), "stopped",
                           _either(rules.stoppable))
    return kind.view(doc)


async def continue_job(platform: Platform, kind: JobResource, *, tenant_id: str, job_id: str) -> dict:
    """Queue a stopped job again, once the worker that ran it has let it go (or its lease expired)."""
    rules = kind.rules
    job = await job_or_404(platform, kind, tenant_id=tenant_id, job_id=job_id)
    if job["status"] != rules.stopped:
        raise _not_allowed(kind, job, "continued", rules.stopped.value)
    run = job.get("run") or {}
    if run.get("active") and run.get("lease_until") and run["lease_until"] > now():
        raise conflict(f"{kind.label} '{job['name']}' {rules.still_stopping}; continue it in a moment",
                       code="still_stopping")
    plan = kind.resumption(job)

    async def resume(uow) -> dict | None:
        doc = await kind.transition(uow, job_id, rules.resumed, where={"tenant_id": tenant_id},
                                    message=plan.message, set_=plan.set_)
        if doc is not None:
            kind.on_continued(uow, doc)
        return doc
    doc = await transact(platform, resume)
    if doc is None:
        raise _not_allowed(kind, await job_or_404(platform, kind, tenant_id=tenant_id, job_id=job_id), "continued",
                           rules.stopped.value)
    return kind.view(doc)


async def delete_job(platform: Platform, kind: JobResource, *, tenant_id: str, job_id: str) -> None:
    """Delete a job in any status with its logs; a worker still running it finds the document gone
    at its next heartbeat and stops."""
    job = await job_or_404(platform, kind, tenant_id=tenant_id, job_id=job_id)

    async def delete(uow) -> None:
        deleted = await uow.collection(kind.jobs).delete_one({"_id": job_id, "tenant_id": tenant_id},
                                                             session=uow.session)
        if deleted.deleted_count != 1:
            raise not_found(kind.label, job_id)
        await uow.collection(kind.logs.logs).delete_many({"job_id": job_id, "tenant_id": tenant_id},
                                                         session=uow.session)
        announce_task_record(uow, job, task_kind=kind.task_kind, removed=True)
        announce_notification_rule(uow, job, subject=kind.subject(job_id), removed=True)
        await kind.on_deleted(uow, job)
    await transact(platform, delete)
    if kind.after_delete is not None:
        await kind.after_delete(platform, job)
