"""Account administration (guide chapter 2): IAM users, user groups and custom policies.

Every query is scoped to the caller's account (``tenant_id``); only ``delete_user`` lets the platform
administrator reach into another account. Every change that can alter what someone may do bumps
``iam_rev`` on every user of the account in the same transaction (services/lib/iam/store.py): cached
grants go stale on the next call, and two concurrent changes of one account conflict, so the
"keep one administrator" rule cannot be raced past.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts import new_id
from contracts.timestamps import rfc3339
from services.lib.common.auth import ACTIVE, TOKENS, USERS, Principal
from services.lib.common.context import Platform, transact
from services.lib.common.errors import ApiError, bad_request, conflict, not_found
from services.lib.common.outbox import UnitOfWork
from services.gateway.accounts.passwords import hash_password_off_loop
from services.gateway.keys import service as keys
from services.lib.iam.policy import PolicyError, matching, parse_policy
from services.lib.iam.store import ACCOUNTS, GROUPS, POLICIES
from services.lib.iam.system_policies import SYSTEM_POLICIES

ADMIN, MEMBER = "admin", "member"
DISABLED = "disabled"
MAX_POLICIES_PER_GROUP = 50
# An active administrator of the account: users made before accounts had members have no
# account_role and are their account's administrator.
_ACTIVE_ADMIN = {"account_role": {"$ne": MEMBER}, "status": {"$ne": DISABLED}}


async def _bump(uow: UnitOfWork, tenant_id: str) -> None:
    await uow.collection(USERS).update_many({"tenant_id": tenant_id}, {"$inc": {"iam_rev": 1}}, session=uow.session)


def _is_active_admin(user: dict) -> bool:
    return user.get("account_role", ADMIN) == ADMIN and user.get("status", ACTIVE) == ACTIVE


def _forget_keys_of(digests: list[str]) -> None:
    # This gateway stops accepting the keys at once; other replicas within MAAS_GATEWAY_KEY_CACHE_SECONDS.
    for digest in digests:
        keys.callers().forget(digest)


def _instant(value):
    return None if value is None else rfc3339(value)


# ------------------------------------------------------------------------------------ users

def user_view(doc: dict, groups: dict[str, str]) -> dict:
    group_ids = [g for g in doc.get("group_ids", []) if g in groups]
    return {"id": doc["_id"], "username": doc["username"], "account_role": doc.get("account_role", ADMIN),
            "status": doc.get("status", ACTIVE), "platform_admin": doc.get("role") == "admin",
            "groups": [{"id": g, "name": groups[g]} for g in group_ids], "created_at": _instant(doc.get("created_at"))}


async def _group_names(platform: Platform, tenant_id: str) -> dict[str, str]:
    return {g["_id"]: g["name"] async for g in platform.mongo[GROUPS].find({"tenant_id": tenant_id}, {"name": 1})}


async def list_users(platform: Platform, *, tenant_id: str) -> dict:
    groups = await _group_names(platform, tenant_id)
    users = [user_view(u, groups) async for u in platform.mongo[USERS].find(
        {"tenant_id": tenant_id}, {"password_hash": 0}).sort("username", ASCENDING)]
    return {"total": len(users), "items": users}


async def get_user(platform: Platform, *, tenant_id: str, user_id: str) -> dict:
    doc = await platform.mongo[USERS].find_one({"_id": user_id, "tenant_id": tenant_id}, {"password_hash": 0})
    if doc is None:
        raise not_found("user", user_id)
    return user_view(doc, await _group_names(platform, tenant_id))


async def _check_groups(uow: UnitOfWork, tenant_id: str, group_ids: list[str]) -> None:
    found = {g["_id"] async for g in uow.collection(GROUPS).find(
        {"_id": {"$in": group_ids}, "tenant_id": tenant_id}, {"_id": 1}, session=uow.session)}
    for group_id in group_ids:
        if group_id not in found:
            raise not_found("user group", group_id)


async def create_user(platform: Platform, *, tenant_id: str, username: str, password: str, account_role: str,
                      group_ids: list[str]) -> dict:
    """An IAM user of the caller's account (a member unless made an administrator)."""
    if await platform.mongo[USERS].find_one({"username": username}, {"_id": 1}):
        raise conflict(f"user '{username}' already exists", field="username")
    password_hash = await hash_password_off_loop(password)
    group_ids = sorted(set(group_ids))
    doc = {"_id": new_id(), "username": username, "password_hash": password_hash, "role": "user",
           "tenant_id": tenant_id, "account_role": account_role, "status": ACTIVE, "group_ids": group_ids,
           "iam_rev": 0, "created_at": datetime.now(UTC)}

    async def work(uow: UnitOfWork) -> None:
        await _check_groups(uow, tenant_id, group_ids)
        try:
            await uow.collection(USERS).insert_one(doc, session=uow.session)
        except DuplicateKeyError:
            raise conflict(f"user '{username}' already exists", field="username") from None
        await _bump(uow, tenant_id)

    await transact(platform, work)
    return await get_user(platform, tenant_id=tenant_id, user_id=doc["_id"])


async def _admin_rule(uow: UnitOfWork, *, principal: Principal, target: dict, what: str) -> bool:
    """Whether taking ``target``'s administration away leaves the account without an administrator;
    409 when the caller is the account's own administrator (only the platform's may do that)."""
    if target.get("role") == "admin":
        raise conflict(f"the platform administrator '{target['username']}' cannot be {what}",
                       code="platform_administrator")
    if not _is_active_admin(target):
        return False
    others = await uow.collection(USERS).count_documents(
        {"tenant_id": target["tenant_id"], "_id": {"$ne": target["_id"]}, **_ACTIVE_ADMIN}, session=uow.session)
    if others:
        return False
    if principal.role != "admin":
        raise conflict(f"'{target['username']}' is the last administrator of the account and cannot be {what}; "
                       "make another user an administrator first", code="last_administrator")
    return True


async def _disable_account(uow: UnitOfWork, *, tenant_id: str, by: Principal, reason: str) -> None:
    """An account left without an administrator (by the platform administrator) is disabled whole."""
    now = datetime.now(UTC)
    await uow.collection(ACCOUNTS).update_one(
        {"_id": tenant_id}, {"$set": {"status": DISABLED, "disabled_at": now, "disabled_by": by.username,
                                      "disabled_reason": reason}, "$setOnInsert": {"created_at": now}},
        upsert=True, session=uow.session)
    await uow.collection(USERS).update_many({"tenant_id": tenant_id}, {"$set": {"status": DISABLED}},
                                            session=uow.session)


async def _key_digests(uow: UnitOfWork, query: dict) -> list[str]:
    return [k["_id"] async for k in uow.collection(keys.API_KEYS).find(query, {"_id": 1}, session=uow.session)]


async def update_user(platform: Platform, *, principal: Principal, user_id: str, status: str | None = None,
                      account_role: str | None = None) -> dict:
    """Enable or disable a user of the caller's account, or change its account role."""
    digests: list[str] = []

    async def work(uow: UnitOfWork) -> None:
        target = await uow.collection(USERS).find_one({"_id": user_id, "tenant_id": principal.tenant_id},
                                                      session=uow.session)
        if target is None:
            raise not_found("user", user_id)
        changes = {k: v for k, v in (("status", status), ("account_role", account_role)) if v is not None}
        if not changes:
            raise bad_request("give status or account_role to change", field="body")
        demoted = changes.get("status") == DISABLED or changes.get("account_role") == MEMBER
        account_goes = demoted and await _admin_rule(
            uow, principal=principal, target=target, what="disabled" if status == DISABLED else "made a member")
        await uow.collection(USERS).update_one({"_id": user_id}, {"$set": changes}, session=uow.session)
        await _bump(uow, principal.tenant_id)
        if account_goes:
            await _disable_account(uow, tenant_id=principal.tenant_id, by=principal,
                                   reason=f"its last administrator '{target['username']}' was removed")
        if changes.get("status") == DISABLED or account_goes:
            digests.extend(await _key_digests(uow, {"tenant_id": principal.tenant_id} if account_goes
                                              else {"user_id": user_id}))

    await transact(platform, work)
    _forget_keys_of(digests)
    return await get_user(platform, tenant_id=principal.tenant_id, user_id=user_id)


async def delete_user(platform: Platform, *, principal: Principal, user_id: str) -> dict:
    """Delete a user, their sessions and their API keys (they stop working at once). The platform
    administrator may delete a user of any account, its last administrator included: the account is
    then disabled. Answers what happened to the account."""
    scope = {"_id": user_id} if principal.role == "admin" else {"_id": user_id, "tenant_id": principal.tenant_id}
    outcome: dict = {}

    async def work(uow: UnitOfWork) -> None:
        target = await uow.collection(USERS).find_one(scope, session=uow.session)
        if target is None:
            raise not_found("user", user_id)
        tenant_id = target["tenant_id"]
        account_goes = await _admin_rule(uow, principal=principal, target=target, what="deleted")
        digests = await _key_digests(uow, {"tenant_id": tenant_id} if account_goes else {"user_id": user_id})
        await uow.collection(USERS).delete_one({"_id": user_id}, session=uow.session)
        await uow.collection(TOKENS).delete_many({"user_id": user_id}, session=uow.session)
        await uow.collection(keys.API_KEYS).delete_many({"user_id": user_id}, session=uow.session)
        await uow.collection(keys.API_KEY_COUNTS).delete_one({"_id": user_id}, session=uow.session)
        await _bump(uow, tenant_id)
        if account_goes:
            await _disable_account(uow, tenant_id=tenant_id, by=principal,
                                   reason=f"its last administrator '{target['username']}' was deleted")
        outcome.update(digests=digests, tenant_id=tenant_id, account_disabled=account_goes)

    await transact(platform, work)
    _forget_keys_of(outcome["digests"])
    return {"user_id": user_id, "tenant_id": outcome["tenant_id"], "account_disabled": outcome["account_disabled"]}


# ------------------------------------------------------------------------------------ policies

def _system_view(name: str) -> dict:
    policy = SYSTEM_POLICIES[name]
    return {"id": name, "name": name, "type": "system", "description": policy.description,
            "document": json.dumps(policy.document, indent=2), "created_at": None, "updated_at": None}


def _custom_view(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "type": "custom", "description": doc.get("description", ""),
            "document": doc["document"], "created_at": _instant(doc.get("created_at")),
            "updated_at": _instant(doc.get("updated_at"))}


def parsed(document: str):
    """The policy document, or 400 ``invalid_policy`` naming the line, the column and the rule."""
    try:
        return parse_policy(document)
    except PolicyError as exc:
        raise ApiError(400, "invalid_policy", f"document: {exc}", field="document") from None


def validate_policy(document: str) -> dict:
    """What the console's JSON editor shows: the document parsed and the actions each statement covers."""
    policy = parsed(document)
    return {"valid": True, "statements": [
        {"effect": s.effect, "actions": list(s.actions),
         "matches": sorted({a for pattern in s.actions for a in matching(pattern)})} for s in policy.statements]}


async def _attached_groups(platform: Platform, *, tenant_id: str, policy_id: str) -> list[dict]:
    return [{"id": g["_id"], "name": g["name"]} async for g in platform.mongo[GROUPS].find(
        {"tenant_id": tenant_id, "policy_ids": policy_id}, {"name": 1}).sort("name", ASCENDING)]


async def list_policies(platform: Platform, *, tenant_id: str) -> dict:
    items = [_system_view(name) for name in SYSTEM_POLICIES]
    items += [_custom_view(d) async for d in platform.mongo[POLICIES].find({"tenant_id": tenant_id}).sort(
        "name", ASCENDING)]
    return {"total": len(items), "items": items}


async def get_policy(platform: Platform, *, tenant_id: str, policy_id: str) -> dict:
    if policy_id in SYSTEM_POLICIES:
        view = _system_view(policy_id)
    else:
        doc = await platform.mongo[POLICIES].find_one({"_id": policy_id, "tenant_id": tenant_id})
        if doc is None:
            raise not_found("policy", policy_id)
        view = _custom_view(doc)
    return {**view, "groups": await _attached_groups(platform, tenant_id=tenant_id, policy_id=policy_id)}


def _statements(document: str) -> list[dict]:
    return [{"effect": s.effect, "actions": list(s.actions)} for s in parsed(document).statements]


def _check_name_free(name: str) -> None:
    if name in SYSTEM_POLICIES:
        raise conflict(f"'{name}' is the name of a system policy; choose another name", field="name")


async def create_policy(platform: Platform, *, tenant_id: str, name: str, description: str, document: str) -> dict:
    _check_name_free(name)
    now = datetime.now(UTC)
    doc = {"_id": new_id(), "tenant_id": tenant_id, "name": name, "description": description,
           "document": document, "statements": _statements(document), "created_at": now, "updated_at": now}

    async def work(uow: UnitOfWork) -> None:
        try:
            await uow.collection(POLICIES).insert_one(doc, session=uow.session)
        except DuplicateKeyError:
            raise conflict(f"a policy named '{name}' already exists", field="name") from None

    await transact(platform, work)
    return {**_custom_view(doc), "groups": []}


def _refuse_system(policy_id: str, what: str) -> None:
    if policy_id in SYSTEM_POLICIES:
        raise conflict(f"'{policy_id}' is a system policy and cannot be {what}; create a custom policy instead",
                       code="system_policy")


async def update_policy(platform: Platform, *, tenant_id: str, policy_id: str, name: str | None = None,
                        description: str | None = None, document: str | None = None) -> dict:
    """Change a custom policy; a new document applies to every group holding it on the next call."""
    _refuse_system(policy_id, "changed")
    changes: dict = {"updated_at": datetime.now(UTC)}
    if name is not None:
        _check_name_free(name)
        changes["name"] = name
    if description is not None:
        changes["description"] = description
    if document is not None:
        changes.update(document=document, statements=_statements(document))

    async def work(uow: UnitOfWork) -> None:
        try:
            doc = await uow.collection(POLICIES).find_one_and_update(
                {"_id": policy_id, "tenant_id": tenant_id}, {"$set": changes}, session=uow.session,
                return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            raise conflict(f"a policy named '{name}' already exists", field="name") from None
        if doc is None:
            raise not_found("policy", policy_id)
        await _bump(uow, tenant_id)

    await transact(platform, work)
    return await get_policy(platform, tenant_id=tenant_id, policy_id=policy_id)


async def delete_policy(platform: Platform, *, tenant_id: str, policy_id: str) -> None:
    _refuse_system(policy_id, "deleted")

    async def work(uow: UnitOfWork) -> None:
        holders = [g["name"] async for g in uow.collection(GROUPS).find(
            {"tenant_id": tenant_id, "policy_ids": policy_id}, {"name": 1}, session=uow.session)]
        if holders:
            raise conflict(f"the policy is attached to the group(s) {', '.join(sorted(holders))}; detach it first",
                           code="policy_in_use")
        result = await uow.collection(POLICIES).delete_one({"_id": policy_id, "tenant_id": tenant_id},
                                                           session=uow.session)
        if not result.deleted_count:
            raise not_found("policy", policy_id)

    await transact(platform, work)


async def _check_policies(uow: UnitOfWork, tenant_id: str, policy_ids: list[str]) -> None:
    custom = [p for p in policy_ids if p not in SYSTEM_POLICIES]
    found = {p["_id"] async for p in uow.collection(POLICIES).find(
        {"_id": {"$in": custom}, "tenant_id": tenant_id}, {"_id": 1}, session=uow.session)}
    for policy_id in custom:
        if policy_id not in found:
            raise not_found("policy", policy_id)


# ------------------------------------------------------------------------------------ groups

async def _group_view(platform: Platform, doc: dict, *, members: bool) -> dict:
    names = {p: p for p in doc.get("policy_ids", []) if p in SYSTEM_POLICIES}
    custom = [p for p in doc.get("policy_ids", []) if p not in SYSTEM_POLICIES]
    if custom:
        names.update({p["_id"]: p["name"] async for p in platform.mongo[POLICIES].find(
            {"_id": {"$in": custom}, "tenant_id": doc["tenant_id"]}, {"name": 1})})
    view = {"id": doc["_id"], "name": doc["name"], "description": doc.get("description", ""),
            "policies": [{"id": p, "name": names[p], "type": "system" if p in SYSTEM_POLICIES else "custom"}
                         for p in doc.get("policy_ids", []) if p in names],
            "created_at": _instant(doc.get("created_at"))}
    people = [{"id": u["_id"], "username": u["username"]} async for u in platform.mongo[USERS].find(
        {"tenant_id": doc["tenant_id"], "group_ids": doc["_id"]}, {"username": 1}).sort("username", ASCENDING)]
    view["member_count"] = len(people)
    if members:
        view["members"] = people
    return view


async def list_groups(platform: Platform, *, tenant_id: str) -> dict:
    docs = [d async for d in platform.mongo[GROUPS].find({"tenant_id": tenant_id}).sort("name", ASCENDING)]
    items = [await _group_view(platform, d, members=False) for d in docs]
    return {"total": len(items), "items": items}


async def get_group(platform: Platform, *, tenant_id: str, group_id: str) -> dict:
    doc = await platform.mongo[GROUPS].find_one({"_id": group_id, "tenant_id": tenant_id})
    if doc is None:
        raise not_found("user group", group_id)
    return await _group_view(platform, doc, members=True)


async def create_group(platform: Platform, *, tenant_id: str, name: str, description: str,
                       policy_ids: list[str]) -> dict:
    policy_ids = list(dict.fromkeys(policy_ids))
    if len(policy_ids) > MAX_POLICIES_PER_GROUP:
        raise bad_request(f"policy_ids: a group holds at most {MAX_POLICIES_PER_GROUP} policies", field="policy_ids")
    doc = {"_id": new_id(), "tenant_id": tenant_id, "name": name, "description": description,
           "policy_ids": policy_ids, "created_at": datetime.now(UTC)}

    async def work(uow: UnitOfWork) -> None:
        await _check_policies(uow, tenant_id, policy_ids)
        try:
            await uow.collection(GROUPS).insert_one(doc, session=uow.session)
        except DuplicateKeyError:
            raise conflict(f"a user group named '{name}' already exists", field="name") from None

    await transact(platform, work)
    return await get_group(platform, tenant_id=tenant_id, group_id=doc["_id"])


async def update_group(platform: Platform, *, tenant_id: str, group_id: str, name: str | None = None,
                       description: str | None = None) -> dict:
    changes = {k: v for k, v in (("name", name), ("description", description)) if v is not None}

    async def work(uow: UnitOfWork) -> None:
        mine = {"_id": group_id, "tenant_id": tenant_id}
        try:
            doc = (await uow.collection(GROUPS).find_one_and_update(mine, {"$set": changes}, session=uow.session)
                   if changes else await uow.collection(GROUPS).find_one(mine, session=uow.session))
        except DuplicateKeyError:
            raise conflict(f"a user group named '{name}' already exists", field="name") from None
        if doc is None:
            raise not_found("user group", group_id)

    await transact(platform, work)
    return await get_group(platform, tenant_id=tenant_id, group_id=group_id)


async def delete_group(platform: Platform, *, tenant_id: str, group_id: str) -> None:
    async def work(uow: UnitOfWork) -> None:
        result = await uow.collection(GROUPS).delete_one({"_id": group_id, "tenant_id": tenant_id},
                                                         session=uow.session)
        if not result.deleted_count:
            raise not_found("user group", group_id)
        await uow.collection(USERS).update_many({"tenant_id": tenant_id, "group_ids": group_id},
                                                {"$pull": {"group_ids": group_id}}, session=uow.session)
        await _bump(uow, tenant_id)

    await transact(platform, work)


async def _change_group(platform: Platform, *, tenant_id: str, group_id: str, change) -> dict:
    async def work(uow: UnitOfWork) -> None:
        group = await uow.collection(GROUPS).find_one({"_id": group_id, "tenant_id": tenant_id}, session=uow.session)
        if group is None:
            raise not_found("user group", group_id)
        await change(uow, group)
        await _bump(uow, tenant_id)

    await transact(platform, work)
    return await get_group(platform, tenant_id=tenant_id, group_id=group_id)


async def add_member(platform: Platform, *, tenant_id: str, group_id: str, user_id: str) -> dict:
    async def change(uow: UnitOfWork, group: dict) -> None:
        result = await uow.collection(USERS).update_one({"_id": user_id, "tenant_id": tenant_id},
                                                        {"$addToSet": {"group_ids": group_id}}, session=uow.session)
        if not result.matched_count:
            raise not_found("user", user_id)
    return await _change_group(platform, tenant_id=tenant_id, group_id=group_id, change=change)


async def remove_member(platform: Platform, *, tenant_id: str, group_id: str, user_id: str) -> dict:
    async def change(uow: UnitOfWork, group: dict) -> None:
        result = await uow.collection(USERS).update_one({"_id": user_id, "tenant_id": tenant_id, "group_ids": group_id},
                                                        {"$pull": {"group_ids": group_id}}, session=uow.session)
        if not result.matched_count:
            raise not_found(f"member of '{group['name']}'", user_id)
    return await _change_group(platform, tenant_id=tenant_id, group_id=group_id, change=change)


async def attach_policy(platform: Platform, *, tenant_id: str, group_id: str, policy_id: str) -> dict:
    async def change(uow: UnitOfWork, group: dict) -> None:
        await _check_policies(uow, tenant_id, [policy_id])
        held = group.get("policy_ids", [])
        if policy_id not in held and len(held) >= MAX_POLICIES_PER_GROUP:
            raise conflict(f"the group '{group['name']}' already holds {MAX_POLICIES_PER_GROUP} policies, the most "
                           "a group can hold", code="group_policy_limit")
        await uow.collection(GROUPS).update_one({"_id": group_id}, {"$addToSet": {"policy_ids": policy_id}},
                                                session=uow.session)
    return await _change_group(platform, tenant_id=tenant_id, group_id=group_id, change=change)


async def detach_policy(platform: Platform, *, tenant_id: str, group_id: str, policy_id: str) -> dict:
    async def change(uow: UnitOfWork, group: dict) -> None:
        if policy_id not in group.get("policy_ids", []):
            raise not_found(f"policy of '{group['name']}'", policy_id)
        await uow.collection(GROUPS).update_one({"_id": group_id}, {"$pull": {"policy_ids": policy_id}},
                                                session=uow.session)
    return await _change_group(platform, tenant_id=tenant_id, group_id=group_id, change=change)


# ------------------------------------------------------------------------------------ accounts

async def record_account(uow, *, tenant_id: str, created_by: str | None) -> None:
    """The account of a new tenant (its first user is its administrator), in the caller's unit of work."""
    await uow.collection(ACCOUNTS).update_one(
        {"_id": tenant_id}, {"$setOnInsert": {"status": ACTIVE, "created_at": datetime.now(UTC),
                                              "created_by": created_by}}, upsert=True, session=uow.session)
