"""Inference instances answer only the gateway and hold no platform credentials (issue 14, item 6).

The attack: a tenant who can reach an instance's port (from their own code on the machine, e.g. a
tuning job, or from the network in a cluster) calls it directly, skipping API keys, quotas, QPS limits
and moderation, and, if the instance is ever subverted by the weights it loads, reads the platform's
S3 and MongoDB credentials from its environment.
"""
from __future__ import annotations

from urllib.parse import urlparse

import httpx
import psutil
import pytest

from tests.integration.conftest import signed_in_tenant
from tests.integration.test_serving_api import api_key, serving_tmp, tiny_model, tiny_service  # noqa: F401

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hello"}]


async def _tenant_key(api, running_platform) -> str:
    async with signed_in_tenant(api, running_platform["url"], name="mallory-instances") as client:
        r = await client.post("/api/v1/api-keys", json={"description": "mallory"})
        assert r.status_code == 201, r.text
        return r.json()["key"]


async def test_an_instance_refuses_direct_calls_and_holds_no_platform_secret(api, running_platform, serving_tmp):
    service = await tiny_service(api, serving_tmp)
    owner_key = await api_key(api)
    mallory_key = await _tenant_key(api, running_platform)
    platform = running_platform["platform"]
    doc = await platform.mongo["service_instances"].find_one({"service_id": service["id"], "status": "ready"})
    body = {"model": service["name"], "messages": HI, "max_tokens": 2}

    # Straight to the instance: nothing without its secret, whatever platform credential comes along.
    async with httpx.AsyncClient(base_url=doc["url"], timeout=60) as direct:
        for headers in ({}, {"Authorization": f"Bearer {mallory_key}"}, {"Authorization": f"Bearer {owner_key}"}):
            r = await direct.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["type"] == "authentication_error"
            r = await direct.get("/v1/models", headers=headers)
            assert r.status_code == 401, r.text
        # What the gateway holds works, and even then no local path shows.
        r = await direct.get("/v1/models", headers={"Authorization": f"Bearer {doc['secret']}"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == service["name"]
        assert r.json()["data"][0]["root"] is None and "/" not in r.json()["data"][0]["id"]

    # Through the gateway, with the owner's key, the call works as before.
    async with httpx.AsyncClient(base_url=running_platform["url"], timeout=120,
                                 headers={"Authorization": f"Bearer {owner_key}"}) as client:
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1

    # The secret is the platform's: no API response shows it.
    for url in (f"/api/v1/services/{service['id']}", "/api/v1/services"):
        r = await api.get(url)
        assert r.status_code == 200 and doc["secret"] not in r.text

    # Embedded default: it listens on loopback only, and holds no credential of the platform.
    assert urlparse(doc["url"]).hostname == "127.0.0.1"
    proc = psutil.Process(doc["details"]["pid"])
    listening = {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}
    env = proc.environ()
    leaked = {k for k in env if k in ("MAAS_S3_SECRET_KEY", "MAAS_S3_ACCESS_KEY", "MAAS_MONGO_URL",
                                      "MAAS_KAFKA_BOOTSTRAP", "MAAS_S3_ENDPOINT")}
    assert not leaked, leaked
    platform_secrets = {platform.settings.s3_secret_key, platform.settings.mongo_url}
    assert not platform_secrets & set(env.values())
