"""Failed logins slow down guessing: per username and per client address, shared by every gateway.

Each username and each client address has a counter of recent failures in MongoDB (one document,
changed by one atomic update, so gateway replicas count together). The first ``free`` failures cost
nothing; each one after them blocks further attempts for ``base x 2^(n - free - 1)`` seconds, up to
``max`` (429 with Retry-After, checked before the password is). A counter is forgotten ``window``
seconds after its last failure; a successful login clears its username's counter, not its address's
(else one valid account would let an address guess freely at others). Attempts for usernames that do
not exist count the same, so the answers do not tell which usernames exist.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, ReturnDocument

from services.lib.common.errors import ApiError
from services.lib.common.mongo import IndexSpec
from services.gateway.settings import GatewaySettings

LOGIN_FAILURES = "login_failures"

INDEXES: list[IndexSpec] = [
    (LOGIN_FAILURES, [("expires_at", ASCENDING)], {"expireAfterSeconds": 0}),
]


@dataclass(frozen=True)
class ThrottleRules:
    free_per_user: int = 5
    free_per_client: int = 30
    base_seconds: float = 1.0
    max_seconds: float = 900.0
    window_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ThrottleRules:
        return cls(free_per_user=settings.login_free_failures_per_user,
                   free_per_client=settings.login_free_failures_per_client,
                   base_seconds=settings.login_backoff_base_seconds, max_seconds=settings.login_backoff_max_seconds,
                   window_seconds=settings.login_failure_window_seconds)

    def wait_after(self, failures: int, *, free: int) -> float:
        """Seconds the ``failures``-th failure in a row blocks further attempts for."""
        if failures <= free:
            return 0.0
        return min(self.max_seconds, self.base_seconds * 2 ** min(failures - free - 1, 64))

    @property
    def window(self) -> timedelta:
        # A counter must outlive its longest block, or a stale block could outlast the counter.
        return timedelta(seconds=max(self.window_seconds, self.max_seconds))


def _user_key(username: str) -> str:
    return f"user:{username}"


def _client_key(client: str | None) -> str | None:
    return f"client:{client}" if client else None


class LoginThrottle:
    def __init__(self, collection, rules: ThrottleRules, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.collection, self.rules, self.clock = collection, rules, clock

    def _keys(self, username: str, client: str | None) -> dict[str, int]:
        keys = {_user_key(username): self.rules.free_per_user}
        if client_key := _client_key(client):
            keys[client_key] = self.rules.free_per_client
        return keys

    async def check(self, *, username: str, client: str | None) -> None:
        """429 while the username or the client address is blocked."""
        now = self.clock()
        keys = self._keys(username, client)
        wait = 0.0
        async for doc in self.collection.find({"_id": {"$in": list(keys)}}):
            until = doc.get("blocked_until")
            if until is not None and until > now:
                wait = max(wait, (until - now).total_seconds())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, "too_many_login_attempts",
                           f"too many failed logins for this username or from this address; try again in {seconds} s",
                           headers={"Retry-After": str(seconds)})

    async def failed(self, *, username: str, client: str | None) -> None:
        now = self.clock()
        await asyncio.gather(*(self._count(key, free, now) for key, free in self._keys(username, client).items()))

    async def _count(self, key: str, free: int, now: datetime) -> None:
        fresh = {"$gt": [{"$ifNull": ["$expires_at", None]}, now]}   # the last failure is within the window
        doc = await self.collection.find_one_and_update(
            {"_id": key},
            [{"$set": {"failures": {"$cond": [fresh, {"$add": ["$failures", 1]}, 1]},
                       "expires_at": now + self.rules.window}}],
            upsert=True, return_document=ReturnDocument.AFTER)
        wait = self.rules.wait_after(int(doc["failures"]), free=free)
        if wait:
            # $max: concurrent failures on several gateways settle on the longest block.
            await self.collection.update_one({"_id": key},
                                             {"$max": {"blocked_until": now + timedelta(seconds=wait)}})

    async def succeeded(self, *, username: str) -> None:
        await self.collection.delete_one({"_id": _user_key(username)})
