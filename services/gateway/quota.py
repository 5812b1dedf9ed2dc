"""Free quota of the preset services (guide 9): 1,000,000 tokens per preset service per user.

Claimed once ("领取"); a call is refused with 403 before the quota is claimed. Every call reserves
the most it can use before it is sent and settles with its true usage after (quota_calls.py,
quota_ledger.py, quota_store.py), so concurrent calls, on one gateway or several, never use more
than was granted: a call whose bound does not fit is refused with 429.
"""
from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.common.auth import Principal
from services.common.context import Platform, get_component, get_platform
from services.common.errors import ApiError, not_found
from services.common.mongo import IndexSpec
from services.readmodels.serving_refs import PRESET_TENANT, SERVICES, find_service_by_name, get_service
from services.gateway.quota_ledger import QuotaLedger
from services.gateway.quota_store import QUOTAS, quota_id
from services.gateway.settings import gateway_settings
from services.iam.authorize import Authorized

INDEXES: list[IndexSpec] = [(QUOTAS, [("user_id", ASCENDING)], {})]


async def claim(platform: Platform, *, user_id: str, tenant_id: str, service_id: str) -> dict:
    service = await get_service(platform, service_id) or await find_service_by_name(
        platform, tenant_id=PRESET_TENANT, name=service_id)   # by id or by name
    if service is None or not service.preset:
        raise not_found("preset service", service_id)
    service_id = service.id
    granted = gateway_settings().free_quota_tokens
    doc = {"_id": quota_id(user_id, service_id), "user_id": user_id, "tenant_id": tenant_id,
           "service_id": service_id, "granted": granted, "used": 0, "reserved": 0, "leases": {},
           "claimed_at": datetime.now(UTC)}
    try:
        async with platform.uow() as uow:   # with the request's audit record
            await uow.collection(QUOTAS).insert_one(doc, session=uow.session)
    except DuplicateKeyError:
        raise ApiError(409, "quota_already_claimed",
                       f"the free quota of '{service.name}' has already been claimed") from None
    return _quota_view(doc, None)


def _quota_view(doc: dict | None, ledger: QuotaLedger | None) -> dict:
    if doc is None:
        return {"claimed": False, "granted": gateway_settings().free_quota_tokens, "used": 0, "reserved": 0,
                "remaining": 0}
    if ledger is None:
        used, reserved = int(doc.get("used", 0)), int(doc.get("reserved", 0))
    else:
        balance = ledger.balance(doc["_id"], doc)
        used, reserved = balance.used, balance.reserved
    granted = int(doc["granted"])
    # remaining: not used yet; part of it may be held for calls in progress (reserved) for a moment.
    return {"claimed": True, "granted": granted, "used": used, "reserved": reserved,
            "remaining": max(0, granted - used), "claimed_at": doc.get("claimed_at")}


# ------------------------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/v1/preset-services", tags=["preset services"])


async def _ledger(gateway=Depends(get_component("gateway"))) -> QuotaLedger:
    """The quota ledger of this process's chat gateway: balances include tokens it holds for calls."""
    return gateway.ledger


@router.get("", summary="Preset services with my free quota")
async def list_presets(principal: Principal = Authorized("maas:presetServices:list"),
                       platform: Platform = Depends(get_platform), ledger: QuotaLedger = Depends(_ledger)):
    quotas = {d["service_id"]: d async for d in platform.mongo[QUOTAS].find({"user_id": principal.user_id})}
    items = []
    async for doc in platform.mongo[SERVICES].find({"tenant_id": PRESET_TENANT}).sort("name", ASCENDING):
        model = doc.get("model") or {}
        items.append({
            "id": doc["_id"], "name": doc["name"], "model_name": model.get("model_name"),
            "template_id": model.get("template_id"), "status": doc["status"],
            "available": True,  # a stopped preset starts on its first call
            "max_model_len": doc["max_model_len"], "content_moderation": True,
            "api_base": f"/v1/infers/{doc['_id']}/v1", "call_model": doc["name"],
            "quota": _quota_view(quotas.get(doc["_id"]), ledger),
        })
    return {"items": items}


@router.post("/{service_id}/claim", status_code=201, summary="Claim the free quota (once per user; by id or name)")
async def claim_quota(service_id: str, principal: Principal = Authorized("maas:presetServices:claim"),
                      platform: Platform = Depends(get_platform)):
    return await claim(platform, user_id=principal.user_id, tenant_id=principal.tenant_id, service_id=service_id)
