"""Where accounts, user groups and custom policies are kept, and how a user's grant is read from them.

- ``users`` (services.lib.common.auth.USERS): ``account_role`` ("admin" | "member"), ``status``
  ("active" | "disabled"), ``group_ids`` and ``iam_rev``;
- ``iam_groups``: ``tenant_id``, ``name``, ``description``, ``policy_ids`` (a system policy's id is
  its name, a custom policy's is its ``_id``);
- ``iam_policies``: custom policies, ``tenant_id``, ``name``, ``description``, ``document`` (the text as
  pasted) and its parsed ``statements``;
- ``accounts``: ``_id`` = the tenant id, ``status``; an account made before accounts were recorded
  has no document and is active.

Every IAM change bumps ``iam_rev`` on every user of the account in the same transaction. That makes
cached grants (keyed by user and rev) stale on the next call, and makes two concurrent IAM changes
of one account conflict, so rules such as "keep one administrator" cannot be raced past.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from pymongo import ASCENDING

from services.lib.common.auth import USERS, Principal
from services.lib.common.mongo import IndexSpec
from services.lib.iam.actions import SELF_SERVICE
from services.lib.iam.evaluator import ALLOW_ALL, CompiledPolicy, Grant, Statement, compile_policy
from services.lib.iam.system_policies import FULL_ACCESS, SYSTEM_POLICIES

GROUPS = "iam_groups"
POLICIES = "iam_policies"
ACCOUNTS = "accounts"

INDEXES: list[IndexSpec] = [
    (GROUPS, [("tenant_id", ASCENDING), ("name", ASCENDING)], {"unique": True}),
    (POLICIES, [("tenant_id", ASCENDING), ("name", ASCENDING)], {"unique": True}),
    (USERS, [("tenant_id", ASCENDING)], {}),
    (USERS, [("group_ids", ASCENDING)], {}),
]

# Every signed-in user may manage their own session and see their own permissions.
SIGNED_IN = compile_policy("(every signed-in user)", (Statement("Allow", tuple(sorted(SELF_SERVICE))),))


def statements_of(doc: dict) -> tuple[Statement, ...]:
    return tuple(Statement(s["effect"], tuple(s["actions"])) for s in doc["statements"])


async def load_policies(mongo, *, tenant_id: str, account_role: str, group_ids: tuple[str, ...]
                        ) -> tuple[CompiledPolicy, ...]:
    """The compiled policies a user has: FullAccess for the account's administrators, the signed-in
    user's self-service, and every policy of their groups (read now, scoped to their account)."""
    policies = [FULL_ACCESS.compiled()] if account_role == "admin" else []
    policies.append(SIGNED_IN)
    if not group_ids:
        return tuple(policies)
    policy_ids: set[str] = set()
    async for group in mongo[GROUPS].find({"_id": {"$in": list(group_ids)}, "tenant_id": tenant_id},
                                          {"policy_ids": 1}):
        policy_ids.update(group.get("policy_ids", ()))
    policies += [SYSTEM_POLICIES[p].compiled() for p in sorted(policy_ids & SYSTEM_POLICIES.keys())]
    custom = sorted(policy_ids - SYSTEM_POLICIES.keys())
    if custom:
        async for doc in mongo[POLICIES].find({"_id": {"$in": custom}, "tenant_id": tenant_id}).sort("_id"):
            policies.append(compile_policy(doc["name"], statements_of(doc)))
    return tuple(policies)


class Grants(Protocol):
    async def grant(self, principal: Principal) -> Grant: ...


class Authorizer:
    """The grants of recent callers, kept per (user, iam_rev): a call reads the user document anyway
    (its status), and the groups and policies only when the account's IAM changed since."""

    def __init__(self, mongo, *, size: int = 10_000):
        self.mongo, self.size = mongo, size
        self._grants: OrderedDict[tuple[str, int], Grant] = OrderedDict()

    async def grant(self, principal: Principal) -> Grant:
        key = (principal.user_id, principal.iam_rev)
        grant = self._grants.get(key)
        if grant is not None:
            self._grants.move_to_end(key)
            return grant
        grant = Grant(await load_policies(self.mongo, tenant_id=principal.tenant_id,
                                          account_role=principal.account_role, group_ids=principal.group_ids))
        self._grants[key] = grant
        while len(self._grants) > self.size:
            self._grants.popitem(last=False)
        return grant


class AllowAll:
    """Authorization off: every signed-in caller may do everything (benchmarks' baseline only)."""

    async def grant(self, principal: Principal) -> Grant:
        return ALLOW_ALL
