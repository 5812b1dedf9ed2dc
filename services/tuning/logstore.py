"""Job logs: lines in MongoDB (searchable, downloadable) and, when asked, a permanent copy in the
user's bucket (guide: 永久保存日志)."""
from __future__ import annotations

from pymongo import ASCENDING, ReturnDocument

from services.common.objectstore import ObjectPath
from services.tuning.jobs import now
from services.tuning.models import JOBS, LOGS


async def append_lines(platform, *, job_id: str, tenant_id: str, lines: list[str]) -> None:
    """Number the lines from the job's counter (so several writers never reuse a number) and store them."""
    doc = await platform.mongo[JOBS].find_one_and_update(
        {"_id": job_id}, {"$inc": {"log_seq": len(lines)}}, projection={"log_seq": 1},
        return_document=ReturnDocument.AFTER)
    if doc is None:
        return  # the job was deleted: its logs go with it
    first, at = doc["log_seq"] - len(lines) + 1, now()
    await platform.mongo[LOGS].insert_many(
        [{"job_id": job_id, "tenant_id": tenant_id, "seq": first + i, "at": at, "line": line}
         for i, line in enumerate(lines)], ordered=False)


async def render(platform, *, job_id: str) -> str:
    cursor = platform.mongo[LOGS].find({"job_id": job_id}, {"line": 1, "at": 1}).sort("seq", ASCENDING)
    return "".join([f"{d['at'].isoformat()} {d['line']}\n" async for d in cursor])


def permanent_log_path(job: dict) -> ObjectPath:
    root = ObjectPath.parse(job["permanent_log"]["path"]).as_prefix()
    return ObjectPath(root.bucket, f"{root.key}{job['_id']}/{job['name']}.log")


async def upload_permanent_log(platform, *, job: dict) -> ObjectPath:
    path = permanent_log_path(job)
    text = await render(platform, job_id=job["_id"])
    await platform.store.put_bytes(path, text.encode(), content_type="text/plain; charset=utf-8")
    return path
