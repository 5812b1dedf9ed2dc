"""HTTP routes of the preset services' free quota: the presets with my quota, and claiming it."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from pymongo import ASCENDING

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_component, get_platform
from services.gateway.quotas.ledger import QuotaLedger
from services.gateway.quotas.presets import preset_items, preset_templates
from services.gateway.quotas.service import claim, quota_view
from services.gateway.quotas.store import QUOTAS
from services.lib.iam.authorize import Authorized
from services.lib.readmodels.model_refs import preset_imports
from services.lib.readmodels.serving_refs import PRESET_TENANT, SERVICES

router = APIRouter(prefix="/api/v1/preset-services", tags=["preset services"])


async def _ledger(gateway=Depends(get_component("gateway"))) -> QuotaLedger:
    """The quota ledger of this process's chat gateway: balances include tokens it holds for calls."""
    return gateway.ledger


@router.get("", summary="Preset services with my free quota (also those still importing their weights)")
async def list_presets(principal: Principal = Authorized("maas:presetServices:list"),
                       platform: Platform = Depends(get_platform), ledger: QuotaLedger = Depends(_ledger)):
    quotas = {d["service_id"]: d async for d in platform.mongo[QUOTAS].find({"user_id": principal.user_id})}
    services = [doc async for doc in platform.mongo[SERVICES].find({"tenant_id": PRESET_TENANT}).sort("name", ASCENDING)]
    items = preset_items(services=services, templates=preset_templates(), imports=await preset_imports(platform),
                         quota=lambda service_id: quota_view(quotas.get(service_id), ledger))
    return {"items": items}


@router.post("/{service_id}/claim", status_code=201, summary="Claim the free quota (once per user; by id or name)")
async def claim_quota(service_id: str, principal: Principal = Authorized("maas:presetServices:claim"),
                      platform: Platform = Depends(get_platform)):
    return await claim(platform, user_id=principal.user_id, tenant_id=principal.tenant_id, service_id=service_id)
