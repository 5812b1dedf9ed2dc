"""Upload helpers: buckets, object listing, streamed uploads (multipart) and presigned PUT URLs."""
from __future__ import annotations

import re
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from services.common.auth import CurrentPrincipal
from services.common.context import Platform, get_platform
from services.common.errors import ApiError, bad_request
from services.common.objectstore import ObjectPath
from services.common.storage_acl import BUCKETS, check_access, grant_bucket, tenant_buckets

router = APIRouter(prefix="/api/v1/storage", tags=["storage"])

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
SPOOL_IN_MEMORY = 8 * 1024 * 1024


class BucketCreate(BaseModel):
    name: str = Field(description="3-63 lowercase letters, digits, '.', '-' (S3 bucket rules)")


class PresignRequest(BaseModel):
    path: str = Field(description="bucket/key of the object to upload")
    expires_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)


@router.get("/buckets", summary="Buckets this tenant can write to")
async def list_buckets(principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    return {"items": [{"name": b} for b in await tenant_buckets(platform, principal.tenant_id)]}


@router.post("/buckets", status_code=201, summary="Create a bucket")
async def create_bucket(body: BucketCreate, principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    if not _BUCKET.fullmatch(body.name):
        raise bad_request("name: must be 3-63 characters of lowercase letters, digits, '.' and '-', "
                          "starting and ending with a letter or digit", field="name")
    if await platform.mongo[BUCKETS].find_one({"_id": body.name}) or await platform.store.bucket_exists(body.name):
        raise ApiError(409, "conflict", f"bucket '{body.name}' already exists", field="name")
    await grant_bucket(platform, bucket=body.name, tenant_id=principal.tenant_id)
    return {"name": body.name}


@router.get("/objects", summary="List objects and folders under bucket/prefix")
async def list_objects(principal: CurrentPrincipal, path: Annotated[str, Query(description="bucket/prefix")],
                       recursive: bool = False, platform: Platform = Depends(get_platform)):
    target = ObjectPath.parse(path)
    await check_access(platform, target, tenant_id=principal.tenant_id, field="path")
    items = await platform.store.list(target.as_prefix() if target.key else target, recursive=recursive)
    return {"items": [{"path": f"{target.bucket}/{o.key}", "size": o.size, "is_dir": o.is_dir} for o in items]}


@router.put("/objects/{path:path}", status_code=201, summary="Upload one object (streamed; multipart when large)")
async def upload_object(path: str, request: Request, principal: CurrentPrincipal,
                        platform: Platform = Depends(get_platform)):
    target = ObjectPath.parse(path)
    if not target.key or target.key.endswith("/"):
        raise bad_request("path: must name an object, 'bucket/folder/file'", field="path")
    await check_access(platform, target, tenant_id=principal.tenant_id, field="path", write=True)
    # Spool to disk past a few MB so a multi-GB weight file never sits in memory.
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        await platform.store.put_stream(target, spool, length=size)
    return {"path": f"{target.bucket}/{target.key}", "size": size}


@router.post("/presigned-uploads", summary="A presigned S3 PUT URL for uploading straight to object storage")
async def presign_upload(body: PresignRequest, principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    from datetime import timedelta

    target = ObjectPath.parse(body.path)
    if not target.key or target.key.endswith("/"):
        raise bad_request("path: must name an object, 'bucket/folder/file'", field="path")
    await check_access(platform, target, tenant_id=principal.tenant_id, field="path", write=True)
    url = await platform.store.presigned_put(target, expires=timedelta(seconds=body.expires_seconds))
    return {"url": url, "method": "PUT", "path": f"{target.bucket}/{target.key}", "expires_seconds": body.expires_seconds}
