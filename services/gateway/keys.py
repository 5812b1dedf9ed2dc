"""API keys for the OpenAI-compatible API (guide 11, "鉴权管理").

At most 5 per user; the secret is shown once at creation and only its SHA-256 is stored. A per-user
counter document, changed in the same transaction as the key, keeps the limit under concurrent
creates (two transactions changing one document cannot both commit).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts import new_id
from services.common.auth import CurrentPrincipal, Principal, hash_token
from services.common.context import Platform, get_platform, transact
from services.common.errors import ApiError, not_found
from services.common.mongo import IndexSpec
from services.common.validation import limited_text
from services.gateway.oai_errors import OpenAIError
from services.gateway.settings import gateway_settings
from services.gateway.views import ReadThroughView

API_KEYS = "api_keys"
API_KEY_COUNTS = "api_key_counts"
KEY_PREFIX = "sk-"

INDEXES: list[IndexSpec] = [
    (API_KEYS, [("key_id", ASCENDING)], {"unique": True}),
    (API_KEYS, [("user_id", ASCENDING)], {}),
]


@dataclass(frozen=True)
class Caller:
    """Who is calling the OpenAI API: the key's owner (key_id 'playground' for console chats)."""
    user_id: str
    tenant_id: str
    username: str
    role: str
    key_id: str


def mask(secret: str) -> str:
    return f"{secret[:len(KEY_PREFIX) + 4]}...{secret[-4:]}"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: limited_text(256) = ""


async def create_key(platform: Platform, *, principal: Principal, description: str) -> dict:
    limit = gateway_settings().max_api_keys
    secret = KEY_PREFIX + secrets.token_urlsafe(36)
    doc = {"_id": hash_token(secret), "key_id": new_id(), "user_id": principal.user_id,
           "tenant_id": principal.tenant_id, "username": principal.username, "role": principal.role,
           "description": description, "masked": mask(secret), "created_at": datetime.now(UTC), "last_used_at": None}
    too_many = ApiError(409, "api_key_limit", f"a user can have at most {limit} API keys; delete one first")

    async def insert(uow) -> None:
        try:
            counted = await uow.collection(API_KEY_COUNTS).find_one_and_update(
                {"_id": principal.user_id, "count": {"$lt": limit}}, {"$inc": {"count": 1}},
                upsert=True, return_document=ReturnDocument.AFTER, session=uow.session)
        except DuplicateKeyError:  # the counter exists and is at the limit
            raise too_many from None
        if counted["count"] > limit:
            raise too_many
        await uow.collection(API_KEYS).insert_one(doc, session=uow.session)

    await transact(platform, insert)
    return {**_view(doc), "key": secret}


def _view(doc: dict) -> dict:
    return {"id": doc["key_id"], "masked_key": doc["masked"], "description": doc.get("description", ""),
            "created_at": doc["created_at"], "last_used_at": doc.get("last_used_at")}


async def list_keys(platform: Platform, *, principal: Principal) -> list[dict]:
    return [_view(d) async for d in platform.mongo[API_KEYS].find({"user_id": principal.user_id}).sort(
        "created_at", ASCENDING)]


async def delete_key(platform: Platform, *, principal: Principal, key_id: str) -> None:
    deleted: dict = {}

    async def remove(uow) -> None:
        doc = await uow.collection(API_KEYS).find_one_and_delete(
            {"key_id": key_id, "user_id": principal.user_id}, session=uow.session)
        if doc is None:
            raise not_found("API key", key_id)
        await uow.collection(API_KEY_COUNTS).update_one({"_id": principal.user_id}, {"$inc": {"count": -1}},
                                                        session=uow.session)
        deleted.update(doc)

    await transact(platform, remove)
    callers().forget(deleted["_id"])


# ------------------------------------------------------------------------------------ authentication

_callers: ReadThroughView | None = None


def callers() -> ReadThroughView:
    """Known keys' callers by the key's SHA-256, kept fresh in the background (services.gateway.views)."""
    global _callers
    if _callers is None:
        _callers = ReadThroughView(max_age=gateway_settings().key_cache_seconds, remember_missing=False)
    return _callers


async def _find_caller(platform: Platform, digest: str) -> Caller | None:
    doc = await platform.mongo[API_KEYS].find_one({"_id": digest})
    if doc is None:
        return None
    return Caller(user_id=doc["user_id"], tenant_id=doc["tenant_id"], username=doc.get("username", ""),
                  role=doc.get("role", "user"), key_id=doc["key_id"])


async def authenticate(platform: Platform, request: Request) -> Caller:
    """The caller of an /v1 request from ``Authorization: Bearer <API key>``; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if not header:
        raise OpenAIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <API key>'; "
                          "create one under API keys (/api/v1/api-keys).", code="missing_api_key")
    if scheme.lower() != "bearer" or not secret:
        raise OpenAIError(401, "The Authorization header must be 'Bearer <API key>'.", code="invalid_api_key")
    digest = hash_token(secret)
    caller = await callers().get(digest, lambda: _find_caller(platform, digest))
    if caller is None:
        shown = mask(secret) if len(secret) > 12 else "***"
        raise OpenAIError(401, f"Incorrect API key provided: {shown}. Create a key under API keys.",
                          code="invalid_api_key")
    return caller


# ------------------------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/v1/api-keys", tags=["api keys"])


@router.post("", status_code=201, summary="Create an API key (the secret is shown only in this answer)")
async def create(body: KeyCreate, principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    return await create_key(platform, principal=principal, description=body.description)


@router.get("", summary="My API keys (masked) with their usage")
async def list_(principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    from services.gateway.metering import usage_by_key

    keys = await list_keys(platform, principal=principal)
    usage = await usage_by_key(platform, user_id=principal.user_id)
    empty = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {"items": [{**k, "usage": usage.get(k["id"], empty)} for k in keys],
            "max_keys": gateway_settings().max_api_keys}


@router.delete("/{key_id}", status_code=204, summary="Delete an API key (it stops working at once)")
async def delete(key_id: str, principal: CurrentPrincipal, platform: Platform = Depends(get_platform)):
    await delete_key(platform, principal=principal, key_id=key_id)
    return Response(status_code=204)
