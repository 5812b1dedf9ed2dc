"""What every kind of long-running job (tuning, compression) does the same way.

- ``transition``: a status change is one conditional update (the job must be in a status the
  caller's state table allows the target from) plus the source model's task record, in the
  caller's unit of work, so a transition outside the table never happens, whoever tries it.
- ``JobLogs``: numbered log lines in MongoDB (searchable, downloadable) and, when the job asks for
  it, a permanent copy in the user's bucket (guide: 永久保存日志).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo import ASCENDING, ReturnDocument

from contracts.events import TaskRecordChanged
from contracts.timestamps import instants, rfc3339
from services.lib.common.objectstore import ObjectPath


def now() -> datetime:
    return datetime.now(UTC)


def announce_task_record(uow, job: dict, *, task_kind: str, removed: bool = False) -> None:
    """Tell the registry that this job uses the source model version (its "task records")."""
    source = job["source"]
    if source.get("kind") != "model":
        return  # a template's preset weights: no model of the user's to record it on
    uow.emit(TaskRecordChanged(task_id=job["_id"], task_kind=task_kind, task_name=job["name"],
                               model_id=source["model_id"], version_id=source["version_id"],
                               status=job["status"], removed=removed),
             tenant_id=job["tenant_id"], subject=f"models/{source['model_id']}")


async def transition(uow, *, collection: str, task_kind: str | None, job_id: str, target: str,
                     allowed_from: Iterable[str], message: str | None = None,
                     where: dict[str, Any] | None = None, set_: dict[str, Any] | None = None,
                     inc: dict[str, Any] | None = None) -> dict | None:
    """Move a job to ``target`` if its status is one of ``allowed_from``; the updated document, or None.
    ``task_kind`` None: the job is not a task on a source model's record (a weight validation is the
    registry's own)."""
    at = now()
    update: dict[str, Any] = {
        "$set": {"status": target, "status_message": message, "updated_at": at, **(set_ or {})},
        "$push": {"history": {"status": target, "at": at, "message": message}},
    }
    if inc:
        update["$inc"] = inc
    doc = await uow.collection(collection).find_one_and_update(
        {"_id": job_id, "status": {"$in": list(allowed_from)}, **(where or {})}, update,
        return_document=ReturnDocument.AFTER, session=uow.session)
    if doc is not None and task_kind is not None:
        announce_task_record(uow, doc, task_kind=task_kind)
    return doc


class SourceModel(BaseModel):
    """A job's source (request setting): one of my models (model_id + optional version) or a
    model-square template with preset weights."""
    # "Exactly one of model_id and template_id", stated in the schema as well.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["model_id"], "properties": {"model_id": {"type": "string", "minLength": 1}}},
        {"required": ["template_id"], "properties": {"template_id": {"type": "string", "minLength": 1}}}]})

    model_id: str | None = None
    version: int | str | None = Field(None, description="version number, 'V2' or id; default the latest")
    template_id: str | None = None

    @model_validator(mode="after")
    def _one_of(self):
        if bool(self.model_id) == bool(self.template_id):
            raise ValueError("source: give either model_id (my models) or template_id (model square), not both")
        return self


class PermanentLog(BaseModel):
    """永久保存日志 (request setting): off by default; when on, the job's log is also kept in the user's bucket."""
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    path: str | None = Field(None, description="bucket/folder that keeps the job's log")

    @model_validator(mode="after")
    def _path_when_enabled(self):
        if self.enabled and not (self.path or "").strip():
            raise ValueError("permanent_log.path is required when permanent_log.enabled is true")
        return self


class JobLogs:
    """The log lines of one kind of job: ``jobs`` holds the per-job line counter, ``logs`` the lines."""

    def __init__(self, *, jobs: str, logs: str):
        self.jobs, self.logs = jobs, logs

    async def append(self, platform, *, job_id: str, tenant_id: str, lines: list[str], session=None) -> None:
        """Number the lines from the job's counter (several writers never reuse a number) and store them.
        ``session``: a unit of work's, so that lines about a change commit with it (a reader who sees a
        job's end then sees its last lines too)."""
        if not lines:
            return
        doc = await platform.mongo[self.jobs].find_one_and_update(
            {"_id": job_id}, {"$inc": {"log_seq": len(lines)}}, projection={"log_seq": 1},
            return_document=ReturnDocument.AFTER, session=session)
        if doc is None:
            return  # the job was deleted: its logs go with it
        first, at = doc["log_seq"] - len(lines) + 1, now()
        await platform.mongo[self.logs].insert_many(
            [{"job_id": job_id, "tenant_id": tenant_id, "seq": first + i, "at": at, "line": line}
             for i, line in enumerate(lines)], ordered=False, session=session)

    async def page(self, platform, *, tenant_id: str, job_id: str, search: str | None, offset: int,
                   limit: int) -> dict:
        """One page of the job's lines, oldest first; ``search`` matches case-insensitively (in MongoDB:
        a job's log can be long)."""
        query: dict[str, Any] = {"job_id": job_id, "tenant_id": tenant_id}
        if search:
            query["line"] = {"$regex": re.escape(search), "$options": "i"}
        total = await platform.mongo[self.logs].count_documents(query)
        cursor = platform.mongo[self.logs].find(query, {"_id": 0, "seq": 1, "at": 1, "line": 1}) \
            .sort("seq", ASCENDING).skip(offset).limit(limit)
        return {"total": total, "items": [instants(d) async for d in cursor]}

    @staticmethod
    def download_name(job: dict) -> str:
        return f"{job['name']}-{job['_id'][:8]}.log"

    async def render(self, platform, *, job_id: str) -> str:
        cursor = platform.mongo[self.logs].find({"job_id": job_id}, {"line": 1, "at": 1}).sort("seq", ASCENDING)
        return "".join([f"{rfc3339(d['at'])} {d['line']}\n" async for d in cursor])

    @staticmethod
    def permanent_path(job: dict) -> ObjectPath:
        root = ObjectPath.parse(job["permanent_log"]["path"]).as_prefix()
        return ObjectPath(root.bucket, f"{root.key}{job['_id']}/{job['name']}.log")

    async def upload_permanent(self, platform, *, job: dict) -> ObjectPath:
        path = self.permanent_path(job)
        text = await self.render(platform, job_id=job["_id"])
        await platform.store.put_bytes(path, text.encode(), content_type="text/plain; charset=utf-8")
        return path
