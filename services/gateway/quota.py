"""Free quota of the preset services (guide 9): 1,000,000 tokens per preset service per user.

Claimed once ("领取"); every answered call's tokens are taken from it (metering.py). A call is
refused with 403 before the quota is claimed and with 429 once it is used up.
"""
from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.common.auth import CurrentPrincipal
from services.common.context import Platform, get_platform
from services.common.errors import ApiError, not_found
from services.common.mongo import IndexSpec
from services.common.serving_refs import PRESET_TENANT, SERVICES, find_service_by_name, get_service
from services.gateway.metering import QUOTAS, quota_id
from services.gateway.oai_errors import OpenAIError
from services.gateway.settings import gateway_settings
from services.gateway.views import ReadThroughView

INDEXES: list[IndexSpec] = [(QUOTAS, [("user_id", ASCENDING)], {})]


async def claim(platform: Platform, *, user_id: str, tenant_id: str, service_id: str) -> dict:
    service = await get_service(platform, service_id) or await find_service_by_name(
        platform, tenant_id=PRESET_TENANT, name=service_id)   # by id or by name
    if service is None or not service.preset:
        raise not_found("preset service", service_id)
    service_id = service.id
    granted = gateway_settings().free_quota_tokens
    doc = {"_id": quota_id(user_id, service_id), "user_id": user_id, "tenant_id": tenant_id,
           "service_id": service_id, "granted": granted, "used": 0, "claimed_at": datetime.now(UTC)}
    try:
        await platform.mongo[QUOTAS].insert_one(doc)
    except DuplicateKeyError:
        raise ApiError(409, "quota_already_claimed",
                       f"the free quota of '{service.name}' has already been claimed") from None
    return _quota_view(doc)


def _quota_view(doc: dict | None, pending: int = 0) -> dict:
    if doc is None:
        return {"claimed": False, "granted": gateway_settings().free_quota_tokens, "used": 0,
                "remaining": 0}
    used = int(doc.get("used", 0)) + pending
    return {"claimed": True, "granted": int(doc["granted"]), "used": used,
            "remaining": max(0, int(doc["granted"]) - used), "claimed_at": doc.get("claimed_at")}


class QuotaView:
    """Claimed quotas as this gateway process sees them, without a database read per call.

    A quota document is at most ``max_age`` seconds old when a call uses it (views.py keeps it fresh
    in the background), and re-read after this process writes usage to it (``written``), so what this
    process metered is never missed: the unwritten rest is the meter's ``pending``. Usage written by
    other gateway processes shows within ``max_age`` plus their flush period. An unclaimed quota is
    never remembered, so a claim takes effect at once.
    """

    def __init__(self, platform: Platform, *, max_age: float = 1.0):
        self.platform = platform
        self.view = ReadThroughView(max_age=max_age, remember_missing=False)

    async def get(self, user_id: str, service_id: str) -> dict | None:
        key = quota_id(user_id, service_id)
        return await self.view.get(key, lambda: self.platform.mongo[QUOTAS].find_one({"_id": key}))

    def written(self, keys) -> None:
        for key in keys:
            self.view.forget(key)


async def check(quotas: QuotaView, *, user_id: str, service, pending: int) -> None:
    """Raise unless the caller has free quota left on this preset service."""
    doc = await quotas.get(user_id, service.id)
    if doc is None:
        raise OpenAIError(403, f"Claim the free quota of the preset service '{service.name}' first "
                          f"(POST /api/v1/preset-services/{service.id}/claim).", code="quota_not_claimed")
    if int(doc.get("used", 0)) + pending >= int(doc["granted"]):
        raise OpenAIError(429, f"The free quota of '{service.name}' ({int(doc['granted'])} tokens) is used up. "
                          "Deploy the model as your own service to keep using it.",
                          code="insufficient_quota", type="insufficient_quota")


# ------------------------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/v1/preset-services", tags=["preset services"])


@router.get("", summary="Preset services with my free quota")
async def list_presets(principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    from services.gateway.chat import gateway_for

    meter = gateway_for(platform).meter
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
            "quota": _quota_view(quotas.get(doc["_id"]), meter.pending_quota(principal.user_id, doc["_id"])),
        })
    return {"items": items}


@router.post("/{service_id}/claim", status_code=201, summary="Claim the free quota (once per user; by id or name)")
async def claim_quota(service_id: str, principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    return await claim(platform, user_id=principal.user_id, tenant_id=principal.tenant_id, service_id=service_id)
