"""HTTP routes of model tuning (模型调优): jobs, estimate, stop/continue, logs, checkpoints."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.common.auth import Principal
from services.common.context import Platform, get_platform
from services.common.paging import Offset
from services.iam.authorize import Authorized
from services.jobs.api import log_routes
from services.tuning import service
from services.tuning.jobs import JOB_LOGS
from services.tuning.models import ConversionCreate, EstimateRequest, JobCreate, JobStatus

router = APIRouter(prefix="/api/v1", tags=["tuning"])
logs_router = log_routes(path="tuning-jobs", resource="tuningJobs", tag="tuning", logs=JOB_LOGS,
                         find_job=service.job_or_404)


@router.post("/tuning-jobs/estimate", summary="Iterations and duration estimate (tables 6-5, 6-6) before submitting")
async def estimate(body: EstimateRequest, principal: Principal = Authorized("maas:tuningJobs:estimate"),
                   platform: Platform = Depends(get_platform)):
    return await service.estimate_job(platform, tenant_id=principal.tenant_id, request=body)


@router.post("/tuning-jobs", status_code=201, summary="Create a tuning job (validates the dataset first)")
async def create_job(body: JobCreate, principal: Principal = Authorized("maas:tuningJobs:create"),
                     platform: Platform = Depends(get_platform)):
    return await service.create_job(platform, tenant_id=principal.tenant_id, request=body)


@router.get("/tuning-jobs", summary="Tuning jobs")
async def list_jobs(principal: Principal = Authorized("maas:tuningJobs:list"), name: str | None = None,
                    status: JobStatus | None = None,
                    offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    platform: Platform = Depends(get_platform)):
    return await service.list_jobs(platform, tenant_id=principal.tenant_id, name=name,
                                   status=status.value if status else None, offset=offset, limit=limit)


@router.get("/tuning-jobs/{job_id}", summary="Job detail: settings, status history, progress, checkpoints")
async def get_job(job_id: str, principal: Principal = Authorized("maas:tuningJobs:get"),
                  platform: Platform = Depends(get_platform)):
    return await service.get_job(platform, tenant_id=principal.tenant_id, job_id=job_id)


@router.delete("/tuning-jobs/{job_id}", status_code=204, summary="Delete a job (cannot be undone)")
async def delete_job(job_id: str, principal: Principal = Authorized("maas:tuningJobs:delete"),
                     platform: Platform = Depends(get_platform)):
    await service.delete_job(platform, tenant_id=principal.tenant_id, job_id=job_id)
    return Response(status_code=204)


@router.post("/tuning-jobs/{job_id}/stop", summary="Stop a creating, waiting or running job (checkpoints are kept)")
async def stop_job(job_id: str, principal: Principal = Authorized("maas:tuningJobs:stop"),
                   platform: Platform = Depends(get_platform)):
    return await service.stop_job(platform, tenant_id=principal.tenant_id, job_id=job_id)


@router.post("/tuning-jobs/{job_id}/continue", summary="Continue a stopped job from its latest checkpoint")
async def continue_job(job_id: str, principal: Principal = Authorized("maas:tuningJobs:continue"),
                       platform: Platform = Depends(get_platform)):
    return await service.continue_job(platform, tenant_id=principal.tenant_id, job_id=job_id)


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
