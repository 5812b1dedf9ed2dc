"""The authorization dependency and the grants it evaluates, on a small app over mongomock: a caller's
policies come from their account role and their groups (scoped to their account), a denied call is a
403 naming the action, a disabled or deleted user is refused, and cached grants follow ``iam_rev``."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request
from mongomock_motor import AsyncMongoMockClient

from services.lib.common.auth import TOKENS, USERS, Principal, hash_token, principal_of
from services.lib.common.errors import install_error_handlers
from services.lib.common.settings import get_settings
from services.lib.iam.authorize import Authorized, decide
from services.lib.iam.store import GROUPS, POLICIES, Authorizer

NOW = datetime.now(UTC)


@pytest.fixture
def db():
    return AsyncMongoMockClient(tz_aware=True)["maas"]


async def add_user(db, user_id: str, *, tenant: str = "t1", account_role: str = "member", groups=(), rev=0,
                   status: str = "active", role: str = "user") -> str:
    await db[USERS].insert_one({"_id": user_id, "username": user_id, "tenant_id": tenant, "role": role,
                                "account_role": account_role, "status": status, "group_ids": list(groups),
                                "iam_rev": rev})
    token = f"maas-token-of-{user_id}"
    await db[TOKENS].insert_one({"_id": hash_token(token), "user_id": user_id, "tenant_id": tenant,
                                 "username": user_id, "role": role, "created_at": NOW,
                                 "expires_at": NOW + timedelta(hours=1), "last_seen_at": NOW})
    return token


async def principal(db, user_id: str) -> Principal:
    return principal_of(await db[USERS].find_one({"_id": user_id}))


async def test_an_account_admin_has_full_access_and_a_member_only_its_groups_policies(db):
    await db[GROUPS].insert_one({"_id": "g-read", "tenant_id": "t1", "name": "readers", "policy_ids": ["ReadOnly"]})
    await db[POLICIES].insert_one({"_id": "p-deploy", "tenant_id": "t1", "name": "deployers",
                                   "statements": [{"effect": "Allow", "actions": ["maas:services:create"]}]})
    await db[GROUPS].insert_one({"_id": "g-deploy", "tenant_id": "t1", "name": "deploy", "policy_ids": ["p-deploy"]})
    await add_user(db, "boss", account_role="admin")
    await add_user(db, "nobody")
    await add_user(db, "reader", groups=["g-read", "g-deploy"])
    grants = Authorizer(db)

    boss = await grants.grant(await principal(db, "boss"))
    assert boss.allows("maas:pools:create") and boss.allows("maas:models:delete")
    nobody = await grants.grant(await principal(db, "nobody"))
    assert not nobody.allows("maas:models:list") and nobody.allows("maas:auth:getMe")   # self-service only
    reader = await grants.grant(await principal(db, "reader"))
    assert reader.allows("maas:models:list") and reader.allows("maas:services:create")
    assert not reader.allows("maas:services:delete")
    assert reader.decide("maas:services:delete").reason == "no policy allows it"


async def test_another_accounts_groups_and_policies_are_never_read(db):
    # Ids of another account's group and policy on a user (written by a bug or by hand) grant nothing.
    await db[POLICIES].insert_one({"_id": "p-other", "tenant_id": "t2", "name": "all",
                                   "statements": [{"effect": "Allow", "actions": ["maas:*:*"]}]})
    await db[GROUPS].insert_one({"_id": "g-other", "tenant_id": "t2", "name": "all", "policy_ids": ["FullAccess"]})
    await db[GROUPS].insert_one({"_id": "g-mine", "tenant_id": "t1", "name": "mine", "policy_ids": ["p-other"]})
    await add_user(db, "sneaky", groups=["g-other", "g-mine"])
    grant = await Authorizer(db).grant(await principal(db, "sneaky"))
    assert not grant.allows("maas:models:list")


async def test_grants_are_cached_per_iam_rev(db):
    await db[GROUPS].insert_one({"_id": "g", "tenant_id": "t1", "name": "g", "policy_ids": ["ReadOnly"]})
    await add_user(db, "alice", groups=["g"])
    grants = Authorizer(db)
    assert (await grants.grant(await principal(db, "alice"))).allows("maas:models:list")
    await db[GROUPS].update_one({"_id": "g"}, {"$set": {"policy_ids": []}})
    # Without the bump every IAM change makes, the cached grant stands...
    assert (await grants.grant(await principal(db, "alice"))).allows("maas:models:list")
    await db[USERS].update_one({"_id": "alice"}, {"$inc": {"iam_rev": 1}})
    # ...with it, the next call reads the groups again.
    assert not (await grants.grant(await principal(db, "alice"))).allows("maas:models:list")


async def test_iam_changes_need_the_accounts_admin_and_platform_actions_the_platforms(db):
    await db[GROUPS].insert_one({"_id": "g", "tenant_id": "t1", "name": "g", "policy_ids": ["FullAccess"]})
    await add_user(db, "member", groups=["g"])
    await add_user(db, "boss", account_role="admin")
    await add_user(db, "root", account_role="admin", role="admin")
    grants = Authorizer(db)
    member = await principal(db, "member")
    decision = decide(member, await grants.grant(member), "maas:groups:addMember")
    assert not decision.allowed and not decision.grantable and "administrator of the account" in decision.reason
    assert decide(member, await grants.grant(member), "maas:users:list").allowed
    boss = await principal(db, "boss")
    assert decide(boss, await grants.grant(boss), "maas:groups:addMember").allowed
    assert not decide(boss, await grants.grant(boss), "maas:accounts:create").allowed
    root = await principal(db, "root")
    assert decide(root, await grants.grant(root), "maas:accounts:create").allowed


def small_app(db) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.platform = SimpleNamespace(mongo=db, settings=get_settings())
    app.state.authorizer = Authorizer(db)

    @app.post("/models")
    async def create(request: Request, principal: Principal = Authorized("maas:models:create")):
        return {"user": principal.username, "action": request.state.action}

    return app


async def call(app, token: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post("/models", headers={"Authorization": f"Bearer {token}"})


async def test_a_denied_call_is_a_403_naming_the_action_and_the_policy_to_ask_for(db):
    app = small_app(db)
    token = await add_user(db, "bob")
    r = await call(app, token)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "forbidden"
    assert "user 'bob' lacks the action maas:models:create: no policy allows it" in error["message"]
    assert '"Action": ["maas:models:create"]' in error["message"]


async def test_an_explicit_deny_is_named_and_not_offered_as_a_grant(db):
    await db[POLICIES].insert_one({"_id": "p", "tenant_id": "t1", "name": "no-models",
                                   "statements": [{"effect": "Deny", "actions": ["maas:models:*"]}]})
    await db[GROUPS].insert_one({"_id": "g", "tenant_id": "t1", "name": "g", "policy_ids": ["FullAccess", "p"]})
    r = await call(small_app(db), await add_user(db, "carol", groups=["g"]))
    message = r.json()["error"]["message"]
    assert r.status_code == 403 and "the policy 'no-models' denies it" in message and "lift that Deny" in message


async def test_an_allowed_call_records_its_action(db):
    r = await call(small_app(db), await add_user(db, "boss", account_role="admin"))
    assert r.status_code == 200 and r.json() == {"user": "boss", "action": "maas:models:create"}


async def test_a_disabled_or_deleted_users_token_is_refused_at_once(db):
    app = small_app(db)
    token = await add_user(db, "dave", account_role="admin")
    assert (await call(app, token)).status_code == 200
    await db[USERS].update_one({"_id": "dave"}, {"$set": {"status": "disabled"}})
    r = await call(app, token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "user_disabled"
    await db[USERS].delete_one({"_id": "dave"})
    r = await call(app, token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "user_deleted"


def test_an_unknown_action_cannot_be_declared():
    with pytest.raises(ValueError, match="did you mean maas:models:create"):
        Authorized("maas:model:create")
