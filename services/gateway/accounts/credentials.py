"""Changing one's own password: it needs the current one, and it ends every other session.

A wrong current password counts as a failed login of the username (login_throttle.py), so a stolen
token cannot be used to guess the password. The new hash and the revocation of the other sessions
commit in one transaction; API keys are not sessions and keep working.
"""
from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from services.lib.common.auth import Principal, bearer_token
from services.lib.common.context import Platform, get_platform, transact
from services.lib.common.errors import ApiError, bad_request
from services.lib.common.outbox import UnitOfWork
from services.gateway.accounts.identity import USERS, login_throttle
from services.gateway.accounts.passwords import hash_password_off_loop, password_matches_off_loop
from services.gateway.accounts.sessions import client_address, revoke_other_sessions
from services.lib.iam.authorize import Authorized


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=8, max_length=256)


async def change_password(platform: Platform, *, principal: Principal, token: str, current_password: str,
                          new_password: str, client: str | None) -> int:
    """Set the new password and revoke the user's other sessions; how many were revoked."""
    if new_password == current_password:
        raise bad_request("new_password must differ from current_password", field="new_password")
    throttle = login_throttle(platform)
    await throttle.check(username=principal.username, client=client)
    user = await platform.mongo[USERS].find_one({"_id": principal.user_id})
    if user is None:
        raise ApiError(401, "unauthorized", "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if not await password_matches_off_loop(current_password, user["password_hash"]):
        await throttle.failed(username=principal.username, client=client)
        raise bad_request("current_password is not this user's password", field="current_password",
                          code="wrong_password")
    new_hash = await hash_password_off_loop(new_password)

    async def work(uow: UnitOfWork) -> int:
        # Only if the hash is still the one checked: two concurrent changes cannot both win.
        changed = await uow.collection(USERS).update_one(
            {"_id": user["_id"], "password_hash": user["password_hash"]},
            {"$set": {"password_hash": new_hash, "password_changed_at": datetime.now(UTC)}}, session=uow.session)
        if not changed.modified_count:
            raise ApiError(409, "conflict", "the password was changed meanwhile; sign in again", field="current_password")
        return await revoke_other_sessions(uow, user_id=user["_id"], keep_token=token)

    revoked = await transact(platform, work)
    await throttle.succeeded(username=principal.username)
    return revoked


router = APIRouter(prefix="/api/v1/auth", tags=["sessions"])


@router.post("/password", summary="Change my password (needs the current one; ends my other sessions)",
             responses={429: {"description": "Too many wrong passwords for this user (see Retry-After)"}})
async def password(body: PasswordChange, request: Request,
                   principal: Principal = Authorized("maas:auth:changePassword"),
                   platform: Platform = Depends(get_platform)):
    revoked = await change_password(platform, principal=principal, token=bearer_token(request),
                                    current_password=body.current_password, new_password=body.new_password,
                                    client=client_address(request))
    return {"revoked_sessions": revoked}
