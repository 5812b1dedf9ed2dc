"""Upload helpers: buckets, listing, streamed multipart uploads and presigned PUT URLs."""
from __future__ import annotations

import os
from urllib.parse import unquote

import httpx
import pytest

from tests.integration.conftest import signed_in_tenant

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


# ---------------------------------------------------------------------------------------------
# Issue 14.2 and 14.8: platform buckets and object keys, attacked by an unprivileged tenant
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def mallory(api, running_platform):
    async with signed_in_tenant(api, running_platform["url"], name="mallory-storage") as client:
        yield client


PLATFORM_BUCKETS = ["maas-models", "maas-tuning", "maas-compression", "maas-system", "maas-presets"]


@pytest.mark.parametrize("name", [*PLATFORM_BUCKETS, "maas-anything-new"])
async def test_a_tenant_cannot_claim_a_platform_bucket(mallory, name):
    r = await mallory.post("/api/v1/storage/buckets", json={"name": name})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == "name" and "reserved for the platform" in error["message"]
    assert name not in [b["name"] for b in (await mallory.get("/api/v1/storage/buckets")).json()["items"]]
    r = await mallory.get("/api/v1/storage/objects", params={"path": name, "recursive": True})
    assert r.status_code == (200 if name == "maas-presets" else 400)   # preset weights are public, read-only
    r = await mallory.put(f"/api/v1/storage/objects/{name}/cache/model.onnx", content=b"backdoor")
    assert r.status_code == 400


async def test_the_platforms_buckets_are_recorded_as_the_platforms_at_start(running_platform):
    """Created and owned by the platform from the start, so nothing is left for a tenant to claim."""
    platform = running_platform["platform"]
    for name in ["maas-models", "maas-tuning", "maas-compression", "maas-system"]:
        assert await platform.store.bucket_exists(name), name
        doc = await platform.mongo["buckets"].find_one({"_id": name})
        assert doc is not None and doc["tenant_id"] == "@platform", (name, doc)


async def test_a_bucket_a_tenant_held_before_the_upgrade_is_taken_back(running_platform, mallory):
    """A platform that ran older code may have recorded a tenant as a platform bucket's owner."""
    from services.lib.common.service_spec import PlatformBucket
    from services.lib.readmodels.buckets import reserve_platform_buckets

    platform = running_platform["platform"]
    me = (await mallory.get("/api/v1/auth/me")).json()
    await platform.mongo["buckets"].update_one({"_id": "maas-compression"}, {"$set": {"tenant_id": me["tenant_id"]}})
    assert (await mallory.get("/api/v1/storage/objects", params={"path": "maas-compression"})).status_code == 200
    await reserve_platform_buckets(platform, [PlatformBucket("maas-compression")])
    assert (await mallory.get("/api/v1/storage/objects", params={"path": "maas-compression"})).status_code == 400


@pytest.mark.parametrize("key", ["..%2F..%2Fmaas-models%2Fx.bin", "a/..%2F..%2Fescape.bin", "%2Fetc%2Fpasswd",
                                 "dir%2F.%2Ffile", "bad%01name.bin", "a%2F%2Fb.bin", "a%5C..%5Cb.bin"])
async def test_object_keys_that_could_escape_a_folder_are_refused(mallory, key):
    r = await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/{key}", content=b"x")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "path" and "object key" in r.json()["error"]["message"]
    r = await mallory.post("/api/v1/storage/presigned-uploads",
                           json={"path": f"{mallory.default_bucket}/{unquote(key)}"})
    assert r.status_code == 400, r.text


async def test_dataset_and_weight_paths_with_dot_dot_are_refused(mallory):
    r = await mallory.get("/api/v1/storage/objects", params={"path": f"{mallory.default_bucket}/../maas-models/"})
    assert r.status_code == 400 and "'..'" in r.json()["error"]["message"]
    r = await mallory.post("/api/v1/models", json={"name": "dotdot", "template_id": "qwen2-custom",
                                                    "weights_path": f"{mallory.default_bucket}/x/../../maas-models/"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "weights_path"


# ---------------------------------------------------------------------------------------------
# Issue 14.4: sizes a tenant controls are capped per account (MAAS_LIMIT_*)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def limits(monkeypatch):
    """Set MAAS_LIMIT_* for one test (the platform runs in this process and reads them on use)."""
    from services.lib.common.account_limits import account_limits

    def set_limits(**values):
        for name, value in values.items():
            monkeypatch.setenv(f"MAAS_LIMIT_{name.upper()}", str(value))
        account_limits.cache_clear()
    yield set_limits
    monkeypatch.undo()
    account_limits.cache_clear()


async def test_an_upload_past_the_object_cap_is_refused_and_leaves_nothing(mallory, limits):
    limits(object_bytes=1000)
    r = await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/caps/declared.bin", content=b"x" * 1001)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"
    assert "at most 1000 bytes" in r.json()["error"]["message"]

    async def undeclared():   # chunked: no Content-Length, the cap is found while streaming
        for _ in range(5):
            yield b"y" * 400
    r = await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/caps/chunked.bin", content=undeclared())
    assert r.status_code == 413, r.text
    listing = (await mallory.get("/api/v1/storage/objects", params={"path": f"{mallory.default_bucket}/caps"})).json()
    assert listing["items"] == []
    r = await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/caps/fits.bin", content=b"z" * 1000)
    assert r.status_code == 201 and r.json()["size"] == 1000


async def test_an_account_cannot_store_past_its_cap(mallory, limits):
    me = (await mallory.get("/api/v1/auth/me")).json()
    listing = (await mallory.get("/api/v1/storage/objects", params={"path": mallory.default_bucket, "recursive": True}))
    used = sum(o["size"] for o in listing.json()["items"])
    limits(stored_bytes=used + 1500)

    async def streamed():
        for _ in range(4):
            yield b"s" * 500
    r = await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/full/a.bin", content=streamed())
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "account_limit_reached" and "MAAS_LIMIT_STORED_BYTES" in error["message"]
    assert (await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/full/b.bin", content=b"s" * 1500)).status_code == 201
    r = await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/full/c.bin", content=b"s")
    assert r.status_code == 403
    r = await mallory.post("/api/v1/storage/presigned-uploads", json={"path": f"{mallory.default_bucket}/full/d.bin"})
    assert r.status_code == 403
    assert me["default_bucket"] == mallory.default_bucket


async def test_an_account_cannot_create_buckets_or_models_past_its_caps(mallory, limits):
    owned = len((await mallory.get("/api/v1/storage/buckets")).json()["items"])
    limits(buckets=owned + 1, models=1)
    assert (await mallory.post("/api/v1/storage/buckets", json={"name": "mallory-extra-1"})).status_code == 201
    r = await mallory.post("/api/v1/storage/buckets", json={"name": "mallory-extra-2"})
    assert r.status_code == 403 and "MAAS_LIMIT_BUCKETS" in r.json()["error"]["message"]
    for name in ("config.json", "model.safetensors"):   # a folder that looks like HF weights; never validated
        assert (await mallory.put(f"/api/v1/storage/objects/{mallory.default_bucket}/capped/{name}", content=b"{}")).status_code == 201
    body = {"template_id": "qwen2-custom", "weights_path": f"{mallory.default_bucket}/capped", "validate_weights": False}
    first = await mallory.post("/api/v1/models", json={**body, "name": "capped-1"})
    assert first.status_code == 201, first.text
    r = await mallory.post("/api/v1/models", json={**body, "name": "capped-2"})
    assert r.status_code == 403 and "at most 1 models" in r.json()["error"]["message"]
