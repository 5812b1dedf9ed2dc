"""HTTP routes of API keys: create, list (with each key's usage), change and delete my keys."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.gateway.keys.models import KeyCreate, KeyUpdate
from services.gateway.keys.service import create_key, delete_key, list_keys, update_key
from services.gateway.quotas.metering import usage_by_key
from services.gateway.settings import gateway_settings
from services.lib.iam.authorize import Authorized

router = APIRouter(prefix="/api/v1/api-keys", tags=["api keys"])


@router.post("", status_code=201, summary="Create an API key (the secret is shown only in this answer)")
async def create(body: KeyCreate, principal: Principal = Authorized("maas:apiKeys:create"),
                 platform: Platform = Depends(get_platform)):
    return await create_key(platform, principal=principal, description=body.description, limits=body)


@router.get("", summary="My API keys (masked) with their usage")
async def list_(principal: Principal = Authorized("maas:apiKeys:list"),
                platform: Platform = Depends(get_platform)):
    keys = await list_keys(platform, principal=principal)
    usage = await usage_by_key(platform, user_id=principal.user_id)
    empty = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {"items": [{**k, "usage": usage.get(k["id"], empty)} for k in keys],
            "max_keys": gateway_settings().max_api_keys}


@router.patch("/{key_id}", summary="Change an API key's expiry, allowed services, limits or description")
async def update(key_id: str, body: KeyUpdate, principal: Principal = Authorized("maas:apiKeys:update"),
                 platform: Platform = Depends(get_platform)):
    return await update_key(platform, principal=principal, key_id=key_id, changes=body)


@router.delete("/{key_id}", status_code=204, summary="Delete an API key (it stops working at once)")
async def delete(key_id: str, principal: Principal = Authorized("maas:apiKeys:delete"),
                 platform: Platform = Depends(get_platform)):
    await delete_key(platform, principal=principal, key_id=key_id)
    return Response(status_code=204)
