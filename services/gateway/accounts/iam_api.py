"""Access control over HTTP: the action catalogue, my permissions, and the account's IAM users, user
groups and policies (guide chapter 2). Use cases in iam_service.py; authorization in services/lib/iam."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.errors import bad_request
from services.lib.common.validation import ResourceName, limited_text
from services.gateway.accounts import iam_service as iam
from services.lib.iam.actions import ACTIONS, ALL, suggestion
from services.lib.iam.authorize import Authorized, decide, granting_policy, grants
from services.lib.iam.policy import MAX_CHARS

router = APIRouter(prefix="/api/v1", tags=["access control"])

Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$")]
AccountRole = Literal["admin", "member"]
PolicyText = Annotated[str | dict, Field(description=(
    "the policy in the guide's JSON format, as text (errors name its line and column) or as an object: "
    '{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["maas:models:*"]}]}'))]


def _text(document: str | dict) -> str:
    return document if isinstance(document, str) else json.dumps(document, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------------------------ catalogue, me

@router.get("/iam/actions", summary="Every action a policy can name, with what it allows")
async def list_actions(_: Principal = Authorized("maas:actions:list")):
    items = [{"action": a.name, "resource": a.resource, "verb": a.verb, "description": a.description,
              "read_only": a.read_only, "self_service": a.self_service} for a in (ACTIONS[n] for n in ALL)]
    return {"total": len(items), "items": items}


@router.get("/auth/permissions", summary="Which of these actions I may perform, and the policy that would "
            "grant the others (for the console's 'access restricted' dialog)")
async def my_permissions(
        request: Request,
        action: Annotated[list[str] | None, Query(max_length=len(ALL), description=(
            "an action to check (repeat the parameter); none: every action"))] = None,
        principal: Principal = Authorized("maas:auth:listPermissions")):
    wanted = list(dict.fromkeys(action)) if action else list(ALL)
    for name in wanted:
        if name not in ACTIONS:
            raise bad_request(f"action: unknown action '{name}'{suggestion(name)}", field="action")
    grant = await grants(request).grant(principal)
    decisions = {name: decide(principal, grant, name) for name in wanted}
    denied = [{"action": n, "reason": d.reason, "grantable": d.grantable}
              for n, d in decisions.items() if not d.allowed]
    missing = [d["action"] for d in denied if d["grantable"]]
    return {"allowed": [n for n, d in decisions.items() if d.allowed], "denied": denied,
            "policy": granting_policy(missing) if missing else None}


# ------------------------------------------------------------------------------------ users

class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Username
    password: str = Field(min_length=8, max_length=256)
    account_role: AccountRole = Field("member", description="admin: administers the account's users, groups "
                                      "and policies and has every action; member: its groups' policies")
    group_ids: list[str] = Field(default_factory=list, max_length=100)


class UserUpdate(BaseModel):
    """At least one of the fields; null is not a value (leave a field out to keep it)."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    status: Literal["active", "disabled"] = Field(None, description="a disabled user's tokens and API keys are "
                                                  "refused at once")
    account_role: AccountRole = Field(None, description="admin or member")


@router.get("/iam/users", summary="The users of my account")
async def list_users(principal: Principal = Authorized("maas:users:list"), platform: Platform = Depends(get_platform)):
    return await iam.list_users(platform, tenant_id=principal.tenant_id)


@router.post("/iam/users", status_code=201, summary="Create an IAM user in my account (account administrators)")
async def create_user(body: UserCreate, principal: Principal = Authorized("maas:users:create"),
                      platform: Platform = Depends(get_platform)):
    return await iam.create_user(platform, tenant_id=principal.tenant_id, username=body.username,
                                 password=body.password, account_role=body.account_role, group_ids=body.group_ids)


@router.get("/iam/users/{user_id}", summary="A user of my account")
async def get_user(user_id: str, principal: Principal = Authorized("maas:users:get"),
                   platform: Platform = Depends(get_platform)):
    return await iam.get_user(platform, tenant_id=principal.tenant_id, user_id=user_id)


@router.patch("/iam/users/{user_id}", summary="Enable or disable a user, or change its account role")
async def update_user(user_id: str, body: UserUpdate, principal: Principal = Authorized("maas:users:update"),
                      platform: Platform = Depends(get_platform)):
    return await iam.update_user(platform, principal=principal, user_id=user_id, status=body.status,
                                 account_role=body.account_role)


@router.delete("/users/{user_id}", summary="Delete a user: their sessions and API keys stop working at once",
               responses={409: {"description": "The account's last administrator (only the platform "
                                               "administrator may remove it: the account is then disabled)"}})
async def delete_user(user_id: str, principal: Principal = Authorized("maas:users:delete"),
                      platform: Platform = Depends(get_platform)):
    return await iam.delete_user(platform, principal=principal, user_id=user_id)


# ------------------------------------------------------------------------------------ groups

class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ResourceName
    description: limited_text(256) = ""
    policy_ids: list[str] = Field(default_factory=list, description="system policy names (FullAccess, "
                                  "CommonOperations, ReadOnly) or custom policy ids")


class GroupUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ResourceName | None = None
    description: limited_text(256) | None = None


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str


class PolicyAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy_id: str = Field(description="a system policy's name or a custom policy's id")


@router.get("/iam/groups", summary="The user groups of my account")
async def list_groups(principal: Principal = Authorized("maas:groups:list"),
                      platform: Platform = Depends(get_platform)):
    return await iam.list_groups(platform, tenant_id=principal.tenant_id)


@router.post("/iam/groups", status_code=201, summary="Create a user group")
async def create_group(body: GroupCreate, principal: Principal = Authorized("maas:groups:create"),
                       platform: Platform = Depends(get_platform)):
    return await iam.create_group(platform, tenant_id=principal.tenant_id, name=body.name,
                                  description=body.description, policy_ids=body.policy_ids)


@router.get("/iam/groups/{group_id}", summary="A user group with its members and policies")
async def get_group(group_id: str, principal: Principal = Authorized("maas:groups:get"),
                    platform: Platform = Depends(get_platform)):
    return await iam.get_group(platform, tenant_id=principal.tenant_id, group_id=group_id)


@router.patch("/iam/groups/{group_id}", summary="Rename a user group or change its description")
async def update_group(group_id: str, body: GroupUpdate, principal: Principal = Authorized("maas:groups:update"),
                       platform: Platform = Depends(get_platform)):
    return await iam.update_group(platform, tenant_id=principal.tenant_id, group_id=group_id, name=body.name,
                                  description=body.description)


@router.delete("/iam/groups/{group_id}", status_code=204, summary="Delete a user group (its members leave it)")
async def delete_group(group_id: str, principal: Principal = Authorized("maas:groups:delete"),
                       platform: Platform = Depends(get_platform)):
    await iam.delete_group(platform, tenant_id=principal.tenant_id, group_id=group_id)
    return Response(status_code=204)


@router.post("/iam/groups/{group_id}/members", summary="Add a user of my account to a group")
async def add_member(group_id: str, body: MemberAdd, principal: Principal = Authorized("maas:groups:addMember"),
                     platform: Platform = Depends(get_platform)):
    return await iam.add_member(platform, tenant_id=principal.tenant_id, group_id=group_id, user_id=body.user_id)


@router.delete("/iam/groups/{group_id}/members/{user_id}", status_code=204, summary="Remove a user from a group")
async def remove_member(group_id: str, user_id: str, principal: Principal = Authorized("maas:groups:removeMember"),
                        platform: Platform = Depends(get_platform)):
    await iam.remove_member(platform, tenant_id=principal.tenant_id, group_id=group_id, user_id=user_id)
    return Response(status_code=204)


@router.post("/iam/groups/{group_id}/policies", summary="Give a group a policy (effective on its members' next call)")
async def attach_policy(group_id: str, body: PolicyAttach,
                        principal: Principal = Authorized("maas:groups:attachPolicy"),
                        platform: Platform = Depends(get_platform)):
    return await iam.attach_policy(platform, tenant_id=principal.tenant_id, group_id=group_id,
                                   policy_id=body.policy_id)


@router.delete("/iam/groups/{group_id}/policies/{policy_id}", status_code=204, summary="Take a policy from a group")
async def detach_policy(group_id: str, policy_id: str, principal: Principal = Authorized("maas:groups:detachPolicy"),
                        platform: Platform = Depends(get_platform)):
    await iam.detach_policy(platform, tenant_id=principal.tenant_id, group_id=group_id, policy_id=policy_id)
    return Response(status_code=204)


# ------------------------------------------------------------------------------------ policies

class PolicyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ResourceName
    description: limited_text(256) = ""
    document: PolicyText


class PolicyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ResourceName | None = None
    description: limited_text(256) | None = None
    document: PolicyText | None = None


class PolicyCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document: PolicyText


@router.get("/iam/policies", summary="System policies and my account's custom policies")
async def list_policies(principal: Principal = Authorized("maas:policies:list"),
                        platform: Platform = Depends(get_platform)):
    return await iam.list_policies(platform, tenant_id=principal.tenant_id)


@router.post("/iam/policies/validate", summary=f"Check a policy document (at most {MAX_CHARS} characters) "
             "without saving it; errors name the line and column")
async def validate_policy(body: PolicyCheck, _: Principal = Authorized("maas:policies:validate")):
    return iam.validate_policy(_text(body.document))


@router.post("/iam/policies", status_code=201, summary="Create a custom policy")
async def create_policy(body: PolicyCreate, principal: Principal = Authorized("maas:policies:create"),
                        platform: Platform = Depends(get_platform)):
    return await iam.create_policy(platform, tenant_id=principal.tenant_id, name=body.name,
                                   description=body.description, document=_text(body.document))


@router.get("/iam/policies/{policy_id}", summary="A policy (by a system policy's name or a custom policy's id)")
async def get_policy(policy_id: str, principal: Principal = Authorized("maas:policies:get"),
                     platform: Platform = Depends(get_platform)):
    return await iam.get_policy(platform, tenant_id=principal.tenant_id, policy_id=policy_id)


@router.patch("/iam/policies/{policy_id}", summary="Change a custom policy (effective on the next call)")
async def update_policy(policy_id: str, body: PolicyUpdate, principal: Principal = Authorized("maas:policies:update"),
                        platform: Platform = Depends(get_platform)):
    return await iam.update_policy(platform, tenant_id=principal.tenant_id, policy_id=policy_id, name=body.name,
                                   description=body.description,
                                   document=_text(body.document) if body.document is not None else None)


@router.delete("/iam/policies/{policy_id}", status_code=204, summary="Delete a custom policy no group holds")
async def delete_policy(policy_id: str, principal: Principal = Authorized("maas:policies:delete"),
                        platform: Platform = Depends(get_platform)):
    await iam.delete_policy(platform, tenant_id=principal.tenant_id, policy_id=policy_id)
    return Response(status_code=204)
