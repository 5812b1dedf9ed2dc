"""API keys' own limits through the real gateway (issue 13, item 10): an expired key and a key limited
to other services are refused, and requests/tokens per minute answer 429 with an OpenAI error body
naming the limit and Retry-After."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.conftest import wait_for
from tests.integration.test_serving_api import serving_tmp, tiny_service  # noqa: F401

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
async def service(api, serving_tmp):   # noqa: F811
    return await tiny_service(api, serving_tmp)


@pytest.fixture
async def make_key(api):
    """Creates the admin's keys with the given limits; deletes them afterwards (5 keys per user)."""
    made: list[str] = []

    async def make(**limits) -> dict:
        r = await api.post("/api/v1/api-keys", json={"description": "limits", **limits})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()
    yield make
    for key_id in made:
        await api.delete(f"/api/v1/api-keys/{key_id}")


@pytest.fixture
async def v1(running_platform):
    async with httpx.AsyncClient(base_url=running_platform["url"] + "/v1", timeout=120) as client:
        yield client


def auth(key: dict) -> dict:
    return {"Authorization": f"Bearer {key['key']}"}


async def chat(v1, key: dict, model: str, max_tokens: int = 2) -> httpx.Response:
    return await v1.post("/chat/completions", headers=auth(key),
                         json={"model": model, "messages": HI, "max_tokens": max_tokens})


async def early_in_a_minute() -> None:
    """Per-minute counters restart at each UTC minute: start a count well inside one."""
    second = time.time() % 60
    if second > 40:
        await asyncio.sleep(61 - second)


async def test_an_expired_key_is_refused(v1, make_key):
    key = await make_key(expires_at=(datetime.now(UTC) + timedelta(seconds=3)).isoformat())
    assert key["expires_at"] and key["expired"] is False
    assert (await v1.get("/models", headers=auth(key))).status_code == 200

    async def refused():
        r = await v1.get("/models", headers=auth(key))
        return r if r.status_code == 401 else None
    r = await wait_for(refused, timeout=30)
    error = r.json()["error"]
    assert error["code"] == "expired_api_key" and "expired" in error["message"]


async def test_a_key_calls_only_the_services_it_names(api, v1, make_key, service):
    elsewhere = await make_key(allowed_models=["some-other-service"])
    r = await chat(v1, elsewhere, service["name"])
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "model_not_allowed" and error["param"] == "model" and service["name"] in error["message"]
    r = await v1.post(f"/infers/{service['id']}/v1/chat/completions", headers=auth(elsewhere),
                      json={"model": service["name"], "messages": HI, "max_tokens": 2})
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert service["name"] not in [m["id"] for m in (await v1.get("/models", headers=auth(elsewhere))).json()["data"]]

    by_id = await make_key(allowed_models=[service["id"]])
    assert (await chat(v1, by_id, service["name"])).status_code == 200
    assert [m["id"] for m in (await v1.get("/models", headers=auth(by_id))).json()["data"]] == [service["name"]]
    listed = {k["id"]: k for k in (await api.get("/api/v1/api-keys")).json()["items"]}
    assert listed[by_id["id"]]["allowed_models"] == [service["id"]]


async def test_requests_per_minute_are_limited_with_an_openai_429(v1, make_key, service):
    key = await make_key(rpm_limit=2)
    await early_in_a_minute()
    assert [(await chat(v1, key, service["name"])).status_code for _ in range(2)] == [200, 200]
    r = await chat(v1, key, service["name"])
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "rpm_limit_exceeded" and error["param"] == "rpm_limit"
    assert error["type"] == "rate_limit_error" and "2 requests per minute" in error["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_tokens_per_minute_are_limited_once_used(api, v1, make_key, service):
    key = await make_key(tpm_limit=5)
    await early_in_a_minute()
    r = await chat(v1, key, service["name"], max_tokens=8)
    assert r.status_code == 200 and r.json()["usage"]["total_tokens"] > 5

    async def refused():   # the gateway writes token counts once a second
        r = await chat(v1, key, service["name"])
        return r if r.status_code == 429 else None
    r = await wait_for(refused, timeout=20, interval=0.5)
    error = r.json()["error"]
    assert error["code"] == "tpm_limit_exceeded" and "5 tokens per minute" in error["message"]
    assert "retry-after" in r.headers

    # Limits change at once: lifted, the key calls again.
    assert (await api.patch(f"/api/v1/api-keys/{key['id']}", json={"tpm_limit": None})).status_code == 200
    assert (await chat(v1, key, service["name"])).status_code == 200
