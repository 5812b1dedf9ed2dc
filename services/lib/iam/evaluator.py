"""Deciding whether a set of policies allows an action. Pure: no I/O, no clock.

Rules (the guide's IAM, as cloud IAMs do it):
- an explicit ``Deny`` that matches the action wins over any ``Allow``;
- otherwise a matching ``Allow`` allows it;
- otherwise it is denied (nothing is allowed by default).
``*`` in a pattern matches any run of characters, ``:`` included; matching ignores case.

Each policy's patterns are compiled once into two regular expressions (one per effect), and compiled
policies are memoised by their content, so a policy attached to many groups compiles once. A
``Grant`` (one user's policies) remembers each decision: the catalogue is small and a route asks for
the same action on every call.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Literal

Effect = Literal["Allow", "Deny"]


@dataclass(frozen=True)
class Statement:
    effect: Effect
    actions: tuple[str, ...]


def _regex(patterns: Iterable[str]) -> re.Pattern | None:
    parts = sorted({re.escape(p).replace(r"\*", ".*") for p in patterns})
    if not parts:
        return None
    return re.compile("(?:" + "|".join(parts) + r")\Z", re.IGNORECASE)


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    allow: re.Pattern | None
    deny: re.Pattern | None

    def denies(self, action: str) -> bool:
        return self.deny is not None and self.deny.match(action) is not None

    def allows(self, action: str) -> bool:
        return self.allow is not None and self.allow.match(action) is not None


@lru_cache(maxsize=4096)
def compile_policy(name: str, statements: tuple[Statement, ...]) -> CompiledPolicy:
    """One policy's statements, compiled (memoised by content: name and statements)."""
    return CompiledPolicy(
        name=name,
        allow=_regex(p for s in statements if s.effect == "Allow" for p in s.actions),
        deny=_regex(p for s in statements if s.effect == "Deny" for p in s.actions))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str                 # why, in words for an error message
    policy: str | None = None   # the policy that decided it (None: no policy allows it)
    grantable: bool = True      # a denied action another Allow would give (not an explicit Deny)


@dataclass
class Grant:
    """Every policy one caller has; ``decide`` answers per action and remembers the answer."""
    policies: tuple[CompiledPolicy, ...]
    _memo: dict[str, Decision] = field(default_factory=dict, repr=False)

    def decide(self, action: str) -> Decision:
        decision = self._memo.get(action)
        if decision is None:
            decision = self._memo[action] = self._decide(action)
        return decision

    def allows(self, action: str) -> bool:
        return self.decide(action).allowed

    def _decide(self, action: str) -> Decision:
        for policy in self.policies:
            if policy.denies(action):
                return Decision(False, f"the policy '{policy.name}' denies it", policy.name, grantable=False)
        for policy in self.policies:
            if policy.allows(action):
                return Decision(True, f"the policy '{policy.name}' allows it", policy.name)
        return Decision(False, "no policy allows it")


ALLOW_ALL = Grant((compile_policy("(authorization off)", (Statement("Allow", ("*",)),)),))
