"""The free quota of a preset service cannot be overrun (issue 14, item 3), on the real platform.

Attacks through the public API by an unprivileged user of another tenant:
(a) many concurrent calls against a small quota: every call used to pass the check before any was
    billed, so together they used far more than was granted;
(b) a stream closed by the client after its first chunk: it used to be billed without its prompt.
And (c): gateway processes sharing one quota in the real MongoDB never grant more than it holds,
and a crashed one's reservation goes back to the quota when its lease expires.

The preset is a tiny model's service marked ``preset`` in MongoDB: the gateway treats it exactly as
the platform's presets. (a) runs once more on the real SmolLM2 preset (slow: real weights, a cold
start), with calls paced under the preset's QPS limit.
"""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from services.lib.common.settings import get_settings
from services.gateway.quotas.ledger import NoRoom, QuotaLedger
from services.gateway.quotas.store import QUOTAS, QuotaStore, quota_id
from tests.integration.conftest import wait_for
from tests.integration.test_serving_api import deploy, serving_tmp, tiny_model  # noqa: F401

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
async def preset(api, running_platform, serving_tmp):   # noqa: F811
    model = await tiny_model(api, serving_tmp)
    service = await deploy(api, name="tiny-quota-preset", model_id=model["id"], qps_limit=10_000)
    services = running_platform["platform"].mongo["model_services"]
    await services.update_one({"_id": service["id"]}, {"$set": {"preset": True}})
    try:
        yield service
    finally:
        await services.update_one({"_id": service["id"]}, {"$set": {"preset": False}})
        await api.delete(f"/api/v1/services/{service['id']}")


@pytest.fixture(scope="module")
async def erin(api, running_platform, preset):
    """An unprivileged user of another tenant, with an API key and the claimed quota of ``preset``."""
    r = await api.post("/api/v1/users", json={"username": "erin-quota", "password": "erin-password-1"})
    assert r.status_code == 201, r.text
    token = (await api.post("/api/v1/auth/login", json={"username": "erin-quota",
                                                        "password": "erin-password-1"})).json()["token"]
    async with httpx.AsyncClient(base_url=running_platform["url"], timeout=120,
                                 headers={"Authorization": f"Bearer {token}"}) as console:
        key = (await console.post("/api/v1/api-keys", json={"description": "quota"})).json()["key"]
        user_id = (await console.get("/api/v1/auth/me")).json()["user_id"]
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=running_platform["url"] + preset["api_base"], timeout=300,
                                     limits=limits, headers={"Authorization": f"Bearer {key}"}) as calls:
            async def seen_as_preset():   # the gateway's view of the service is at most 0.5 s old
                r = await calls.post("/chat/completions", json={"model": preset["name"], "messages": HI})
                return r.status_code == 403 and r.json()["error"]["code"] == "quota_not_claimed"
            await wait_for(seen_as_preset, timeout=30)
            r = await console.post(f"/api/v1/preset-services/{preset['id']}/claim")
            assert r.status_code == 201, r.text
            yield SimpleNamespace(console=console, calls=calls, key=key, user_id=user_id,
                                  quota_id=quota_id(user_id, preset["id"]))


async def _settled_quota(running_platform, erin) -> dict:
    """The quota once every call is billed and every reservation given back."""
    quotas = running_platform["platform"].mongo[QUOTAS]

    async def settled():
        doc = await quotas.find_one({"_id": erin.quota_id})
        return doc if not doc.get("reserved") else None
    await asyncio.sleep(1.5)   # usage is written once a second
    return await wait_for(settled, timeout=30)


async def _key_usage(erin) -> dict:
    return (await erin.console.get("/api/v1/api-keys")).json()["items"][0]["usage"]


async def test_concurrent_calls_cannot_use_more_than_the_granted_quota(running_platform, preset, erin):
    body = {"model": preset["name"], "messages": HI, "max_tokens": 32, "temperature": 0, "ignore_eos": True}
    used_before = (await _settled_quota(running_platform, erin))["used"]
    granted = used_before + 2000   # room for three such calls at a time (each reserves about 650 tokens)
    quotas = running_platform["platform"].mongo[QUOTAS]
    await quotas.update_one({"_id": erin.quota_id}, {"$set": {"granted": granted}})
    try:
        replies = await asyncio.gather(*(erin.calls.post("/chat/completions", json=body) for _ in range(80)))
        doc = await _settled_quota(running_platform, erin)
    finally:
        await quotas.update_one({"_id": erin.quota_id}, {"$set": {"granted": 1_000_000}})

    answered = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(answered) + len(refused) == len(replies), {r.status_code for r in replies}
    billed = sum(r.json()["usage"]["total_tokens"] for r in answered)
    assert doc["used"] - used_before == billed
    assert doc["used"] <= granted, f"{len(answered)} calls used {billed} tokens of the {granted - used_before} left"
    assert answered and refused
    error = refused[0].json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert f"of {granted} are left" in error["message"] and "max_tokens 32" in error["message"]


async def test_a_stream_closed_after_its_first_chunk_bills_its_prompt_and_what_was_streamed(
        running_platform, preset, erin):
    prompt = [{"role": "user", "content": "Tell me a very long story about the sea. " * 4}]
    probe = await erin.calls.post("/chat/completions", json={"model": preset["name"], "messages": prompt,
                                                             "max_tokens": 1, "temperature": 0})
    assert probe.status_code == 200, probe.text
    prompt_tokens = probe.json()["usage"]["prompt_tokens"]
    max_tokens = preset["max_model_len"] - prompt_tokens - 8
    quota_before = (await _settled_quota(running_platform, erin))["used"]
    usage_before = await _key_usage(erin)

    body = {"model": preset["name"], "messages": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    async with erin.calls.stream("POST", "/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            chunk = json.loads(line[6:]) if line.startswith("data: {") else {}
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                break   # the client leaves after the first token

    quota_after = (await _settled_quota(running_platform, erin))["used"]

    async def billed():
        usage = await _key_usage(erin)
        return usage if usage["requests"] > usage_before["requests"] else None
    usage = await wait_for(billed, timeout=30)
    prompt_billed = usage["prompt_tokens"] - usage_before["prompt_tokens"]
    completion_billed = usage["completion_tokens"] - usage_before["completion_tokens"]
    assert prompt_billed == prompt_tokens
    assert 1 <= completion_billed < max_tokens   # what was streamed before the gateway saw the client leave
    assert quota_after - quota_before == prompt_billed + completion_billed


@pytest.mark.slow
async def test_the_smollm2_preset_cannot_be_overrun_by_calls_in_flight_together(running_platform, erin):
    """The platform's real preset, called under its QPS limit (10 per user) by calls long enough that
    many are in flight at once: each used to pass the check before the others were billed."""
    async def listed():
        items = (await erin.console.get("/api/v1/preset-services")).json()["items"]
        return next((p for p in items if p["name"] == "smollm2-135m-instruct" and p["available"]), None)
    smollm2 = await wait_for(listed, timeout=600)
    r = await erin.console.post(f"/api/v1/preset-services/{smollm2['id']}/claim")
    assert r.status_code == 201, r.text
    qid = quota_id(erin.user_id, smollm2["id"])
    quotas = running_platform["platform"].mongo[QUOTAS]
    body = {"model": smollm2["name"], "messages": HI, "max_tokens": 128, "temperature": 0, "ignore_eos": True}

    async def settled():
        doc = await quotas.find_one({"_id": qid})
        return doc if not doc.get("reserved") else None
    async with httpx.AsyncClient(base_url=running_platform["url"] + smollm2["api_base"], timeout=900,
                                 headers={"Authorization": f"Bearer {erin.key}"},
                                 limits=httpx.Limits(max_connections=100)) as calls:
        warm = await calls.post("/chat/completions", json={**body, "max_tokens": 1})   # the cold start
        assert warm.status_code == 200, warm.text
        await asyncio.sleep(1.5)
        used_before = (await wait_for(settled, timeout=60))["used"]
        granted = used_before + 2000   # two such calls at a time (each reserves about 780 tokens)
        await quotas.update_one({"_id": qid}, {"$set": {"granted": granted}})

        async def paced(i: int) -> httpx.Response:
            await asyncio.sleep(i / 8)   # 8 calls a second: under the QPS limit
            return await calls.post("/chat/completions", json=body)
        replies = await asyncio.gather(*(paced(i) for i in range(40)))
    codes = {(r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None) for r in replies}
    assert codes <= {(200, None), (429, "insufficient_quota")}, codes
    answered = [r for r in replies if r.status_code == 200]
    await asyncio.sleep(1.5)
    doc = await wait_for(settled, timeout=60)
    billed = sum(r.json()["usage"]["total_tokens"] for r in answered)
    assert doc["used"] - used_before == billed
    assert doc["used"] <= granted, f"{len(answered)} calls used {billed} tokens of the {granted - used_before} left"
    assert answered and len(answered) < len(replies)


# ---------------------------------------------------------------------------------------------- gateways

@pytest.fixture
async def gateway_process(running_platform):
    """Makes one gateway process's ledger, each with a MongoDB connection of its own."""
    settings = get_settings()
    clients = []

    def make(*, chunk: int) -> QuotaLedger:
        clients.append(AsyncIOMotorClient(settings.mongo_url, tz_aware=True))
        return QuotaLedger(QuotaStore(clients[-1][settings.mongo_db][QUOTAS]), chunk=chunk, lease_seconds=30,
                           idle_release=0)
    yield make
    for client in clients:
        client.close()


async def test_gateway_processes_sharing_a_quota_in_mongodb_never_grant_more_than_it_holds(
        running_platform, gateway_process):
    quotas = running_platform["platform"].mongo[QUOTAS]
    qid = quota_id("gateways-test-user", "gateways-test-preset")
    await quotas.insert_one({"_id": qid, "granted": 6000, "used": 0, "reserved": 0, "leases": {}})
    gateways = [gateway_process(chunk=1000) for _ in range(4)]
    billed = 0

    async def call(ledger: QuotaLedger, i: int) -> None:
        nonlocal billed
        try:
            reservation = await ledger.reserve(qid, 450)
        except NoRoom:
            return
        await asyncio.sleep(0.002 * (i % 4))
        reservation.settle(100 + i % 50)
        billed += 100 + i % 50

    for _ in range(50):   # rounds of concurrent calls until none fits any more
        before = billed
        await asyncio.gather(*(call(g, i) for i, g in enumerate(gateways * 15)))
        doc = await quotas.find_one({"_id": qid})
        assert doc["used"] + doc["reserved"] <= doc["granted"]
        assert doc["reserved"] == sum(lease["tokens"] for lease in doc["leases"].values())
        await asyncio.gather(*(g.flush() for g in gateways))
        if billed == before:
            break
    await asyncio.gather(*(g.flush(closing=True) for g in gateways))
    doc = await quotas.find_one({"_id": qid})
    assert doc["used"] == billed and doc["reserved"] == 0 and doc["leases"] == {}
    assert 6000 - 450 < billed <= 6000

    # A gateway dies holding a reservation: once its lease expires, another takes the tokens back.
    await quotas.update_one({"_id": qid}, {"$set": {"granted": billed + 1000}})
    crashed, survivor = gateway_process(chunk=0), gateway_process(chunk=0)
    await crashed.reserve(qid, 900)
    with pytest.raises(NoRoom):
        await survivor.reserve(qid, 900)
    await quotas.update_one({"_id": qid}, {"$set": {
        f"leases.{crashed.key}.expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    reservation = await survivor.reserve(qid, 900)
    reservation.settle(300)
    await survivor.flush(closing=True)
    doc = await quotas.find_one({"_id": qid})
    assert doc["used"] == billed + 300 and doc["reserved"] == 0 and doc["leases"] == {}
