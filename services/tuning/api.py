"""HTTP routes of model tuning (模型调优): estimate, create, checkpoints and their conversions.

List, detail, delete, stop, continue and logs are the job engine's routes (services.lib.jobs.api),
the same for every kind of job.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.iam.authorize import Authorized
from services.lib.jobs.api import job_routes
from services.tuning import service
from services.tuning.jobs import RESOURCE
from services.tuning.models import ConversionCreate, EstimateRequest, JobCreate

router = APIRouter(prefix="/api/v1", tags=["tuning"])
# The job engine's routes for tuning jobs (the service spec mounts them under this name).
jobs_router = job_routes(RESOURCE)   # list, detail, delete, stop, continue, logs: the engine's


@router.post("/tuning-jobs/estimate", summary="Iterations and duration estimate (tables 6-5, 6-6) before submitting")
async def estimate(body: EstimateRequest, principal: Principal = Authorized("maas:tuningJobs:estimate"),
                   platform: Platform = Depends(get_platform)):
    return await service.estimate_job(platform, tenant_id=principal.tenant_id, request=body)


@router.post("/tuning-jobs", status_code=201, summary="Create a tuning job (validates the dataset first)")
async def create_job(body: JobCreate, principal: Principal = Authorized("maas:tuningJobs:create"),
                     platform: Platform = Depends(get_platform)):
    return await service.create_job(platform, tenant_id=principal.tenant_id, request=body)


@router.get("/tuning-jobs/{job_id}/checkpoints", summary="Checkpoints with their format and path")
async def list_checkpoints(job_id: str, principal: Principal = Authorized("maas:tuningJobs:listCheckpoints"),
                           platform: Platform = Depends(get_platform)):
    return await service.list_checkpoints(platform, tenant_id=principal.tenant_id, job_id=job_id)


@router.post("/tuning-jobs/{job_id}/checkpoints/{iteration}/models", status_code=202,
             summary="Turn a checkpoint into a new model or a new version of the tuned model")
async def convert_checkpoint(job_id: str, iteration: int, body: ConversionCreate,
                             principal: Principal = Authorized("maas:tuningJobs:convertCheckpoint"),
                             platform: Platform = Depends(get_platform)):
    return await service.convert_checkpoint(platform, tenant_id=principal.tenant_id, job_id=job_id,
                                            iteration=iteration, request=body)


@router.get("/tuning-jobs/{job_id}/conversions", summary="Checkpoint conversions of a job and their state")
async def list_conversions(job_id: str, principal: Principal = Authorized("maas:tuningJobs:listConversions"),
                           platform: Platform = Depends(get_platform)):
    return await service.list_conversions(platform, tenant_id=principal.tenant_id, job_id=job_id)
