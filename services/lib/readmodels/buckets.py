"""Which tenant owns which bucket: the storage API's read-model, read by every service that takes a
user's path (``check_access``) and by the composition root, which reserves the platform's buckets.

The platform's own buckets (registry copies, tuning state, compression outputs, the ONNX cache,
presets) are recorded at start-up with an owner no tenant can have, and every name under the
reserved prefix is refused to tenants, so no tenant can claim a platform bucket before it exists.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from services.lib.common.errors import ApiError
from services.lib.common.objectstore import ObjectPath
from services.lib.common.service_spec import PUBLIC_READ, PlatformBucket

log = logging.getLogger(__name__)

BUCKETS = "buckets"
RESERVED_PREFIX = "maas-"  # bucket names the platform creates (its own and each tenant's default)


def is_reserved_name(bucket: str) -> bool:
    return bucket.startswith(RESERVED_PREFIX)


async def reserve_platform_buckets(platform, buckets: Iterable[PlatformBucket]) -> None:
    """Create the platform's buckets and record them as the platform's, taking back any a tenant holds."""
    for bucket in buckets:
        await platform.store.ensure_bucket(bucket.name)
        before = await platform.mongo[BUCKETS].find_one_and_update(
            {"_id": bucket.name}, {"$set": {"tenant_id": bucket.owner},
                                   "$setOnInsert": {"created_at": datetime.now(UTC)}}, upsert=True)
        if before is not None and before["tenant_id"] != bucket.owner:
            log.warning("platform bucket %s was recorded as owned by tenant %s; taken back", bucket.name,
                        before["tenant_id"])


async def grant_bucket(platform, *, bucket: str, tenant_id: str) -> None:
    await platform.store.ensure_bucket(bucket)
    await platform.mongo[BUCKETS].update_one(
        {"_id": bucket}, {"$setOnInsert": {"tenant_id": tenant_id, "created_at": datetime.now(UTC)}}, upsert=True)


async def tenant_buckets(platform, tenant_id: str) -> list[str]:
    return [d["_id"] async for d in platform.mongo[BUCKETS].find({"tenant_id": tenant_id}).sort("_id")]


async def stored_bytes(platform, tenant_id: str) -> int:
    """What the tenant's buckets hold now (a listing: exact, and costs one pass over its objects)."""
    total = 0
    for bucket in await tenant_buckets(platform, tenant_id):
        total += sum(o.size for o in await platform.store.list(ObjectPath(bucket, ""), recursive=True))
    return total


async def check_access(platform, path: ObjectPath, *, tenant_id: str, field: str, write: bool = False) -> None:
    """Raise 400 naming ``field`` unless the tenant may use this bucket."""
    if not path.bucket:
        raise ApiError(400, "invalid_parameter", f"{field}: must be 'bucket/path'", field=field)
    problem = path.key_problem()
    if problem:
        raise ApiError(400, "invalid_parameter", f"{field}: the object key {problem}", field=field)
    doc = await platform.mongo[BUCKETS].find_one({"_id": path.bucket})
    owner = doc and doc["tenant_id"]
    if owner == tenant_id or (owner == PUBLIC_READ and not write):
        return
    raise ApiError(400, "invalid_parameter", f"{field}: bucket '{path.bucket}' does not exist", field=field)
