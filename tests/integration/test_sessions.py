"""Sessions on the real platform (issue 13, items 7 and 9): tokens expire, refresh rotates them, logout
and session revocation end them at once, a password change ends the other sessions, and failed logins
are throttled per username (429 with Retry-After) the same for unknown usernames."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from contracts import new_id
from services.lib.common.auth import TOKENS, hash_token
from services.gateway.accounts.login_throttle import LOGIN_FAILURES

pytestmark = pytest.mark.integration

PASSWORD = "first-password-1"


@pytest.fixture(autouse=True)
async def loopback_not_blocked(running_platform):
    """Every test client is 127.0.0.1: the failed logins of these tests (and of earlier ones) must not
    block that address for the tests that follow."""
    failures = running_platform["platform"].mongo[LOGIN_FAILURES]
    await failures.delete_many({"_id": "client:127.0.0.1"})
    yield
    await failures.delete_many({"_id": "client:127.0.0.1"})


@pytest.fixture
async def user(api) -> str:
    username = f"sess-{new_id()[:8]}"
    r = await api.post("/api/v1/users", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return username


async def login(anonymous, username: str, password: str = PASSWORD) -> httpx.Response:
    return await anonymous.post("/api/v1/auth/login", json={"username": username, "password": password})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def me(anonymous, token: str) -> httpx.Response:
    return await anonymous.get("/api/v1/auth/me", headers=bearer(token))


async def test_a_login_is_a_session_that_expires_and_refresh_rotates_its_token(anonymous, user):
    r = await login(anonymous, user)
    assert r.status_code == 200, r.text
    first = r.json()
    expires_at = datetime.fromisoformat(first["expires_at"])
    assert timedelta(hours=11, minutes=59) < expires_at - datetime.now(UTC) <= timedelta(hours=12)
    assert 43000 < first["expires_in"] <= 43200 and first["token_type"] == "bearer"

    r = await anonymous.post("/api/v1/auth/refresh", headers=bearer(first["token"]))
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["token"] != first["token"] and second["session_id"] == first["session_id"]
    assert (await me(anonymous, second["token"])).status_code == 200
    old = await me(anonymous, first["token"])
    assert old.status_code == 401 and old.json()["error"]["code"] == "unauthorized"
    again = await anonymous.post("/api/v1/auth/refresh", headers=bearer(first["token"]))
    assert again.status_code == 401   # a refreshed token cannot be refreshed once more

    r = await anonymous.get("/api/v1/auth/sessions", headers=bearer(second["token"]))
    assert r.status_code == 200, r.text
    [session] = r.json()["items"]
    assert session["id"] == first["session_id"] and session["current"] is True
    assert session["client"] == "127.0.0.1" and session["last_seen_at"] and session["expires_at"]
    assert second["token"] not in r.text and first["token"] not in r.text and "token" not in session


async def test_an_expired_token_is_refused(running_platform, anonymous, user):
    token = (await login(anonymous, user)).json()["token"]
    assert (await me(anonymous, token)).status_code == 200
    # Twelve hours later, as far as the token knows.
    await running_platform["platform"].mongo[TOKENS].update_one(
        {"_id": hash_token(token)}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    r = await me(anonymous, token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"
    assert r.headers["www-authenticate"] == "Bearer"
    assert (await anonymous.post("/api/v1/auth/refresh", headers=bearer(token))).status_code == 401


async def test_logout_revokes_only_the_token_used(anonymous, user):
    laptop, phone = (await login(anonymous, user)).json()["token"], (await login(anonymous, user)).json()["token"]
    r = await anonymous.post("/api/v1/auth/logout", headers=bearer(laptop))
    assert r.status_code == 204
    r = await me(anonymous, laptop)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert (await me(anonymous, phone)).status_code == 200


async def test_a_user_revokes_their_own_sessions_and_no_one_elses(api, anonymous, user):
    laptop, phone = (await login(anonymous, user)).json(), (await login(anonymous, user)).json()
    r = await anonymous.get("/api/v1/auth/sessions", headers=bearer(laptop["token"]))
    listed = {s["id"]: s for s in r.json()["items"]}
    assert set(listed) == {laptop["session_id"], phone["session_id"]} and r.json()["total"] == 2
    assert listed[laptop["session_id"]]["current"] and not listed[phone["session_id"]]["current"]

    # Another user cannot end (or learn of) this user's session: 404 as for one that never existed.
    other = f"sess-{new_id()[:8]}"
    assert (await api.post("/api/v1/users", json={"username": other, "password": PASSWORD})).status_code == 201
    stranger = (await login(anonymous, other)).json()["token"]
    r = await anonymous.delete(f"/api/v1/auth/sessions/{phone['session_id']}", headers=bearer(stranger))
    assert r.status_code == 404
    assert (await me(anonymous, phone["token"])).status_code == 200

    r = await anonymous.delete(f"/api/v1/auth/sessions/{phone['session_id']}", headers=bearer(laptop["token"]))
    assert r.status_code == 204
    assert (await me(anonymous, phone["token"])).status_code == 401
    assert (await me(anonymous, laptop["token"])).status_code == 200
    r = await anonymous.delete(f"/api/v1/auth/sessions/{phone['session_id']}", headers=bearer(laptop["token"]))
    assert r.status_code == 404


async def test_a_password_change_needs_the_current_one_and_ends_the_other_sessions(anonymous, user):
    here, elsewhere = (await login(anonymous, user)).json()["token"], (await login(anonymous, user)).json()["token"]
    change = {"current_password": "not-the-password", "new_password": "second-password-2"}
    r = await anonymous.post("/api/v1/auth/password", headers=bearer(here), json=change)
    assert r.status_code == 400 and r.json()["error"]["field"] == "current_password"
    r = await anonymous.post("/api/v1/auth/password", headers=bearer(here),
                             json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "new_password"

    r = await anonymous.post("/api/v1/auth/password", headers=bearer(here),
                             json={"current_password": PASSWORD, "new_password": "second-password-2"})
    assert r.status_code == 200 and r.json() == {"revoked_sessions": 1}
    assert (await me(anonymous, here)).status_code == 200
    assert (await me(anonymous, elsewhere)).status_code == 401
    assert (await login(anonymous, user)).status_code == 401
    assert (await login(anonymous, user, "second-password-2")).status_code == 200


async def test_failed_logins_are_throttled_for_known_and_unknown_usernames_alike(anonymous, user):
    unknown = f"nobody-{new_id()[:8]}"
    for name in (user, unknown):
        statuses = [(await login(anonymous, name, "wrong-password")).status_code for _ in range(5)]
        assert statuses == [401] * 5
        assert (await login(anonymous, name, "wrong-password")).status_code == 401   # the 6th: now it waits
        refused = await login(anonymous, name, PASSWORD)   # even the right password, while it waits
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_login_attempts"
        assert int(refused.headers["retry-after"]) >= 1
    # Once the wait has passed, the right password works (and clears the count).
    await asyncio.sleep(int(refused.headers["retry-after"]))
    assert (await login(anonymous, user)).status_code == 200
