"""API keys' own limits: expiry, the services a key may call, requests and tokens per minute.

The per-minute counters are MongoDB documents changed by one conditional update (mongomock here;
tests/integration/test_api_key_limits.py calls through the real gateway)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from mongomock_motor import AsyncMongoMockClient
from pydantic import ValidationError
from starlette.requests import Request

from services.lib.common.auth import hash_token
from services.gateway.keys import service as keys
from services.gateway.keys.limits import WINDOW_SECONDS, KeyLimits
from services.gateway.keys.models import Caller, KeyCreate, KeyUpdate
from services.gateway.keys.service import API_KEYS, authenticate, check_allowed
from services.gateway.oai_errors import OpenAIError
from services.lib.iam.actions import INFERENCE_CALL
from services.lib.iam.store import Authorizer

MINUTE_START = 1_800_000_000 // WINDOW_SECONDS * WINDOW_SECONDS


class Clock:
    def __init__(self):
        self.now = MINUTE_START + 10.0

    def __call__(self) -> float:
        return self.now


def caller(**limits) -> Caller:
    return Caller(user_id="u1", tenant_id="t1", username="alice", role="user", key_id="k1", **limits)


@pytest.fixture
def collection():
    return AsyncMongoMockClient(tz_aware=True)["maas"]["api_key_minutes"]


async def refusal(limits: KeyLimits, who: Caller) -> OpenAIError | None:
    try:
        await limits.admit(who)
    except OpenAIError as exc:
        return exc
    return None


async def test_requests_per_minute_hold_across_gateways_and_reset_with_the_minute(collection):
    clock = Clock()
    one, other = KeyLimits(collection, clock=clock), KeyLimits(collection, clock=clock)
    who = caller(rpm_limit=3)
    assert [await refusal(g, who) for g in (one, other, one)] == [None, None, None]
    exc = await refusal(other, who)
    assert exc is not None and exc.status == 429
    assert exc.code == "rpm_limit_exceeded" and exc.param == "rpm_limit" and "3 requests per minute" in exc.message
    assert exc.type == "rate_limit_error" and exc.headers()["Retry-After"] == "50"
    assert exc.body()["error"]["code"] == "rpm_limit_exceeded"
    clock.now = MINUTE_START + WINDOW_SECONDS + 1
    assert await refusal(one, who) is None


async def test_tokens_per_minute_count_once_written(collection):
    clock = Clock()
    gateway, other = KeyLimits(collection, clock=clock), KeyLimits(collection, clock=clock)
    who = caller(tpm_limit=100)
    assert await refusal(gateway, who) is None
    gateway.spent(who, 60)
    assert await refusal(other, who) is None   # not written yet: the minute still has room
    gateway.spent(who, 50)
    await gateway.flush()
    exc = await refusal(other, who)
    assert exc is not None and exc.code == "tpm_limit_exceeded" and "100 tokens per minute" in exc.message
    clock.now += WINDOW_SECONDS
    assert await refusal(other, who) is None


async def test_tokens_written_before_any_request_of_the_minute_still_count(collection):
    clock = Clock()
    limits = KeyLimits(collection, clock=clock)
    who = caller(rpm_limit=5, tpm_limit=10)
    limits.spent(who, 10)
    await limits.flush()
    exc = await refusal(limits, who)
    assert exc is not None and exc.code == "tpm_limit_exceeded"


async def test_a_key_without_limits_writes_nothing(collection):
    limits = KeyLimits(collection, clock=Clock())
    for _ in range(5):
        assert await refusal(limits, caller()) is None
    limits.spent(caller(), 1000)
    await limits.flush()
    assert await collection.count_documents({}) == 0


def test_key_fields_are_checked_naming_the_field():
    past = datetime.now(UTC) - timedelta(minutes=1)
    for body, field in [({"expires_at": past.isoformat()}, "expires_at"),
                        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),    # no time zone
                        ({"allowed_models": []}, "allowed_models"),
                        ({"allowed_models": [""]}, "allowed_models"),
                        ({"rpm_limit": 0}, "rpm_limit"),
                        ({"tpm_limit": -5}, "tpm_limit"),
                        ({"rpm": 5}, "rpm")]:
        with pytest.raises(ValidationError) as raised:
            KeyCreate.model_validate(body)
        assert raised.value.errors()[0]["loc"][0] == field, body
    ok = KeyCreate.model_validate({"expires_at": "2099-01-01T00:00:00Z", "allowed_models": ["svc-a", "svc-a"],
                                   "rpm_limit": 10, "tpm_limit": 1000})
    assert keys._limits(ok)["allowed_models"] == ["svc-a"]
    update = KeyUpdate.model_validate({"rpm_limit": None})
    assert keys._limits(update, only=update.model_fields_set) == {"rpm_limit": None}


def test_a_key_limited_to_services_may_call_them_by_name_or_id_only():
    mine = SimpleNamespace(id="s-1", name="svc-a")
    other = SimpleNamespace(id="s-2", name="svc-b")
    by_name, by_id = caller(allowed_models=frozenset({"svc-a"})), caller(allowed_models=frozenset({"s-1"}))
    for who in (by_name, by_id, caller()):
        check_allowed(who, mine)
    with pytest.raises(OpenAIError) as raised:
        check_allowed(by_name, other)
    assert raised.value.status == 403 and raised.value.code == "model_not_allowed"
    assert "svc-b" in raised.value.message and raised.value.param == "model"


def _request(db, secret: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(authorizer=Authorizer(db)))
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                    "app": app, "headers": [(b"authorization", f"Bearer {secret}".encode())]})


async def test_an_expired_key_is_refused_and_a_live_one_carries_its_limits():
    db = AsyncMongoMockClient(tz_aware=True)["maas"]
    platform = SimpleNamespace(mongo=db)
    now = datetime.now(UTC)
    await db["users"].insert_one({"_id": "u1", "username": "alice", "tenant_id": "t1", "role": "user"})
    for secret, expires_at in (("sk-expired-key-0001", now - timedelta(seconds=1)),
                               ("sk-live-key-000001", now + timedelta(hours=1))):
        await db[API_KEYS].insert_one({"_id": hash_token(secret), "key_id": secret, "user_id": "u1", "tenant_id": "t1",
                                       "username": "alice", "role": "user", "expires_at": expires_at,
                                       "allowed_models": ["svc-a"], "rpm_limit": 7, "tpm_limit": None})
    try:
        with pytest.raises(OpenAIError) as raised:
            await authenticate(platform, _request(db, "sk-expired-key-0001"), action=INFERENCE_CALL)
        assert raised.value.status == 401 and raised.value.code == "expired_api_key"
        live = await authenticate(platform, _request(db, "sk-live-key-000001"), action=INFERENCE_CALL)
        assert live.allowed_models == frozenset({"svc-a"}) and live.rpm_limit == 7 and live.tpm_limit is None
    finally:
        for secret in ("sk-expired-key-0001", "sk-live-key-000001"):
            keys.callers().forget(hash_token(secret))
