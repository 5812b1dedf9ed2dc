"""The serving service's data migrations (services.lib.common.migrations)."""
from __future__ import annotations

from services.lib.common.migrations import Migration
from services.lib.readmodels.serving_refs import SERVICES
from services.serving.models import instance_resources


async def _placement_on_services_from_before_pools(db) -> int:
    """Services deployed before resource pools existed run in the public pool with their spec's share."""
    changed = 0
    async for doc in db[SERVICES].find({"placement": {"$exists": False}}, {"instance_spec": 1}):
        placement = {"pool": "public", **instance_resources(doc.get("instance_spec", "")).as_dict()}
        result = await db[SERVICES].update_one({"_id": doc["_id"], "placement": {"$exists": False}},
                                               {"$set": {"placement": placement, "resource_pool": "public"}})
        changed += result.modified_count
    return changed


MIGRATIONS = [
    Migration("serving-0001-placement", "model services deployed before resource pools get the public pool's "
              "placement", _placement_on_services_from_before_pools),
]
