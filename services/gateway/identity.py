"""Users, login and access tokens. The first start creates the bootstrap admin and shows it once."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from pymongo import ASCENDING

from contracts import new_id
from services.common.auth import TOKENS, CurrentPrincipal, hash_token, new_token
from services.common.context import Platform, get_platform
from services.common.errors import ApiError
from services.common.mongo import IndexSpec
from services.common.storage_acl import grant_bucket

USERS = "users"
INDEXES: list[IndexSpec] = [
    (USERS, [("username", ASCENDING)], {"unique": True}),
    (TOKENS, [("user_id", ASCENDING)], {}),
]


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, salt_hex, digest_hex = stored.split("$")
    return hmac.compare_digest(hash_password(password, salt=bytes.fromhex(salt_hex)), stored)


@dataclass(frozen=True)
class BootstrapAdmin:
    username: str
    password: str
    token: str
    tenant_id: str


async def create_user(platform: Platform, *, username: str, password: str, role: str = "admin",
                      tenant_id: str | None = None) -> dict:
    user = {"_id": new_id(), "username": username, "password_hash": hash_password(password), "role": role,
            "tenant_id": tenant_id or new_id(), "created_at": datetime.now(UTC)}
    await platform.mongo[USERS].insert_one(user)
    # Each tenant gets a default bucket to upload weights and datasets into.
    await grant_bucket(platform, bucket=default_bucket(user["tenant_id"]), tenant_id=user["tenant_id"])
    return user


def default_bucket(tenant_id: str) -> str:
    return f"maas-{tenant_id[:12]}"


async def issue_token(platform: Platform, user: dict, *, name: str = "login") -> str:
    token = new_token()
    await platform.mongo[TOKENS].insert_one({
        "_id": hash_token(token), "user_id": user["_id"], "tenant_id": user["tenant_id"],
        "username": user["username"], "role": user["role"], "name": name, "created_at": datetime.now(UTC)})
    return token


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


@router.post("/auth/login", summary="Exchange username and password for a bearer token",
             responses={401: {"description": "Wrong username or password"}})
async def login(body: LoginRequest, platform: Platform = Depends(get_platform)):
    user = await platform.mongo[USERS].find_one({"username": body.username})
    if user is None or not verify_password(body.password, user["password_hash"]):
        raise ApiError(401, "unauthorized", "wrong username or password")
    return {"token": await issue_token(platform, user), "token_type": "bearer", "username": user["username"],
            "tenant_id": user["tenant_id"]}


@router.get("/auth/me", summary="Who the token belongs to")
async def me(principal: CurrentPrincipal):
    return {"user_id": principal.user_id, "username": principal.username, "tenant_id": principal.tenant_id,
            "role": principal.role, "default_bucket": default_bucket(principal.tenant_id)}


@router.post("/users", status_code=201, summary="Create a user in a new tenant (admins only)")
async def add_user(body: UserCreate, principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "only admins can create users")
    if await platform.mongo[USERS].find_one({"username": body.username}):
        raise ApiError(409, "conflict", f"user '{body.username}' already exists", field="username")
    user = await create_user(platform, username=body.username, password=body.password, role="user")
    return {"user_id": user["_id"], "username": user["username"], "tenant_id": user["tenant_id"],
            "default_bucket": default_bucket(user["tenant_id"])}
