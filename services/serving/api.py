"""HTTP routes of model services (guide chapters 8 and 13) under /api/v1/services."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.paging import Offset
from services.lib.iam.authorize import Authorized
from services.serving import service
from services.serving.models import (INSTANCE_SPECS, MAX_QPS, RESOURCE_POOLS, ModerationRequest, QpsRequest,
                                     ScaleRequest, ServiceCreate, ServiceView, UpgradeRequest)

router = APIRouter(prefix="/api/v1/services", tags=["services"])


@router.get("/instance-specs", summary="Instance specs and resource pool types to deploy on")
async def instance_specs(_: Principal = Authorized("maas:services:listInstanceSpecs")):
    return {"items": [s.model_dump() for s in INSTANCE_SPECS.values()], "resource_pools": list(RESOURCE_POOLS)}


@router.get("/recommendation", summary="Recommended instance count = QPS ÷ the template's single-instance QPS",
            responses={404: {"description": "The model or template does not exist"}})
async def recommendation(qps: Annotated[int, Query(ge=1, le=MAX_QPS)],
                         principal: Principal = Authorized("maas:services:getRecommendation"),
                         model_id: str | None = None, template_id: str | None = None,
                         platform: Platform = Depends(get_platform)):
    return await service.recommend(platform, tenant_id=principal.tenant_id, qps=qps, model_id=model_id,
                                   template_id=template_id)


@router.post("", status_code=201, response_model=ServiceView, summary="Deploy a model version as a service")
async def deploy(body: ServiceCreate, principal: Principal = Authorized("maas:services:create"),
                 platform: Platform = Depends(get_platform)):
    return await service.deploy(platform, tenant_id=principal.tenant_id, request=body)


@router.get("", summary="My services")
async def list_services(principal: Principal = Authorized("maas:services:list"), name: str | None = None,
                        status: str | None = None,
                        offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                        platform: Platform = Depends(get_platform)):
    return await service.list_services(platform, tenant_id=principal.tenant_id, name=name, status=status,
                                       offset=offset, limit=limit)


@router.get("/{service_id}", response_model=ServiceView, summary="Service details with its instances")
async def get_service(service_id: str, principal: Principal = Authorized("maas:services:get"),
                      platform: Platform = Depends(get_platform)):
    return await service.get_service(platform, tenant_id=principal.tenant_id, service_id=service_id)


@router.post("/{service_id}/stop", response_model=ServiceView, summary="Stop: drain and stop every instance")
async def stop(service_id: str, principal: Principal = Authorized("maas:services:stop"),
               platform: Platform = Depends(get_platform)):
    return await service.stop(platform, tenant_id=principal.tenant_id, service_id=service_id)


@router.post("/{service_id}/start", response_model=ServiceView, summary="Start a stopped or failed service")
async def start(service_id: str, principal: Principal = Authorized("maas:services:start"),
                platform: Platform = Depends(get_platform)):
    return await service.start(platform, tenant_id=principal.tenant_id, service_id=service_id)


@router.delete("/{service_id}", status_code=204, summary="Delete a service (its instances are stopped)")
async def delete(service_id: str, principal: Principal = Authorized("maas:services:delete"),
                 platform: Platform = Depends(get_platform)):
    await service.delete(platform, tenant_id=principal.tenant_id, service_id=service_id)
    return Response(status_code=204)


@router.put("/{service_id}/instance-count", response_model=ServiceView,
            summary="Scale the instance count of a running service (no request is dropped)")
async def scale(service_id: str, body: ScaleRequest, principal: Principal = Authorized("maas:services:scale"),
                platform: Platform = Depends(get_platform)):
    return await service.scale(platform, tenant_id=principal.tenant_id, service_id=service_id,
                               instance_count=body.instance_count)


@router.put("/{service_id}/qps", response_model=ServiceView, summary="Change the QPS limit")
async def set_qps(service_id: str, body: QpsRequest, principal: Principal = Authorized("maas:services:updateQps"),
                  platform: Platform = Depends(get_platform)):
    return await service.set_qps(platform, tenant_id=principal.tenant_id, service_id=service_id,
                                 qps_limit=body.qps_limit)


@router.post("/{service_id}/upgrade", response_model=ServiceView,
             summary="Upgrade to another version of the same model (rolling)")
async def upgrade(service_id: str, body: UpgradeRequest, principal: Principal = Authorized("maas:services:upgrade"),
                  platform: Platform = Depends(get_platform)):
    return await service.upgrade(platform, tenant_id=principal.tenant_id, service_id=service_id,
                                 version=body.version)


@router.put("/{service_id}/moderation", response_model=ServiceView,
            summary="Turn content moderation on or off (off needs confirm_moderation_off)")
async def set_moderation(service_id: str, body: ModerationRequest,
                         principal: Principal = Authorized("maas:services:updateModeration"),
                         platform: Platform = Depends(get_platform)):
    return await service.set_moderation(platform, tenant_id=principal.tenant_id, service_id=service_id,
                                        request=body)


@router.get("/{service_id}/events", summary="Service events (kept 30 days)")
async def events(service_id: str, principal: Principal = Authorized("maas:services:listEvents"), offset: Offset = 0,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100, platform: Platform = Depends(get_platform)):
    return await service.list_events(platform, tenant_id=principal.tenant_id, service_id=service_id,
                                     offset=offset, limit=limit)


@router.get("/{service_id}/logs", summary="Instance logs (stdout/stderr), newest last, with search")
async def logs(service_id: str, principal: Principal = Authorized("maas:services:getLogs"), search: str | None = None,
               instance_id: str | None = None, limit: Annotated[int, Query(ge=1, le=5000)] = 200,
               platform: Platform = Depends(get_platform)):
    return await service.search_logs(platform, tenant_id=principal.tenant_id, service_id=service_id,
                                     search=search, instance_id=instance_id, limit=limit)
