"""Login sessions: each bearer token is one, with an expiry, a last-seen time and the client address.

A token expires ``MAAS_TOKEN_TTL_HOURS`` (default 12) after it was issued; ``POST /auth/refresh``
exchanges a valid token for a new one (same session, new expiry) and revokes the old one in the
same transaction. ``POST /auth/logout`` revokes the token used; a user lists their sessions and
revokes any of them. Only the token's SHA-256 is stored (its ``_id``, looked up once per request by
services/lib/common/auth.py); a session's public ``session_id`` is what the API shows.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pymongo import ASCENDING, DESCENDING

from contracts import new_id
from contracts.timestamps import instants, rfc3339
from services.lib.common.auth import TOKENS, Principal, bearer_token, hash_token, new_token, session_expiry
from services.lib.common.context import Platform, get_platform, transact
from services.lib.common.errors import ApiError, not_found
from services.lib.common.mongo import IndexSpec
from services.lib.common.outbox import UnitOfWork
from services.lib.common.paging import Offset
from services.lib.iam.authorize import Authorized

LEGACY_ID_LENGTH = 24

INDEXES: list[IndexSpec] = [
    (TOKENS, [("session_id", ASCENDING)], {}),
    # Expired sessions go by themselves (tokens issued before expiry existed have no expires_at: they
    # are refused by age and deleted by logout or a password change).
    (TOKENS, [("expires_at", ASCENDING)], {"expireAfterSeconds": 0}),
]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _user_agent(request: Request | None) -> str:
    return (request.headers.get("user-agent", "") if request is not None else "")[:256]


def _ttl(platform: Platform) -> timedelta:
    return timedelta(hours=platform.settings.token_ttl_hours)


async def open_session(uow: UnitOfWork, *, user: dict, ttl: timedelta, name: str, client: str | None,
                       user_agent: str = "") -> tuple[str, dict]:
    """A new session for ``user`` inside ``uow``: (the token, shown once; the stored document)."""
    token, now = new_token(), datetime.now(UTC)
    doc = {"_id": hash_token(token), "session_id": new_id(), "user_id": user["_id"], "tenant_id": user["tenant_id"],
           "username": user["username"], "role": user["role"], "name": name, "created_at": now,
           "expires_at": now + ttl, "last_seen_at": now, "client": client, "user_agent": user_agent}
    await uow.collection(TOKENS).insert_one(doc, session=uow.session)
    return token, doc


async def start_session(platform: Platform, *, user: dict, name: str, request: Request | None = None) -> dict:
    """Open a session in a unit of work of its own (a login's audit record commits with it); the
    answer of a login."""
    async def work(uow: UnitOfWork):
        return await open_session(uow, user=user, ttl=_ttl(platform), name=name,
                                  client=client_address(request) if request is not None else None,
                                  user_agent=_user_agent(request))
    token, doc = await transact(platform, work)
    return token_answer(token, doc)


def token_answer(token: str, doc: dict) -> dict:
    expires_in = int((doc["expires_at"] - datetime.now(UTC)).total_seconds())
    return {"token": token, "token_type": "bearer", "username": doc["username"], "tenant_id": doc["tenant_id"],
            "session_id": doc["session_id"], "expires_at": rfc3339(doc["expires_at"]), "expires_in": max(0, expires_in)}


async def refresh_session(platform: Platform, *, token: str, request: Request) -> dict:
    """Revoke ``token`` and issue its successor in the same session, in one transaction."""
    async def work(uow: UnitOfWork):
        old = await uow.collection(TOKENS).find_one_and_delete({"_id": hash_token(token)}, session=uow.session)
        if old is None or session_expiry(old, platform.settings) <= datetime.now(UTC):
            # Refreshed or revoked meanwhile (a concurrent refresh): the token is spent.
            raise ApiError(401, "unauthorized", "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        new, now = new_token(), datetime.now(UTC)
        doc = {**old, "_id": hash_token(new), "session_id": old.get("session_id") or new_id(),
               "expires_at": now + _ttl(platform), "last_seen_at": now, "refreshed_at": now,
               "client": client_address(request), "user_agent": _user_agent(request)}
        await uow.collection(TOKENS).insert_one(doc, session=uow.session)
        return new, doc

    new, doc = await transact(platform, work)
    return token_answer(new, doc)


async def revoke_token(platform: Platform, *, token: str) -> None:
    async def work(uow: UnitOfWork):
        await uow.collection(TOKENS).delete_one({"_id": hash_token(token)}, session=uow.session)
    await transact(platform, work)


def _session_id(doc: dict) -> str:
    # Tokens issued before sessions existed have no session_id: the start of their digest names them.
    return doc.get("session_id") or doc["_id"][:LEGACY_ID_LENGTH]


def _session_filter(*, user_id: str, session_id: str) -> dict:
    if len(session_id) == LEGACY_ID_LENGTH and all(c in "0123456789abcdef" for c in session_id):
        return {"user_id": user_id, "$or": [{"session_id": session_id},
                                            {"session_id": None, "_id": {"$regex": f"^{session_id}"}}]}
    return {"user_id": user_id, "session_id": session_id}


def session_view(doc: dict, *, current_digest: str, settings) -> dict:
    return instants({"id": _session_id(doc), "name": doc.get("name", "login"), "created_at": doc["created_at"],
                     "last_seen_at": doc.get("last_seen_at"), "expires_at": session_expiry(doc, settings),
                     "client": doc.get("client"), "user_agent": doc.get("user_agent", ""),
                     "current": doc["_id"] == current_digest})


async def list_sessions(platform: Platform, *, user_id: str, current_token: str, offset: int, limit: int) -> dict:
    now = datetime.now(UTC)
    docs = [d async for d in platform.mongo[TOKENS].find({"user_id": user_id}).sort("created_at", DESCENDING)
            if session_expiry(d, platform.settings) > now]
    digest = hash_token(current_token)
    return {"total": len(docs), "items": [session_view(d, current_digest=digest, settings=platform.settings)
                                          for d in docs[offset:offset + limit]]}


async def revoke_session(platform: Platform, *, user_id: str, session_id: str) -> None:
    async def work(uow: UnitOfWork):
        result = await uow.collection(TOKENS).delete_many(_session_filter(user_id=user_id, session_id=session_id),
                                                          session=uow.session)
        if not result.deleted_count:
            raise not_found("session", session_id)
    await transact(platform, work)


async def revoke_other_sessions(uow: UnitOfWork, *, user_id: str, keep_token: str) -> int:
    result = await uow.collection(TOKENS).delete_many({"user_id": user_id, "_id": {"$ne": hash_token(keep_token)}},
                                                      session=uow.session)
    return result.deleted_count


# ------------------------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/v1/auth", tags=["sessions"])


@router.post("/refresh", summary="Exchange a valid token for a new one (the old one stops working)")
async def refresh(request: Request, _: Principal = Authorized("maas:auth:refresh"),
                  platform: Platform = Depends(get_platform)):
    return await refresh_session(platform, token=bearer_token(request), request=request)


@router.post("/logout", status_code=204, summary="Revoke the token this call is made with")
async def logout(request: Request, _: Principal = Authorized("maas:auth:logout"),
                 platform: Platform = Depends(get_platform)):
    await revoke_token(platform, token=bearer_token(request))
    return Response(status_code=204)


@router.get("/sessions", summary="My sessions (logins that have not expired): never their tokens")
async def sessions(request: Request, principal: Principal = Authorized("maas:sessions:list"), offset: Offset = 0,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50, platform: Platform = Depends(get_platform)):
    return await list_sessions(platform, user_id=principal.user_id, current_token=bearer_token(request),
                               offset=offset, limit=limit)


@router.delete("/sessions/{session_id}", status_code=204, summary="Revoke one of my sessions")
async def delete_session(session_id: str, principal: Principal = Authorized("maas:sessions:delete"),
                         platform: Platform = Depends(get_platform)):
    await revoke_session(platform, user_id=principal.user_id, session_id=session_id)
    return Response(status_code=204)
