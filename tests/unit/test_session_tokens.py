"""Login tokens expire: the check in services/lib/common/auth.py (mongomock; the session routes, refresh
and logout run on the real servers in tests/integration/test_sessions.py)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from mongomock_motor import AsyncMongoMockClient
from starlette.requests import Request

from services.lib.common.auth import TOKENS, current_principal, hash_token
from services.lib.common.errors import ApiError
from services.lib.common.settings import Settings

SETTINGS = Settings(token_ttl_hours=12)


@pytest.fixture
def platform():
    db = AsyncMongoMockClient(tz_aware=True)["maas"]
    return SimpleNamespace(mongo=db, settings=SETTINGS)


def request_with(platform, token: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(platform=platform))
    return Request({"type": "http", "method": "GET", "path": "/api/v1/auth/me", "query_string": b"", "app": app,
                    "headers": [(b"authorization", f"Bearer {token}".encode())]})


async def add_session(platform, token: str, **fields) -> None:
    await platform.mongo["users"].update_one(
        {"_id": "u1"}, {"$set": {"username": "alice", "tenant_id": "t1", "role": "user"}}, upsert=True)
    await platform.mongo[TOKENS].insert_one({"_id": hash_token(token), "user_id": "u1", "tenant_id": "t1",
                                             "username": "alice", "role": "user", **fields})


async def refusal(platform, token: str) -> ApiError:
    with pytest.raises(ApiError) as raised:
        await current_principal(request_with(platform, token))
    assert raised.value.status == 401 and raised.value.headers == {"WWW-Authenticate": "Bearer"}
    return raised.value


async def test_an_expired_token_is_refused_saying_so(platform):
    now = datetime.now(UTC)
    await add_session(platform, "maas-old", created_at=now - timedelta(hours=13), expires_at=now - timedelta(hours=1))
    error = await refusal(platform, "maas-old")
    assert error.code == "token_expired" and "expired" in error.message and "/api/v1/auth/refresh" in error.message


async def test_a_token_from_before_expiry_existed_expires_by_its_age(platform):
    now = datetime.now(UTC)
    await add_session(platform, "maas-legacy-old", created_at=now - timedelta(hours=12, seconds=1))
    await add_session(platform, "maas-legacy-new", created_at=now - timedelta(hours=11))
    assert (await refusal(platform, "maas-legacy-old")).code == "token_expired"
    assert (await current_principal(request_with(platform, "maas-legacy-new"))).username == "alice"


async def test_a_revoked_or_unknown_token_is_refused(platform):
    assert (await refusal(platform, "maas-never-issued")).code == "unauthorized"


async def test_a_live_token_works_and_notes_its_last_use_at_most_once_a_minute(platform):
    now = datetime.now(UTC)
    seen = now - timedelta(seconds=30)
    await add_session(platform, "maas-live", created_at=now, expires_at=now + timedelta(hours=1), last_seen_at=seen)
    principal = await current_principal(request_with(platform, "maas-live"))
    assert (principal.user_id, principal.tenant_id) == ("u1", "t1")
    doc = await platform.mongo[TOKENS].find_one({"_id": hash_token("maas-live")})
    assert doc["last_seen_at"] == seen.replace(microsecond=seen.microsecond // 1000 * 1000)   # not written again
    await platform.mongo[TOKENS].update_one({"_id": hash_token("maas-live")},
                                            {"$set": {"last_seen_at": now - timedelta(minutes=2)}})
    await current_principal(request_with(platform, "maas-live"))
    doc = await platform.mongo[TOKENS].find_one({"_id": hash_token("maas-live")})
    assert doc["last_seen_at"] > now - timedelta(seconds=5)
