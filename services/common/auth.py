"""Bearer-token authentication and tenant scoping, shared by every service's HTTP routes.

Tokens are random secrets shown once; only their SHA-256 is stored. Every stored document carries a
``tenant_id`` and every query filters by the caller's.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import ApiError

TOKENS = "access_tokens"
TOKEN_PREFIX = "maas-"


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    username: str
    role: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    token = bearer_token(request)
    doc = await request.app.state.platform.mongo[TOKENS].find_one({"_id": hash_token(token)})
    if doc is None:
        raise _unauthorized("invalid or revoked token")
    return Principal(user_id=doc["user_id"], tenant_id=doc["tenant_id"], username=doc["username"], role=doc["role"])


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
