"""The routes every kind of job has, written once: search a job's log lines and download its log.

A kind mounts them with its collection path, its IAM resource name and how it finds a caller's job
(404 when the job is not in the caller's account).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response

from services.common.auth import Principal
from services.common.context import Platform, get_platform
from services.common.jobs import JobLogs
from services.common.paging import Offset
from services.iam.authorize import Authorized

FindJob = Callable[..., Awaitable[dict]]   # (platform, *, tenant_id, job_id) -> the job, or ApiError 404


def log_routes(*, path: str, resource: str, tag: str, logs: JobLogs, find_job: FindJob) -> APIRouter:
    """``GET /api/v1/{path}/{job_id}/logs`` and ``.../logs/download``, authorised as
    ``maas:{resource}:getLogs``."""
    router = APIRouter(prefix=f"/api/v1/{path}", tags=[tag])

    @router.get("/{job_id}/logs", summary="Search the job's log lines (e.g. search='lm loss' or 'ERROR')")
    async def job_logs(job_id: str, principal: Principal = Authorized(f"maas:{resource}:getLogs"),
                       search: str | None = None, offset: Offset = 0,
                       limit: Annotated[int, Query(ge=1, le=5000)] = 200, platform: Platform = Depends(get_platform)):
        await find_job(platform, tenant_id=principal.tenant_id, job_id=job_id)
        return await logs.page(platform, tenant_id=principal.tenant_id, job_id=job_id, search=search,
                               offset=offset, limit=limit)

    @router.get("/{job_id}/logs/download", summary="Download the whole log as text")
    async def download_logs(job_id: str, principal: Principal = Authorized(f"maas:{resource}:getLogs"),
                            platform: Platform = Depends(get_platform)):
        job = await find_job(platform, tenant_id=principal.tenant_id, job_id=job_id)
        text = await logs.render(platform, job_id=job_id)
        return Response(text, media_type="text/plain; charset=utf-8", headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(logs.download_name(job))}"})

    return router
