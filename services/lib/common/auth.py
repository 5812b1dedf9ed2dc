"""Bearer-token authentication and tenant scoping, shared by every service's HTTP routes.

Tokens are random secrets shown once; only their SHA-256 is stored. Each token is one session
(services/gateway/accounts/sessions.py): it expires (``MAAS_TOKEN_TTL_HOURS``, default 12) and can be revoked.
Every stored document carries a ``tenant_id`` and every query filters by the caller's.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request

from services.lib.common import audit
from services.lib.common.errors import ApiError
from services.lib.common.settings import Settings

TOKENS = "access_tokens"
USERS = "users"
ACTIVE = "active"          # a user's ``status``; "disabled" users (and their tokens and keys) are refused
TOKEN_PREFIX = "maas-"
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    username: str
    role: str                   # the platform's: "admin" is the platform administrator
    # The account's (services/lib/iam): "admin" administers its users, groups and policies and implicitly
    # has FullAccess; a "member" has exactly the policies of its groups. Users made before accounts
    # had members are each alone in their account, its administrator.
    account_role: str = "admin"
    group_ids: tuple[str, ...] = ()
    iam_rev: int = 0            # bumped by every IAM change in the account: the key of cached grants


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unauthorized(message: str, *, code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def session_expiry(doc: dict, settings: Settings) -> datetime:
    """When a token expires (tokens issued before expiry existed: their age limit)."""
    expires_at = doc.get("expires_at")
    if expires_at is None:
        return doc["created_at"] + timedelta(hours=settings.token_ttl_hours)
    return expires_at


async def _touch(mongo, doc: dict, now: datetime) -> None:
    """Note the session's last use, at most once a minute: not a write per request."""
    seen = doc.get("last_seen_at")
    if seen is None or now - seen >= SESSION_TOUCH_INTERVAL:
        await mongo[TOKENS].update_one({"_id": doc["_id"]}, {"$set": {"last_seen_at": now}})


async def current_principal(request: Request) -> Principal:
    token = bearer_token(request)
    platform = request.app.state.platform
    doc = await platform.mongo[TOKENS].find_one({"_id": hash_token(token)})   # one indexed lookup
    if doc is None:
        raise _unauthorized("invalid or revoked token")
    now = datetime.now(UTC)
    expires_at = session_expiry(doc, platform.settings)
    if expires_at <= now:
        raise _unauthorized(f"the token expired at {expires_at.isoformat(timespec='seconds')}; log in again "
                            "(refresh a token with POST /api/v1/auth/refresh before it expires)", code="token_expired")
    user = await platform.mongo[USERS].find_one({"_id": doc["user_id"]}, USER_FIELDS)   # one indexed lookup
    refuse_inactive(user, username=doc["username"])
    await _touch(platform.mongo, doc, now)
    principal = principal_of(user)
    route = request.scope.get("route")
    audit.note_principal(principal, route=getattr(route, "path", None))
    return principal


# What authorizing a caller reads of the user document (never the password hash).
USER_FIELDS = {"username": 1, "tenant_id": 1, "role": 1, "status": 1, "account_role": 1, "group_ids": 1,
               "iam_rev": 1}


def refuse_inactive(user: dict | None, *, username: str) -> None:
    """401 for a deleted or disabled user: their tokens (and API keys) stop working at once."""
    if user is None:
        raise _unauthorized(f"the user '{username}' no longer exists", code="user_deleted")
    if user.get("status", ACTIVE) != ACTIVE:
        raise _unauthorized(f"the user '{username}' is disabled; an administrator of the account can enable it "
                            "again", code="user_disabled")


def principal_of(user: dict) -> Principal:
    return Principal(user_id=user["_id"], tenant_id=user["tenant_id"], username=user["username"],
                     role=user.get("role", "user"), account_role=user.get("account_role", "admin"),
                     group_ids=tuple(user.get("group_ids") or ()), iam_rev=user.get("iam_rev", 0))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
