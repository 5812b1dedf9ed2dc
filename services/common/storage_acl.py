"""Which tenant owns which bucket. Shared by the storage API and every service that reads user paths."""
from __future__ import annotations

from datetime import UTC, datetime

from services.common.errors import ApiError
from services.common.objectstore import ObjectPath

BUCKETS = "buckets"
PUBLIC_READ = "*"  # buckets every tenant may read (platform presets)


async def grant_bucket(platform, *, bucket: str, tenant_id: str) -> None:
    await platform.store.ensure_bucket(bucket)
    await platform.mongo[BUCKETS].update_one(
        {"_id": bucket}, {"$setOnInsert": {"tenant_id": tenant_id, "created_at": datetime.now(UTC)}}, upsert=True)


async def tenant_buckets(platform, tenant_id: str) -> list[str]:
    return [d["_id"] async for d in platform.mongo[BUCKETS].find({"tenant_id": tenant_id}).sort("_id")]


async def check_access(platform, path: ObjectPath, *, tenant_id: str, field: str, write: bool = False) -> None:
    """Raise 400 naming ``field`` unless the tenant may use this bucket."""
    if not path.bucket:
        raise ApiError(400, "invalid_parameter", f"{field}: must be 'bucket/path'", field=field)
    doc = await platform.mongo[BUCKETS].find_one({"_id": path.bucket})
    owner = doc and doc["tenant_id"]
    if owner == tenant_id or (owner == PUBLIC_READ and not write):
        return
    raise ApiError(400, "invalid_parameter", f"{field}: bucket '{path.bucket}' does not exist", field=field)
