"""The routes every kind of job has, written once: list, detail, delete, stop, continue, and search
or download a job's log.

``job_routes(kind)`` mounts them for a kind's ``JobResource`` under ``/api/v1/{kind.path}``, each
authorised as ``maas:{kind.resource}:<verb>``; a job of another account is a 404. Kind-specific
routes (create, estimate, checkpoints...) stay in the kind's own api module.

(No ``from __future__ import annotations`` here: the routes' parameter types come from the kind, and
FastAPI must see them as objects, not as names to look up in this module.)
"""
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.jobs import JobLogs
from services.lib.common.paging import Offset
from services.lib.iam.authorize import Authorized
from services.lib.jobs import resources as uc
from services.lib.jobs.resources import JobResource

FindJob = Callable[..., Awaitable[dict]]   # (platform, *, tenant_id, job_id) -> the job, or ApiError 404


def job_routes(kind: JobResource) -> APIRouter:
    """GET list and detail, DELETE, POST stop and continue, and the log routes of one kind."""
    router = APIRouter(prefix=f"/api/v1/{kind.path}", tags=[kind.tag])
    label, Status = kind.label, kind.rules.statuses

    def action(verb: str):
        return Authorized(f"maas:{kind.resource}:{verb}")

    @router.get("", summary=f"List {label}s: newest first, by part of the name and by status")
    async def list_jobs(principal: Principal = action("list"), name: str | None = None,
                        status: Status | None = None, filters: dict = Depends(kind.list_filters),
                        offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                        platform: Platform = Depends(get_platform)):
        return await uc.list_jobs(platform, kind, tenant_id=principal.tenant_id, name=name,
                                  status=status.value if status else None, filters=filters, offset=offset,
                                  limit=limit)

    @router.get("/{job_id}", summary=f"A {label}: settings, status history, progress")
    async def get_job(job_id: str, principal: Principal = action("get"), platform: Platform = Depends(get_platform)):
        return await uc.get_job(platform, kind, tenant_id=principal.tenant_id, job_id=job_id)

    @router.delete("/{job_id}", status_code=204, summary=f"Delete a {label} and its logs (cannot be undone)")
    async def delete_job(job_id: str, principal: Principal = action("delete"),
                         platform: Platform = Depends(get_platform)):
        await uc.delete_job(platform, kind, tenant_id=principal.tenant_id, job_id=job_id)
        return Response(status_code=204)

    stoppable = ", ".join(s.value for s in kind.rules.stoppable)

    @router.post("/{job_id}/stop", summary=f"Stop a {label} ({stoppable})")
    async def stop_job(job_id: str, principal: Principal = action("stop"), platform: Platform = Depends(get_platform)):
        return await uc.stop_job(platform, kind, tenant_id=principal.tenant_id, job_id=job_id)

    @router.post("/{job_id}/continue", summary=f"Continue a stopped {label}")
    async def continue_job(job_id: str, principal: Principal = action("continue"),
                           platform: Platform = Depends(get_platform)):
        return await uc.continue_job(platform, kind, tenant_id=principal.tenant_id, job_id=job_id)

    routes = APIRouter()
    routes.include_router(router)
    routes.include_router(log_routes(path=kind.path, resource=kind.resource, tag=kind.tag, logs=kind.logs,
                                     find_job=partial(uc.job_or_404, kind=kind)))
    return routes


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
