"""The guide's system policies (table 2-1), written in the same JSON format as a custom policy.

- ``FullAccess``: every action, creating, updating and deleting dedicated resource pools included;
- ``CommonOperations``: use everything, but no pool create/update/delete (the guide's recommended
  default for sub-users). Written as Allow statements only, so that a group holding both
  FullAccess and CommonOperations keeps FullAccess;
- ``ReadOnly``: get and list actions only.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.lib.iam.actions import ACTIONS, RESOURCES
from services.lib.iam.evaluator import CompiledPolicy, Statement, compile_policy

_POOL_CHANGES = {"maas:pools:create", "maas:pools:update", "maas:pools:delete"}


@dataclass(frozen=True)
class SystemPolicy:
    name: str
    description: str
    document: dict

    @property
    def statements(self) -> tuple[Statement, ...]:
        return tuple(Statement(s["Effect"], tuple(s["Action"])) for s in self.document["Statement"])

    def compiled(self) -> CompiledPolicy:
        return compile_policy(self.name, self.statements)


def _common_operations() -> list[str]:
    patterns = []
    for resource in RESOURCES:
        if resource == "pools":
            patterns += sorted(a for a in ACTIONS if ACTIONS[a].resource == "pools" and a not in _POOL_CHANGES)
        else:
            patterns.append(f"maas:{resource}:*")
    return patterns


def _doc(*statements: tuple[str, list[str]]) -> dict:
    return {"Version": "1.1", "Statement": [{"Effect": e, "Action": a} for e, a in statements]}


SYSTEM_POLICIES: dict[str, SystemPolicy] = {p.name: p for p in [
    SystemPolicy("FullAccess", "Every action, including creating, updating and deleting dedicated resource "
                 "pools. Give it with care.", _doc(("Allow", ["maas:*:*"]))),
    SystemPolicy("CommonOperations", "Use every feature, without creating, updating or deleting dedicated "
                 "resource pools. Recommended for sub-users.", _doc(("Allow", _common_operations()))),
    SystemPolicy("ReadOnly", "Browse everything: get and list actions only.",
                 _doc(("Allow", ["maas:*:get*", "maas:*:list*"]))),
]}

FULL_ACCESS = SYSTEM_POLICIES["FullAccess"]
