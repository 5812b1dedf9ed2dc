"""Upload helpers: buckets, object listing, streamed uploads (multipart) and presigned PUT URLs."""
from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from services.lib.common.account_limits import account_limits, env_name, limit_reached, refuse
from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.errors import ApiError, bad_request
from services.lib.common.objectstore import ObjectPath, TooLarge
from services.lib.readmodels.buckets import (BUCKETS, RESERVED_PREFIX, check_access, grant_bucket, is_reserved_name,
                                         stored_bytes, tenant_buckets)
from services.lib.iam.authorize import Authorized

router = APIRouter(prefix="/api/v1/storage", tags=["storage"])

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class BucketCreate(BaseModel):
    name: str = Field(description="3-63 lowercase letters, digits, '.', '-' (S3 bucket rules)")


class PresignRequest(BaseModel):
    path: str = Field(description="bucket/key of the object to upload")
    expires_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)


@router.get("/buckets", summary="Buckets this tenant can write to")
async def list_buckets(principal: Principal = Authorized("maas:buckets:list"),
                       platform: Platform = Depends(get_platform)):
    return {"items": [{"name": b} for b in await tenant_buckets(platform, principal.tenant_id)]}


@router.post("/buckets", status_code=201, summary="Create a bucket")
async def create_bucket(body: BucketCreate, principal: Principal = Authorized("maas:buckets:create"),
                        platform: Platform = Depends(get_platform)):
    if not _BUCKET.fullmatch(body.name):
        raise bad_request("name: must be 3-63 characters of lowercase letters, digits, '.' and '-', "
                          "starting and ending with a letter or digit", field="name")
    if is_reserved_name(body.name):
        raise bad_request(f"name: bucket names starting with '{RESERVED_PREFIX}' are reserved for the platform",
                          field="name")
    if await platform.mongo[BUCKETS].find_one({"_id": body.name}) or await platform.store.bucket_exists(body.name):
        raise ApiError(409, "conflict", f"bucket '{body.name}' already exists", field="name")
    owned = len(await tenant_buckets(platform, principal.tenant_id))
    refuse("buckets", limit=account_limits().buckets, current=owned, field="name")
    await grant_bucket(platform, bucket=body.name, tenant_id=principal.tenant_id)
    return {"name": body.name}


@router.get("/objects", summary="List objects and folders under bucket/prefix")
async def list_objects(path: Annotated[str, Query(description="bucket/prefix")],
                       principal: Principal = Authorized("maas:objects:list"),
                       recursive: bool = False, platform: Platform = Depends(get_platform)):
    target = ObjectPath.parse(path)
    await check_access(platform, target, tenant_id=principal.tenant_id, field="path")
    items = await platform.store.list(target.as_prefix() if target.key else target, recursive=recursive)
    return {"items": [{"path": f"{target.bucket}/{o.key}", "size": o.size, "is_dir": o.is_dir} for o in items]}


@router.put("/objects/{path:path}", status_code=201, summary="Upload one object (streamed; multipart when large)")
async def upload_object(path: str, request: Request, principal: Principal = Authorized("maas:objects:put"),
                        platform: Platform = Depends(get_platform)):
    target = ObjectPath.parse(path)
    if not target.key or target.key.endswith("/"):
        raise bad_request("path: must name an object, 'bucket/folder/file'", field="path")
    await check_access(platform, target, tenant_id=principal.tenant_id, field="path", write=True)
    limits = account_limits()
    length = request.headers.get("content-length", "")
    declared = int(length) if length.isdigit() else None
    if declared is not None and declared > limits.object_bytes:
        raise _too_large(limits.object_bytes)
    used = await stored_bytes(platform, principal.tenant_id)
    refuse("stored_bytes", limit=limits.stored_bytes, current=used, wanted=declared or 1)
    cap = min(limits.object_bytes, limits.stored_bytes - used)
    # Streamed straight into object storage, one part in memory at a time: nothing on local disk.
    try:
        size = await platform.store.put_chunks(target, request.stream(), max_bytes=cap)
    except TooLarge:
        if cap == limits.object_bytes:
            raise _too_large(cap) from None
        raise limit_reached("stored_bytes", limit=limits.stored_bytes, current=used, wanted=cap + 1) from None
    return {"path": f"{target.bucket}/{target.key}", "size": size}


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"body: an object may be at most {limit} bytes "
                    f"(the platform operator sets {env_name('object_bytes')})", field="body")


@router.post("/presigned-uploads", summary="A presigned S3 PUT URL for uploading straight to object storage")
async def presign_upload(body: PresignRequest, principal: Principal = Authorized("maas:objects:put"),
                         platform: Platform = Depends(get_platform)):
    from datetime import timedelta

    target = ObjectPath.parse(body.path)
    if not target.key or target.key.endswith("/"):
        raise bad_request("path: must name an object, 'bucket/folder/file'", field="path")
    await check_access(platform, target, tenant_id=principal.tenant_id, field="path", write=True)
    # A presigned PUT cannot carry a size limit: refuse it once the account is full (see docs/security.md).
    limits = account_limits()
    refuse("stored_bytes", limit=limits.stored_bytes, current=await stored_bytes(platform, principal.tenant_id))
    url = await platform.store.presigned_put(target, expires=timedelta(seconds=body.expires_seconds))
    return {"url": url, "method": "PUT", "path": f"{target.bucket}/{target.key}", "expires_seconds": body.expires_seconds}
