"""HTTP routes of model compression (guide chapter 7): jobs, their logs, the duration estimate."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.common.auth import Principal
from services.common.context import Platform, get_platform
from services.common.paging import Offset
from services.compression import service
from services.compression.models import INSTANCE_SPECS, MAX_INSTANCES, EstimateRequest, JobCreate, JobStatus, Strategy
from services.compression.jobs import JOB_LOGS
from services.iam.authorize import Authorized
from services.jobs.api import log_routes

router = APIRouter(prefix="/api/v1", tags=["compression"])
logs_router = log_routes(path="compression-jobs", resource="compressionJobs", tag="compression", logs=JOB_LOGS,
                         find_job=service.job_or_404)


@router.get("/compression-strategies", summary="Compression strategies and instance specs")
async def strategies(_: Principal = Authorized("maas:compressionJobs:listStrategies")):
    return {"strategies": [s.value for s in Strategy],
            "instance_specs": [{"id": k, "name": v[1], "cpus": v[0]} for k, v in INSTANCE_SPECS.items()],
            "resource_pools": ["public", "dedicated"], "max_instance_count": MAX_INSTANCES,
            "alpha": {"min": 0.0, "max": 1.0, "default": 0.5}}


@router.post("/compression-jobs/estimate", summary="Duration estimate before submission (table 7-4)")
async def estimate(body: EstimateRequest, principal: Principal = Authorized("maas:compressionJobs:estimate"),
                   platform: Platform = Depends(get_platform)):
    return await service.estimate_job(platform, tenant_id=principal.tenant_id, request=body)


@router.post("/compression-jobs", status_code=201, summary="Create a compression job")
async def create_job(body: JobCreate, principal: Principal = Authorized("maas:compressionJobs:create"),
                     platform: Platform = Depends(get_platform)):
    return await service.create_job(platform, tenant_id=principal.tenant_id, request=body)


@router.get("/compression-jobs", summary="Compression jobs")
async def list_jobs(principal: Principal = Authorized("maas:compressionJobs:list"), name: str | None = None,
                    status: JobStatus | None = None,
                    strategy: Strategy | None = None, offset: Offset = 0,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50, platform: Platform = Depends(get_platform)):
    return await service.list_jobs(platform, tenant_id=principal.tenant_id, name=name,
                                   status=status.value if status else None,
                                   strategy=strategy.value if strategy else None, offset=offset, limit=limit)


@router.get("/compression-jobs/{job_id}", summary="Compression job detail: settings, progress, metrics")
async def get_job(job_id: str, principal: Principal = Authorized("maas:compressionJobs:get"),
                  platform: Platform = Depends(get_platform)):
    return await service.get_job(platform, tenant_id=principal.tenant_id, job_id=job_id)


@router.delete("/compression-jobs/{job_id}", status_code=204, summary="Delete a compression job")
async def delete_job(job_id: str, principal: Principal = Authorized("maas:compressionJobs:delete"),
                     platform: Platform = Depends(get_platform)):
    await service.delete_job(platform, tenant_id=principal.tenant_id, job_id=job_id)
    return Response(status_code=204)
