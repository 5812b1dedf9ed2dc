"""A backing server killed with ``kill -9`` (issue 18): /healthz names it within seconds, calls that need
it answer 503 with Retry-After and the API's error shape (OpenAI's on /v1) instead of hanging, and
everything is well again once the server is back on the same port and data.

With Kafka down a write still answers 201 (state and events commit together); the answers that follow
say, in a ``Warning`` header, that the work it starts waits, until the events are through.

Each test runs its own embedded servers and platform, so killing one leaves the session's alone.
"""
from __future__ import annotations

import httpx
import pytest

from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import kill_server, private_platform, restart_server, wait_for
from tests.integration.test_compression_api import create_model, upload_folder

pytestmark = pytest.mark.integration

# The console API (accounts, keys, storage, models), /v1, and weight validation (work an event starts).
SERVICES = "gateway,registry,registry-worker"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    """Private embedded servers with a platform on them: ``{"servers", "url", "admin"}``. Each test
    brings back what it killed."""
    async with private_platform(tmp_path_factory.mktemp("outages"), services=SERVICES,
                                topic_prefix="maas-outage") as running:
        yield running


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
    assert set(body["dependencies"]) == {"mongodb", "object_store", "kafka", "disk"}   # disk: work_dir is set
    for dependency in body["dependencies"].values():
        assert dependency["status"] == "up" and dependency["required"] is True and dependency["error"] is None
    assert body["checks"] == {"mongodb": "ok", "object_store": "ok", "kafka": "ok", "disk": "ok"}


async def test_a_dead_kafka_broker_is_reported_and_its_return_too(stack):
    admin, servers = stack["admin"], stack["servers"]
    await kill_server(servers, "kafka")
    r = await wait_for(lambda: _reports(admin, "kafka", "down"), timeout=30)
    assert r.status_code == 503 and r.json()["status"] == "degraded"
    assert r.json()["dependencies"]["mongodb"]["status"] == "up"
    await restart_server(servers, "kafka")
    r = await wait_for(lambda: _reports(admin, "kafka", "up"), timeout=60)
    assert r.status_code == 200


async def test_with_mongodb_down_calls_fail_fast_with_503_and_recover(stack):
    admin, servers = stack["admin"], stack["servers"]
    r = await admin.post("/api/v1/api-keys", json={"description": "outage-key"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    await kill_server(servers, "mongo")

    r = await wait_for(lambda: _reports(admin, "mongodb", "down"), timeout=30)
    assert r.status_code == 503
    _assert_unavailable(await admin.get("/api/v1/models"), openai=False, names="MongoDB")
    async with httpx.AsyncClient(base_url=stack["url"], timeout=60, headers={"Authorization": f"Bearer {key}"}) as oai:
        r = await oai.post("/v1/chat/completions", json={"model": "no-such-model",
                                                          "messages": [{"role": "user", "content": "hi"}]})
        _assert_unavailable(r, openai=True, names="MongoDB")

    await restart_server(servers, "mongo")
    await wait_for(lambda: _reports(admin, "mongodb", "up"), timeout=60)
    r = await admin.get("/api/v1/models")
    assert r.status_code == 200, r.text


async def test_with_object_storage_down_calls_fail_fast_with_503_and_recover(stack):
    admin, servers = stack["admin"], stack["servers"]
    bucket = (await admin.get("/api/v1/auth/me")).json()["default_bucket"]
    await kill_server(servers, "s3")

    r = await wait_for(lambda: _reports(admin, "object_store", "down"), timeout=30)
    assert r.status_code == 503
    _assert_unavailable(await admin.get("/api/v1/storage/objects", params={"path": bucket}),
                        openai=False, names="object storage")

    await restart_server(servers, "s3")
    await wait_for(lambda: _reports(admin, "object_store", "up"), timeout=60)
    r = await admin.get("/api/v1/storage/objects", params={"path": bucket})
    assert r.status_code == 200, r.text


def _warning(r: httpx.Response) -> str | None:
    value = r.headers.get("warning", "")
    return value if value.startswith("199 openmaas ") else None


async def test_with_kafka_down_a_write_is_saved_answers_say_its_work_waits_and_it_runs_once_kafka_is_back(
        stack, tmp_path):
    admin, servers = stack["admin"], stack["servers"]
    bucket = (await admin.get("/api/v1/auth/me")).json()["default_bucket"]
    weights = await upload_folder(admin, build_tiny_model(tmp_path / "tiny"), f"{bucket}/outage/tiny")
    assert _warning(await admin.get("/api/v1/models")) is None
    await kill_server(servers, "kafka")

    model = await create_model(admin, name="outage-tiny", weights_path=weights, validate=True, wait=False)
    assert model["status"] == "creating"

    async def warned():
        r = await admin.get(f"/api/v1/models/{model['id']}")
        return r if _warning(r) else None
    r = await wait_for(warned, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "creating"
    assert "Kafka" in _warning(r) and "saved" in _warning(r)
    # Model calls do not wait on events: no word there.
    assert _warning(await admin.get("/v1/models")) is None

    await restart_server(servers, "kafka")

    async def validated():
        r = await admin.get(f"/api/v1/models/{model['id']}")
        return r if r.json()["status"] != "creating" and not _warning(r) else None
    r = await wait_for(validated, timeout=180)
    assert r.json()["status"] == "created", r.json()
