"""``/api/v1/pools``: the resource pools an account may use, with capacity, allocations and queue;
creating, changing and deleting dedicated pools needs ``maas:pools:create|update|delete`` (the
guide: FullAccess, not CommonOperations)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.iam.authorize import Authorized
from services.lib.common.errors import ApiError
from services.lib.pools import service as uc
from services.lib.pools import usage
from services.lib.pools.models import PoolCreate, PoolDetail, PoolUpdate, PoolView

router = APIRouter(prefix="/api/v1/pools", tags=["resource pools"])
usage_router = APIRouter(prefix="/api/v1", tags=["resource pools"])


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


@router.patch("/{name}", response_model=PoolDetail,
              summary="Change a dedicated pool's description, or resize it (node_count, node_resources)",
              description="Resizing needs a platform that starts nodes (MAAS_POOL_PROVISIONER local or kuberay; "
                          "409 otherwise), and never below what is allocated in the pool now (409 with the "
                          "numbers). The pool's status is 'scaling' until its nodes match.")
async def update_pool(name: str, request: PoolUpdate, principal: Principal = Authorized("maas:pools:update"),
                      platform: Platform = Depends(get_platform)):
    return await uc.update_pool(platform, tenant_id=principal.tenant_id, name=name, request=request)


@router.delete("/{name}", status_code=204, summary="Delete a dedicated pool nothing runs or waits on",
               description="A pool whose nodes the platform started has them removed first; its name stays "
                           "taken until they are gone.")
async def delete_pool(name: str, principal: Principal = Authorized("maas:pools:delete"),
                      platform: Platform = Depends(get_platform)):
    await uc.delete_pool(platform, tenant_id=principal.tenant_id, name=name)
    return Response(status_code=204)


@usage_router.get("/usage/compute", summary="My account's compute usage: hours per pool, kind of work or day")
async def compute_usage(principal: Principal = Authorized("maas:usage:listCompute"),
                        group_by: Annotated[str, Query(pattern="^(pool|kind|day)$")] = "pool",
                        days: Annotated[int, Query(ge=1, le=366)] = 30, platform: Platform = Depends(get_platform)):
    rows = await usage.summary(platform, tenant_id=principal.tenant_id, group_by=group_by, days=days)
    return {"group_by": group_by, "days": days, "items": rows}


@usage_router.get("/packages", summary="My account's compute packages (public pool hours paid in advance)")
async def list_packages(principal: Principal = Authorized("maas:packages:list"),
                        platform: Platform = Depends(get_platform)):
    return {"items": await usage.packages_of(platform, tenant_id=principal.tenant_id)}


@usage_router.post("/packages", status_code=201, summary="Grant an account a compute package (platform admin)")
async def grant_package(request: usage.PackageGrant, principal: Principal = Authorized("maas:packages:create"),
                        platform: Platform = Depends(get_platform)):
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "only the platform administrator grants compute packages")
    if not await uc.account_exists(platform, request.account_id):
        raise ApiError(404, "not_found", f"account_id: no account '{request.account_id}'", field="account_id")
    return await usage.grant(platform, request=request, granted_by=principal.user_id)
