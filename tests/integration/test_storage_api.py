"""Upload helpers: buckets, listing, streamed multipart uploads and presigned PUT URLs."""
from __future__ import annotations

import os

import httpx
import pytest

pytestmark = pytest.mark.integration


async def test_buckets_are_per_tenant_and_validated(api):
    me = (await api.get("/api/v1/auth/me")).json()
    names = [b["name"] for b in (await api.get("/api/v1/storage/buckets")).json()["items"]]
    assert me["default_bucket"] in names
    r = await api.post("/api/v1/storage/buckets", json={"name": "Bad_Bucket"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "name"
    r = await api.post("/api/v1/storage/buckets", json={"name": "team-datasets"})
    assert r.status_code == 201
    r = await api.post("/api/v1/storage/buckets", json={"name": "team-datasets"})
    assert r.status_code == 409


async def test_large_upload_is_streamed_in_parts_and_listed(api):
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    payload = os.urandom(40 * 1024 * 1024 + 123)  # above one multipart part

    async def body():
        for i in range(0, len(payload), 1 << 20):
            yield payload[i:i + (1 << 20)]
    r = await api.put(f"/api/v1/storage/objects/{bucket}/big/weights.bin", content=body())
    assert r.status_code == 201 and r.json()["size"] == len(payload)
    listing = (await api.get("/api/v1/storage/objects", params={"path": f"{bucket}/big"})).json()["items"]
    assert listing == [{"path": f"{bucket}/big/weights.bin", "size": len(payload), "is_dir": False}]
    folders = (await api.get("/api/v1/storage/objects", params={"path": bucket})).json()["items"]
    assert {"path": f"{bucket}/big/", "size": 0, "is_dir": True} in folders


async def test_presigned_put_uploads_straight_to_object_storage(api):
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    r = await api.post("/api/v1/storage/presigned-uploads", json={"path": f"{bucket}/direct/config.json"})
    assert r.status_code == 200
    async with httpx.AsyncClient() as raw:
        put = await raw.put(r.json()["url"], content=b'{"model_type": "qwen2"}')
    assert put.status_code == 200
    listing = (await api.get("/api/v1/storage/objects", params={"path": f"{bucket}/direct"})).json()["items"]
    assert [o["path"] for o in listing] == [f"{bucket}/direct/config.json"]


async def test_uploads_outside_the_tenants_buckets_are_refused(api):
    r = await api.put("/api/v1/storage/objects/maas-models/evil/x.bin", content=b"x")
    assert r.status_code == 400 and r.json()["error"]["field"] == "path"
    r = await api.post("/api/v1/storage/presigned-uploads", json={"path": "maas-presets/x"})
    assert r.status_code == 400
    r = await api.get("/api/v1/storage/objects", params={"path": "maas-kafka"})
    assert r.status_code == 400
