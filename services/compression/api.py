"""HTTP routes of model compression (guide chapter 7): strategies, the duration estimate, create.

List, detail, delete, stop, continue and logs are the job engine's routes (services.lib.jobs.api),
the same for every kind of job.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.compression import service
from services.compression.jobs import RESOURCE
from services.compression.models import INSTANCE_SPECS, MAX_INSTANCES, EstimateRequest, JobCreate, Strategy
from services.lib.iam.authorize import Authorized
from services.lib.jobs.api import job_routes

router = APIRouter(prefix="/api/v1", tags=["compression"])
# The job engine's routes for compression jobs (the service spec mounts them under this name).
jobs_router = job_routes(RESOURCE)   # list, detail, delete, stop, continue, logs: the engine's


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
