"""Users, login and access tokens. The first start creates the bootstrap admin and shows it once."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from pymongo import ASCENDING

from contracts import new_id
from services.lib.common import audit
from services.lib.common.auth import ACTIVE, TOKENS, Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.errors import ApiError
from services.lib.common.mongo import IndexSpec
from services.lib.readmodels.buckets import grant_bucket
from services.gateway.accounts.iam_service import record_account
from services.gateway.accounts.login_throttle import LOGIN_FAILURES, LoginThrottle, ThrottleRules
from services.gateway.accounts.passwords import (  # noqa: F401  (hash_password, verify_password: imported from here)
    hash_password,
    hash_password_off_loop,
    password_matches_off_loop,
    verify_password,
)
from services.gateway.accounts.sessions import client_address, start_session
from services.gateway.settings import gateway_settings
from services.lib.iam.authorize import Authorized

USERS = "users"
LOGIN_ACTION = "maas:auth:login"   # public: no authorization dependency names it, the audit log does
INDEXES: list[IndexSpec] = [
    (USERS, [("username", ASCENDING)], {"unique": True}),
    (TOKENS, [("user_id", ASCENDING)], {}),
]


@dataclass(frozen=True)
class BootstrapAdmin:
    username: str
    password: str
    token: str
    tenant_id: str


async def create_user(platform: Platform, *, username: str, password: str, role: str = "admin",
                      tenant_id: str | None = None) -> dict:
    password_hash = await hash_password_off_loop(password)
    # The first user of a new account administers it (services/lib/iam; members: iam_service.create_user).
    user = {"_id": new_id(), "username": username, "password_hash": password_hash, "role": role,
            "tenant_id": tenant_id or new_id(), "account_role": "admin", "status": ACTIVE, "group_ids": [],
            "iam_rev": 0, "created_at": datetime.now(UTC)}
    async with platform.uow() as uow:   # with the request's audit record
        await uow.collection(USERS).insert_one(user, session=uow.session)
        if tenant_id is None:
            await record_account(uow, tenant_id=user["tenant_id"], created_by=username)
    # Each tenant gets a default bucket to upload weights and datasets into.
    await grant_bucket(platform, bucket=default_bucket(user["tenant_id"]), tenant_id=user["tenant_id"])
    return user


def default_bucket(tenant_id: str) -> str:
    return f"maas-{tenant_id[:12]}"


async def issue_token(platform: Platform, user: dict, *, name: str = "login") -> str:
    """A session for ``user`` opened by the platform itself (the bootstrap admin's), not by a login call."""
    return (await start_session(platform, user=user, name=name))["token"]


async def ensure_bootstrap_admin(platform: Platform) -> BootstrapAdmin | None:
    """Create the admin on the very first start; returns its secrets then, and None ever after."""
    if await platform.mongo[USERS].count_documents({}, limit=1):
        return None
    password = secrets.token_urlsafe(12)
    user = await create_user(platform, username="admin", password=password, role="admin")
    token = await issue_token(platform, user, name="bootstrap")
    return BootstrapAdmin(username="admin", password=password, token=token, tenant_id=user["tenant_id"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$")
    password: str = Field(min_length=8, max_length=256)


router = APIRouter(prefix="/api/v1", tags=["identity"])


def login_throttle(platform: Platform) -> LoginThrottle:
    return LoginThrottle(platform.mongo[LOGIN_FAILURES], ThrottleRules.from_settings(gateway_settings()))


@router.post("/auth/login", summary="Exchange username and password for a bearer token (a session)",
             responses={401: {"description": "Wrong username or password"},
                        429: {"description": "Too many failed logins for this username or from this address "
                                             "(see Retry-After)"}})
async def login(body: LoginRequest, request: Request, platform: Platform = Depends(get_platform)):
    audit.note_action(LOGIN_ACTION)
    user = await platform.mongo[USERS].find_one({"username": body.username})
    # Failed and refused logins are recorded too, in the account of the user tried (if it exists).
    audit.note_actor(user_id=user["_id"] if user else None, username=body.username,
                     tenant_id=user["tenant_id"] if user else None)
    client = client_address(request)
    throttle = login_throttle(platform)
    await throttle.check(username=body.username, client=client)
    # An unknown username costs one scrypt too (passwords.py): the answer time tells nothing.
    if not await password_matches_off_loop(body.password, user["password_hash"] if user else None):
        await throttle.failed(username=body.username, client=client)
        raise ApiError(401, "unauthorized", "wrong username or password")
    if user.get("status", ACTIVE) != ACTIVE:   # told only to whoever knows the password
        raise ApiError(401, "user_disabled", f"the user '{user['username']}' is disabled; an administrator of the "
                       "account can enable it again")
    await throttle.succeeded(username=body.username)
    return await start_session(platform, user=user, name="login", request=request)


@router.get("/auth/me", summary="Who the token belongs to")
async def me(principal: Principal = Authorized("maas:auth:getMe")):
    return {"user_id": principal.user_id, "username": principal.username, "tenant_id": principal.tenant_id,
            "role": principal.role, "account_role": principal.account_role, "group_ids": list(principal.group_ids),
            "default_bucket": default_bucket(principal.tenant_id)}


@router.post("/users", status_code=201, summary="Create an account with this user as its administrator "
             "(the platform administrator only)")
async def add_user(body: UserCreate, principal: Principal = Authorized("maas:accounts:create"),
                   platform: Platform = Depends(get_platform)):
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "only admins can create users")
    if await platform.mongo[USERS].find_one({"username": body.username}):
        raise ApiError(409, "conflict", f"user '{body.username}' already exists", field="username")
    user = await create_user(platform, username=body.username, password=body.password, role="user")
    return {"user_id": user["_id"], "username": user["username"], "tenant_id": user["tenant_id"],
            "default_bucket": default_bucket(user["tenant_id"])}
