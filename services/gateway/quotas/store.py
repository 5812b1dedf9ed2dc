"""The free quotas' documents in MongoDB and the only writes that change their balance.

One document per user and preset service (``_id`` ``"<user_id>:<service_id>"``)::

    granted    tokens the user may use
    used       tokens billed (the true usage of finished calls)
    reserved   tokens held by gateway processes for calls in progress: the sum of the leases
    leases     {<gateway key>: {tokens, seq, expires_at}}, one per gateway process holding part of it

Each write below is one atomic update of one document, so any number of gateway processes share a
quota without ever granting more than ``granted``: a lease grows only if ``used + reserved`` plus the
new tokens still fits, checked and applied in the same update. A gateway renews its lease while it
runs; one that crashed stops renewing, and whoever next finds the quota short drops its expired
lease and takes the tokens back (``reclaim_expired``). ``seq`` counts a lease's writes: every write
names the ``seq`` it was computed for, so a write is never applied twice and one whose answer was
lost can be checked afterwards.
"""
from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument

QUOTAS = "free_quotas"


def quota_id(user_id: str, service_id: str) -> str:
    return f"{user_id}:{service_id}"


def _room_for(tokens: int) -> dict:
    """Filter: the quota can hold ``tokens`` more (used + reserved + tokens <= granted)."""
    return {"$expr": {"$lte": [{"$add": [{"$ifNull": ["$used", 0]}, {"$ifNull": ["$reserved", 0]}, tokens]},
                               "$granted"]}}


def _lease_at(key: str, seq: int | None) -> dict:
    """Filter: lease ``key`` is as this process last wrote it (``seq``); None: it holds nothing."""
    if seq is None:
        return {f"leases.{key}.tokens": {"$in": [None, 0]}}   # absent, or left empty by a release
    return {f"leases.{key}.seq": seq}


def lease_of(doc: dict | None, key: str) -> dict | None:
    return ((doc or {}).get("leases") or {}).get(key)


class QuotaStore:
    def __init__(self, collection):
        self.collection = collection

    async def find(self, qid: str) -> dict | None:
        return await self.collection.find_one({"_id": qid})

    async def grow(self, qid: str, *, key: str, seq: int | None, tokens: int, expires_at: datetime) -> dict | None:
        """Add ``tokens`` to lease ``key`` if the quota has room; the document after, else None
        (no room, not claimed, or the lease is not at ``seq``)."""
        return await self.collection.find_one_and_update(
            {"_id": qid, **_lease_at(key, seq), **_room_for(tokens)},
            {"$inc": {"reserved": tokens, f"leases.{key}.tokens": tokens, f"leases.{key}.seq": 1},
             "$set": {f"leases.{key}.expires_at": expires_at}},
            return_document=ReturnDocument.AFTER)

    async def charge(self, qid: str, *, key: str, seq: int, billed: int, from_lease: int,
                     expires_at: datetime) -> dict | None:
        """Bill ``billed`` tokens, take ``from_lease`` tokens off the lease (what settled calls
        used of it, plus any it gives back) and renew it; the document after, else None (the
        lease is not at ``seq``: it lapsed)."""
        return await self.collection.find_one_and_update(
            {"_id": qid, **_lease_at(key, seq)},
            {"$inc": {"used": billed, "reserved": -from_lease, f"leases.{key}.tokens": -from_lease,
                      f"leases.{key}.seq": 1},
             "$set": {f"leases.{key}.expires_at": expires_at}},
            return_document=ReturnDocument.AFTER)

    async def bill(self, qid: str, *, tokens: int) -> None:
        """Bill tokens no lease covers (a lease that lapsed, a call that used more than it reserved)."""
        await self.collection.update_one({"_id": qid}, {"$inc": {"used": tokens}})

    async def reclaim_expired(self, doc: dict, *, now: datetime) -> list[str]:
        """Drop the leases of ``doc`` that expired (their gateway stopped renewing them), giving
        their tokens back; the keys of those dropped."""
        dropped = []
        for key, lease in (doc.get("leases") or {}).items():
            expires_at = lease.get("expires_at")
            if expires_at is None or expires_at >= now:
                continue
            result = await self.collection.update_one(
                {"_id": doc["_id"], f"leases.{key}.seq": lease.get("seq"), f"leases.{key}.expires_at": expires_at},
                {"$unset": {f"leases.{key}": ""}, "$inc": {"reserved": -int(lease.get("tokens") or 0)}})
            if result.modified_count:
                dropped.append(key)
        return dropped

    async def drop_empty(self, qid: str, *, key: str, seq: int) -> None:
        """Remove lease ``key`` once it holds nothing (a gateway shutting down)."""
        await self.collection.update_one({"_id": qid, f"leases.{key}.seq": seq, f"leases.{key}.tokens": 0},
                                         {"$unset": {f"leases.{key}": ""}})
