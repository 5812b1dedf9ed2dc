"""API keys for the OpenAI-compatible API (guide 11, "鉴权管理").

At most 5 per user; the secret is shown once at creation and only its SHA-256 is stored. A per-user
counter document, changed in the same transaction as the key, keeps the limit under concurrent
creates (two transactions changing one document cannot both commit).

A key may carry limits (as LiteLLM's and GPUStack's keys do): an expiry (401 ``expired_api_key``
after it), the services it may call (403 ``model_not_allowed`` for others; ``/v1/models`` lists only
those) and requests/tokens per minute (429, limits.py). ``last_used_at`` is written with the
metering (services/gateway/quotas/metering.py).
"""
from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import Request
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts import new_id
from contracts.timestamps import instants
from services.lib.common.auth import ACTIVE, USER_FIELDS, USERS, Principal, hash_token, principal_of
from services.lib.common.context import Platform, transact
from services.lib.common.errors import ApiError, not_found
from services.lib.common.mongo import IndexSpec
from services.gateway.keys.models import Caller, KeyLimitsFields, KeyUpdate
from services.gateway.oai_errors import OpenAIError
from services.gateway.settings import gateway_settings
from services.gateway.views import ReadThroughView
from services.lib.iam.authorize import decide, grants
from services.lib.iam.store import Grants

API_KEYS = "api_keys"
API_KEY_COUNTS = "api_key_counts"
KEY_PREFIX = "sk-"

INDEXES: list[IndexSpec] = [
    (API_KEYS, [("key_id", ASCENDING)], {"unique": True}),
    (API_KEYS, [("user_id", ASCENDING)], {}),
]


def mask(secret: str) -> str:
    return f"{secret[:len(KEY_PREFIX) + 4]}...{secret[-4:]}"


def _limits(fields: KeyLimitsFields, only: set[str] | None = None) -> dict:
    values = {"expires_at": fields.expires_at,
              "allowed_models": sorted(set(fields.allowed_models)) if fields.allowed_models is not None else None,
              "rpm_limit": fields.rpm_limit, "tpm_limit": fields.tpm_limit}
    return {k: v for k, v in values.items() if only is None or k in only}


async def create_key(platform: Platform, *, principal: Principal, description: str,
                     limits: KeyLimitsFields | None = None) -> dict:
    limit = gateway_settings().max_api_keys
    secret = KEY_PREFIX + secrets.token_urlsafe(36)
    doc = {"_id": hash_token(secret), "key_id": new_id(), "user_id": principal.user_id,
           "tenant_id": principal.tenant_id, "username": principal.username, "role": principal.role,
           "description": description, "masked": mask(secret), "created_at": datetime.now(UTC), "last_used_at": None,
           **_limits(limits or KeyLimitsFields())}
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
    expires_at = doc.get("expires_at")
    return instants({"id": doc["key_id"], "masked_key": doc["masked"], "description": doc.get("description", ""),
            "created_at": doc["created_at"], "last_used_at": doc.get("last_used_at"), "expires_at": expires_at,
            "expired": expires_at is not None and expires_at <= datetime.now(UTC),
            "allowed_models": doc.get("allowed_models"), "rpm_limit": doc.get("rpm_limit"),
            "tpm_limit": doc.get("tpm_limit")})


async def list_keys(platform: Platform, *, principal: Principal) -> list[dict]:
    return [_view(d) async for d in platform.mongo[API_KEYS].find({"user_id": principal.user_id}).sort(
        "created_at", ASCENDING)]


async def update_key(platform: Platform, *, principal: Principal, key_id: str, changes: KeyUpdate) -> dict:
    given = changes.model_fields_set
    fields = _limits(changes, only=given)
    if "description" in given:
        fields["description"] = changes.description or ""
    updated: dict = {}

    async def change(uow) -> None:
        mine = {"key_id": key_id, "user_id": principal.user_id}
        if fields:
            doc = await uow.collection(API_KEYS).find_one_and_update(
                mine, {"$set": fields}, return_document=ReturnDocument.AFTER, session=uow.session)
        else:
            doc = await uow.collection(API_KEYS).find_one(mine, session=uow.session)
        if doc is None:
            raise not_found("API key", key_id)
        updated.update(doc)

    await transact(platform, change)
    callers().forget(updated["_id"])   # this gateway at once; the others within key_cache_seconds
    return _view(updated)


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


async def _find_caller(platform: Platform, authorizer: Grants, digest: str) -> Caller | None:
    doc = await platform.mongo[API_KEYS].find_one({"_id": digest})
    if doc is None:
        return None
    user = await platform.mongo[USERS].find_one({"_id": doc["user_id"]}, USER_FIELDS)
    if user is None:
        return None   # the owner was deleted (and the key with them)
    owner = principal_of(user)
    active = user.get("status", ACTIVE) == ACTIVE
    allowed = doc.get("allowed_models")
    return Caller(user_id=doc["user_id"], tenant_id=doc["tenant_id"], username=owner.username,
                  role=owner.role, key_id=doc["key_id"], expires_at=doc.get("expires_at"),
                  allowed_models=frozenset(allowed) if allowed is not None else None,
                  rpm_limit=doc.get("rpm_limit"), tpm_limit=doc.get("tpm_limit"),
                  account_role=owner.account_role, active=active,
                  grant=await authorizer.grant(owner) if active else None)


async def authenticate(platform: Platform, request: Request, *, action: str) -> Caller:
    """The caller of an /v1 request from ``Authorization: Bearer <API key>``, allowed to perform
    ``action`` (the route's, services.lib.iam.authorize); 401 or 403 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if not header:
        raise OpenAIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <API key>'; "
                          "create one under API keys (/api/v1/api-keys).", code="missing_api_key")
    if scheme.lower() != "bearer" or not secret:
        raise OpenAIError(401, "The Authorization header must be 'Bearer <API key>'.", code="invalid_api_key")
    digest = hash_token(secret)
    caller = await callers().get(digest, lambda: _find_caller(platform, grants(request), digest))
    if caller is None:
        shown = mask(secret) if len(secret) > 12 else "***"
        raise OpenAIError(401, f"Incorrect API key provided: {shown}. Create a key under API keys.",
                          code="invalid_api_key")
    if caller.expires_at is not None and caller.expires_at <= datetime.now(UTC):
        raise OpenAIError(401, f"This API key expired at {caller.expires_at.isoformat(timespec='seconds')}. "
                          "Create a new key under API keys.", code="expired_api_key")
    if not caller.active:
        raise OpenAIError(401, f"The owner of this API key, '{caller.username}', is disabled.",
                          code="user_disabled")
    decision = decide(caller, caller.grant, action)
    if not decision.allowed:
        raise OpenAIError(403, f"The owner of this API key, '{caller.username}', lacks the action {action}: "
                          f"{decision.reason}.", code="permission_denied")
    return caller


def check_allowed(caller: Caller, service) -> None:
    """403 when the key is limited to other services than ``service``."""
    if not caller.may_call(service):
        raise OpenAIError(403, f"This API key may not call '{service.name}': it is limited to "
                          f"{', '.join(sorted(caller.allowed_models))}.", param="model", code="model_not_allowed")
