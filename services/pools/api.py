"""``/api/v1/pools``: the resource pools an account may use, with capacity, allocations and queue;
creating, changing and deleting dedicated pools needs ``maas:pools:create|update|delete`` (the
guide: FullAccess, not CommonOperations)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from services.common.auth import Principal
from services.common.context import Platform, get_platform
from services.iam.authorize import Authorized
from services.pools import service as uc
from services.pools.models import PoolCreate, PoolDetail, PoolUpdate, PoolView

router = APIRouter(prefix="/api/v1/pools", tags=["resource pools"])


@router.get("", response_model=dict[str, list[PoolView]], summary="The public pool and my account's dedicated pools")
async def list_pools(principal: Principal = Authorized("maas:pools:list"), platform: Platform = Depends(get_platform)):
    return {"items": await uc.list_pools(platform, tenant_id=principal.tenant_id)}


@router.get("/{name}", response_model=PoolDetail, summary="A pool: nodes, capacity, my allocations and my queue")
async def get_pool(name: str, principal: Principal = Authorized("maas:pools:get"),
                   platform: Platform = Depends(get_platform)):
    return await uc.get_pool(platform, tenant_id=principal.tenant_id, name=name)


@router.post("", status_code=201, response_model=PoolDetail, summary="Create a dedicated pool of my account")
async def create_pool(request: PoolCreate, principal: Principal = Authorized("maas:pools:create"),
                      platform: Platform = Depends(get_platform)):
    return await uc.create_pool(platform, tenant_id=principal.tenant_id, user_id=principal.user_id, request=request)


@router.patch("/{name}", response_model=PoolDetail, summary="Change a dedicated pool's description")
async def update_pool(name: str, request: PoolUpdate, principal: Principal = Authorized("maas:pools:update"),
                      platform: Platform = Depends(get_platform)):
    return await uc.update_pool(platform, tenant_id=principal.tenant_id, name=name, request=request)


@router.delete("/{name}", status_code=204, summary="Delete a dedicated pool nothing runs or waits on")
async def delete_pool(name: str, principal: Principal = Authorized("maas:pools:delete"),
                      platform: Platform = Depends(get_platform)):
    await uc.delete_pool(platform, tenant_id=principal.tenant_id, name=name)
    return Response(status_code=204)
