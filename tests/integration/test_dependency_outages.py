"""A backing server killed with ``kill -9`` (issue 18): /healthz names it within seconds, calls that need
it answer 503 with Retry-After and the API's error shape (OpenAI's on /v1) instead of hanging, and
everything is well again once the server is back on the same port and data.

Each test runs its own embedded servers and platform, so killing one leaves the session's alone.
"""
from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from services.lib.common.settings import Settings
from services.lib.embedded.servers import EmbeddedServers
from tests.conftest import serve_platform
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

SERVICES = "gateway,registry"   # the console API (accounts, keys, storage, models) and /v1


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    """Private embedded servers with a platform on them: ``{"servers", "url", "admin"}``. Each test
    brings back what it killed."""
    tmp_path = tmp_path_factory.mktemp("outages")
    env_before = dict(os.environ)   # the platform's compute cluster sets RAY_* variables
    servers = EmbeddedServers(tmp_path / "data")
    await asyncio.to_thread(servers.start, timeout=60)
    env = servers.settings_env()
    settings = Settings(kafka_bootstrap=env["MAAS_KAFKA_BOOTSTRAP"], mongo_url=env["MAAS_MONGO_URL"],
                        s3_endpoint=env["MAAS_S3_ENDPOINT"], s3_access_key=env["MAAS_S3_ACCESS_KEY"],
                        s3_secret_key=env["MAAS_S3_SECRET_KEY"], s3_secure=False,
                        work_dir=str(tmp_path / "work"), topic_prefix="maas-outage")
    try:
        async with serve_platform(settings, services=SERVICES) as running:
            async with httpx.AsyncClient(base_url=running["url"], timeout=60,
                                         headers={"Authorization": f"Bearer {running['admin'].token}"}) as admin:
                yield {"servers": servers, "url": running["url"], "admin": admin}
    finally:
        await asyncio.to_thread(servers.stop)
        for name in set(os.environ) - set(env_before):
            del os.environ[name]
        os.environ.update(env_before)


async def _kill(servers: EmbeddedServers, name: str) -> None:
    pid = servers.pids()[name]
    os.kill(pid, signal.SIGKILL)
    while servers.running:   # reaped: the servers see it gone
        await asyncio.sleep(0.05)


async def _restart(servers: EmbeddedServers, name: str) -> None:
    """The killed server again, on its port and data (what `maas up`'s supervisor does every 2 s)."""
    assert await asyncio.to_thread(servers.restart_dead, timeout=60) == [name]


async def _health(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/healthz")


async def _reports(client: httpx.AsyncClient, dependency: str, status: str):
    r = await _health(client)
    return r if r.json()["dependencies"][dependency]["status"] == status else None


def _assert_unavailable(r: httpx.Response, *, openai: bool, names: str) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    error = r.json()["error"]
    assert names in error["message"]
    if openai:
        assert error["type"] == "service_unavailable_error" and error["code"] == "service_unavailable"
        assert set(error) == {"message", "type", "param", "code"}
    else:
        assert error["code"] == "service_unavailable"


async def test_healthz_reports_each_dependency_up(stack):
    r = await _health(stack["admin"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"mongodb", "object_store", "kafka"}
    for dependency in body["dependencies"].values():
        assert dependency["status"] == "up" and dependency["required"] is True and dependency["error"] is None
    assert body["checks"] == {"mongodb": "ok", "object_store": "ok", "kafka": "ok"}


async def test_a_dead_kafka_broker_is_reported_and_its_return_too(stack):
    admin, servers = stack["admin"], stack["servers"]
    await _kill(servers, "kafka")
    r = await wait_for(lambda: _reports(admin, "kafka", "down"), timeout=30)
    assert r.status_code == 503 and r.json()["status"] == "degraded"
    assert r.json()["dependencies"]["mongodb"]["status"] == "up"
    await _restart(servers, "kafka")
    r = await wait_for(lambda: _reports(admin, "kafka", "up"), timeout=60)
    assert r.status_code == 200


async def test_with_mongodb_down_calls_fail_fast_with_503_and_recover(stack):
    admin, servers = stack["admin"], stack["servers"]
    r = await admin.post("/api/v1/api-keys", json={"description": "outage-key"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    await _kill(servers, "mongo")

    r = await wait_for(lambda: _reports(admin, "mongodb", "down"), timeout=30)
    assert r.status_code == 503
    _assert_unavailable(await admin.get("/api/v1/models"), openai=False, names="MongoDB")
    async with httpx.AsyncClient(base_url=stack["url"], timeout=60, headers={"Authorization": f"Bearer {key}"}) as oai:
        r = await oai.post("/v1/chat/completions", json={"model": "no-such-model",
                                                          "messages": [{"role": "user", "content": "hi"}]})
        _assert_unavailable(r, openai=True, names="MongoDB")

    await _restart(servers, "mongo")
    await wait_for(lambda: _reports(admin, "mongodb", "up"), timeout=60)
    r = await admin.get("/api/v1/models")
    assert r.status_code == 200, r.text


async def test_with_object_storage_down_calls_fail_fast_with_503_and_recover(stack):
    admin, servers = stack["admin"], stack["servers"]
    bucket = (await admin.get("/api/v1/auth/me")).json()["default_bucket"]
    await _kill(servers, "s3")

    r = await wait_for(lambda: _reports(admin, "object_store", "down"), timeout=30)
    assert r.status_code == 503
    _assert_unavailable(await admin.get("/api/v1/storage/objects", params={"path": bucket}),
                        openai=False, names="object storage")

    await _restart(servers, "s3")
    await wait_for(lambda: _reports(admin, "object_store", "up"), timeout=60)
    r = await admin.get("/api/v1/storage/objects", params={"path": bucket})
    assert r.status_code == 200, r.text
