"""Per-key requests-per-minute and tokens-per-minute limits, shared by every gateway replica.

Each key with a limit has one counter document per UTC minute (``<key_id>:<minute>``) holding the
requests admitted and the tokens used in that minute. A call is admitted by one conditional update
(``requests < rpm`` and ``tokens < tpm``, then ``requests + 1``), as quotas/store.py does for quotas,
so replicas never admit more than ``rpm`` requests in a minute between them. Tokens are known only
when a call ends: they are added afterwards (summed in memory and written once a second with the
metering), so the calls admitted while the minute still had room can take it past ``tpm``; the next
calls of that minute are refused. Keys without limits cost nothing here.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.lib.common.mongo import IndexSpec
from services.gateway.oai_errors import OpenAIError

log = logging.getLogger(__name__)

KEY_WINDOWS = "api_key_minutes"
WINDOW_SECONDS = 60

INDEXES: list[IndexSpec] = [
    (KEY_WINDOWS, [("expires_at", ASCENDING)], {"expireAfterSeconds": 0}),
]


def _window(now: float) -> int:
    return int(now // WINDOW_SECONDS)


def _doc_id(key_id: str, window: int) -> str:
    return f"{key_id}:{window}"


def _expiry(window: int) -> datetime:
    return datetime.fromtimestamp((window + 2) * WINDOW_SECONDS, UTC)


class KeyLimits:
    def __init__(self, collection, *, clock: Callable[[], float] = time.time):
        self.collection, self.clock = collection, clock
        self._tokens: dict[str, int] = defaultdict(int)   # window document -> tokens not written yet

    async def admit(self, caller) -> None:
        """Count one request of ``caller``'s key in this minute; 429 naming the limit when it is full."""
        rpm, tpm = caller.rpm_limit, caller.tpm_limit
        if rpm is None and tpm is None:
            return
        now = self.clock()
        window = _window(now)
        doc_id = _doc_id(caller.key_id, window)
        room: dict = {}
        if rpm is not None:
            room["requests"] = {"$lt": rpm}
        if tpm is not None:
            room["tokens"] = {"$lt": tpm}
        update = {"$inc": {"requests": 1}, "$setOnInsert": {"tokens": 0, "expires_at": _expiry(window)}}
        try:
            admitted = await self.collection.find_one_and_update(
                {"_id": doc_id, **room}, update, upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            # The minute's document exists and is full, or another replica created it just now.
            admitted = await self.collection.find_one_and_update({"_id": doc_id, **room}, update,
                                                                 return_document=ReturnDocument.AFTER)
        if admitted is None:
            await self._refuse(caller, doc_id, wait=(window + 1) * WINDOW_SECONDS - now)

    async def _refuse(self, caller, doc_id: str, *, wait: float) -> None:
        doc = await self.collection.find_one({"_id": doc_id}) or {}
        if caller.rpm_limit is not None and int(doc.get("requests", 0)) >= caller.rpm_limit:
            limit, what = "rpm_limit", f"{caller.rpm_limit} requests per minute"
        else:
            limit, what = "tpm_limit", f"{caller.tpm_limit} tokens per minute"
        raise OpenAIError(429, f"Rate limit reached for this API key: its {limit} is {what}. Try again in "
                          f"{max(1, int(wait + 0.999))} s.", code=f"{limit}_exceeded", param=limit,
                          retry_after=wait)

    def spent(self, caller, tokens: int) -> None:
        """A call of ``caller`` used ``tokens``: counted in this minute at the next flush."""
        if caller.tpm_limit is None or tokens <= 0:
            return
        self._tokens[_doc_id(caller.key_id, _window(self.clock()))] += tokens

    async def flush(self) -> None:
        pending, self._tokens = self._tokens, defaultdict(int)
        if not pending:
            return
        results = await asyncio.gather(*(self._add(doc_id, tokens) for doc_id, tokens in pending.items()),
                                       return_exceptions=True)
        for (doc_id, tokens), result in zip(pending.items(), results):
            if isinstance(result, BaseException):   # kept for the next flush rather than lost
                log.warning("writing the token count of %s failed (%s); retrying on the next flush", doc_id, result)
                self._tokens[doc_id] += tokens

    async def _add(self, doc_id: str, tokens: int) -> None:
        window = int(doc_id.rsplit(":", 1)[1])
        await self.collection.update_one(
            {"_id": doc_id}, {"$inc": {"tokens": tokens}, "$setOnInsert": {"requests": 0, "expires_at": _expiry(window)}},
            upsert=True)
