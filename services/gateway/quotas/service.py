"""Free quota of the preset services (guide 9): 1,000,000 tokens per preset service per user.

Claimed once ("领取"); a call is refused with 403 before the quota is claimed. Every call reserves
the most it can use before it is sent and settles with its true usage after (calls.py,
ledger.py, store.py), so concurrent calls, on one gateway or several, never use more
than was granted: a call whose bound does not fit is refused with 429.
"""
from __future__ import annotations

from datetime import UTC, datetime

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from contracts.timestamps import instants
from services.lib.common.context import Platform
from services.lib.common.errors import ApiError, not_found
from services.lib.common.mongo import IndexSpec
from services.lib.readmodels.serving_refs import PRESET_TENANT, find_service_by_name, get_service
from services.gateway.quotas.ledger import QuotaLedger
from services.gateway.quotas.presets import pending_message, pending_preset
from services.gateway.quotas.store import QUOTAS, quota_id
from services.gateway.settings import gateway_settings

INDEXES: list[IndexSpec] = [(QUOTAS, [("user_id", ASCENDING)], {})]


async def claim(platform: Platform, *, user_id: str, tenant_id: str, service_id: str) -> dict:
    service = await get_service(platform, service_id) or await find_service_by_name(
        platform, tenant_id=PRESET_TENANT, name=service_id)   # by id or by name
    if service is None and (pending := await pending_preset(platform, service_id)) is not None:
        raise ApiError(409, "preset_not_ready", pending_message(pending[0].id, pending[1]), field="service_id")
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
    return quota_view(doc, None)


def quota_view(doc: dict | None, ledger: QuotaLedger | None) -> dict:
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
            "remaining": max(0, granted - used), "claimed_at": instants(doc.get("claimed_at"))}
