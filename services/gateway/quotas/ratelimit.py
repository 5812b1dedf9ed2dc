"""The QPS limit of a service (guide 8 "流量限制"): a token bucket, in its GCRA form.

GCRA (the generic cell rate algorithm, behind many API gateways' rate limiters) keeps one number per
key: the theoretical arrival time ``tat`` of the next request if requests came exactly every
``1/qps`` seconds. A request at time ``t`` is admitted when ``tat - t <= tolerance`` (then ``tat``
moves on by ``1/qps``), otherwise refused with the wait until it would be admitted (Retry-After).
This is a token bucket refilled at ``qps`` per second holding ``qps x burst_seconds + 1`` tokens:

- a service that was idle takes ``qps`` simultaneous requests at once (a QPS limit of 10 does not
  refuse 3 requests that arrive together);
- under sustained overload exactly ``qps`` requests per second get through: a slot in which no
  request happened to arrive (arrival jitter, a busy event loop) is caught up later instead of
  being lost, which a bucket of a few requests or a strict one-second window would lose (they admit
  only 70-90% of the limit under a 2x overload of random arrivals);
- no window of T seconds ever admits more than ``qps x (T + burst_seconds) + 1``.

The state is one MongoDB document per key, updated atomically, so several gateway replicas admit
from one budget together (a per-process limiter lets N gateways admit N times the limit, the
classic bug of proxies that scale out).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.lib.common.mongo import IndexSpec

_MAX_KEYS = 10_000   # past this many keys, forget those whose bucket is full again
_EPSILON = 1e-9      # float sums of 1/qps must not cost a request

QPS_BUCKETS = "qps_buckets"
INDEXES: list[IndexSpec] = [
    (QPS_BUCKETS, [("expires_at", ASCENDING)], {"expireAfterSeconds": 0}),
]


def _slot(key: str, qps: int) -> str:
    return f"{key}:{qps}"     # a changed limit starts afresh (with a full bucket)


class SharedQpsLimiter:
    """GCRA with its state in MongoDB, shared by every gateway replica: one document per key holds
    ``tat`` (seconds since the epoch: replicas share the wall clock, not a monotonic one). A request
    is admitted by one conditional update (``tat <= now + tolerance``, then ``tat = max(tat, now) +
    1/qps``), or by creating the document when there is none (an idle key); two replicas can never
    both take the last slot. Admission is read from the update's own count, never from a document
    read back (a read-back may already show another replica's update).

    A refused request usually costs no round trip: ``tat`` only grows, so a replica that last saw
    it further ahead than the tolerance knows the answer is still no (under overload the refused
    majority stays off the database). Documents expire once their bucket is full again."""

    def __init__(self, collection, *, burst_seconds: float = 1.0, clock: Callable[[], float] = time.time):
        self.collection, self.burst_seconds, self.clock = collection, burst_seconds, clock
        self._seen: dict[str, float] = {}   # slot -> a tat seen in the database (a lower bound of the real one)

    async def acquire(self, key: str, qps: int) -> float | None:
        now = self.clock()
        slot, interval, tolerance = _slot(key, qps), 1.0 / qps, self.burst_seconds
        seen = self._seen.get(slot)
        if seen is not None and seen - now > tolerance + _EPSILON:
            return seen - tolerance - now
        # Gone once full again (tat < now: the same as no document), with a minute of slack for clocks.
        expires = datetime.now(UTC) + timedelta(seconds=tolerance + interval + 60)
        for _ in range(3):
            taken = await self.collection.update_one(
                {"_id": slot, "tat": {"$lte": now + tolerance + _EPSILON}},
                [{"$set": {"tat": {"$add": [{"$max": ["$tat", now]}, interval]}, "expires_at": expires}}])
            if taken.matched_count:
                return None
            doc = await self.collection.find_one({"_id": slot}, {"tat": 1})
            if doc is not None and doc["tat"] - now > tolerance + _EPSILON:   # it exists and this does not fit
                self._remember(slot, doc["tat"], now)
                return doc["tat"] - tolerance - now
            if doc is not None:
                continue            # created by another request since the update: try the update again
            try:                    # an idle key: the first request creates its bucket
                await self.collection.insert_one({"_id": slot, "tat": now + interval, "expires_at": expires})
                return None
            except DuplicateKeyError:
                continue            # another request created it first: try the update again
        raise RuntimeError(f"the QPS bucket {slot} changed under three tries in a row")

    def _remember(self, slot: str, tat: float, now: float) -> None:
        self._seen[slot] = tat
        if len(self._seen) > _MAX_KEYS:
            self._seen = {k: v for k, v in self._seen.items() if v >= now}
