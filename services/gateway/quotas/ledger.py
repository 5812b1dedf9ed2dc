"""This gateway process's share of the free quotas: reserve before a call, settle after it.

A call reserves the most it can use before it is sent; when it ends (answered, failed, or a stream
cut off) it settles with what it really used, and the rest becomes free again. Reserving is local
while this process's lease on the quota (store.py) has room; otherwise the lease grows in
MongoDB by what is missing plus ``chunk`` tokens, so the next calls reserve without a database round
trip (near the end of a quota it grows by what is missing only). What settled calls used is billed
and taken off the lease by ``flush`` (once a second, with the rest of the metering), which also
renews the lease and gives it back once this process has had no call on it for
``idle_release`` seconds.

Usage that a write did not bill before the process ended is lost (as for all metering); a crashed
process's lease expires after ``lease_seconds`` and its tokens go back to the quota. Gateway clocks
may differ by up to the lease's margin (``lease_seconds`` minus the renewal period) without a live
lease being taken for an expired one.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.gateway.quotas.store import QuotaStore, lease_of

log = logging.getLogger(__name__)


class NotClaimed(Exception):
    """The user has not claimed this quota."""


@dataclass(frozen=True)
class Balance:
    granted: int
    used: int       # billed, including what this process has not written yet
    reserved: int   # held for calls in progress (or about to start) on every gateway

    @property
    def left(self) -> int:
        return max(0, self.granted - self.used - self.reserved)


class NoRoom(Exception):
    """The quota cannot hold the tokens asked for."""

    def __init__(self, balance: Balance):
        super().__init__("no room in the quota")
        self.balance = balance


@dataclass
class _Pending:
    """A lease write whose outcome is unknown (the connection failed): checked before the next one."""
    seq: int                  # the lease's seq if it was applied
    grown: int = 0            # tokens it added to the lease
    billed: int = 0           # tokens it billed ...
    spent: int = 0            # ... of which taken off the lease
    given_back: int = 0       # tokens it gave back


@dataclass
class _Lease:
    qid: str
    key: str
    seq: int | None = None    # the lease document's seq as last written; None: nothing held in MongoDB
    held: int = 0             # tokens the lease holds in MongoDB
    reserved: int = 0         # of them, held by calls in progress
    spent: int = 0            # settled calls' tokens to bill and take off the lease
    over: int = 0             # settled calls' tokens beyond the lease (a lapsed lease): billed only
    last_used: float = field(default_factory=time.monotonic)
    renew_at: float = 0.0
    pending: _Pending | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def free(self) -> int:
        return self.held - self.reserved - self.spent

    def take(self, tokens: int) -> Reservation:
        self.reserved += tokens
        self.last_used = time.monotonic()
        return Reservation(lease=self, tokens=tokens)


class Reservation:
    """Tokens held for one call. ``settle`` once with what the call used (later calls do nothing)."""

    __slots__ = ("_lease", "tokens")

    def __init__(self, *, lease: _Lease | None, tokens: int):
        self._lease, self.tokens = lease, tokens

    def settle(self, used: int) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        lease.reserved -= self.tokens
        lease.last_used = time.monotonic()
        used = max(0, int(used))
        covered = min(used, max(0, lease.held - lease.reserved - lease.spent))
        lease.spent += covered
        lease.over += used - covered
        if used > self.tokens:
            log.warning("a call on quota %s used %d tokens, more than the %d it reserved", lease.qid, used,
                        self.tokens)

    def release(self) -> None:
        """The call used nothing (refused before it reached the model)."""
        self.settle(0)


NO_RESERVATION = Reservation(lease=None, tokens=0)   # calls outside any free quota


class QuotaLedger:
    def __init__(self, store: QuotaStore, *, chunk: int, lease_seconds: float, idle_release: float,
                 forget_after: float = 300.0):
        self.store = store
        self.chunk, self.lease_seconds, self.idle_release = chunk, lease_seconds, idle_release
        self.forget_after = forget_after
        self.key = secrets.token_hex(8)   # this process's lease in every quota it uses
        self._leases: dict[str, _Lease] = {}

    def balance(self, qid: str, doc: dict) -> Balance:
        """The quota ``doc`` with what this process settled and has not written yet."""
        lease = self._leases.get(qid)
        spent, over = (lease.spent, lease.over) if lease else (0, 0)
        # What settled calls spent is still in ``reserved`` (the lease) until it is written.
        return Balance(granted=int(doc["granted"]), used=int(doc.get("used", 0)) + spent + over,
                       reserved=max(0, int(doc.get("reserved", 0)) - spent))

    async def reserve(self, qid: str, tokens: int) -> Reservation:
        """Hold ``tokens`` of the quota for one call; NotClaimed or NoRoom when it cannot."""
        lease = self._leases.get(qid)
        if lease is not None and lease.free >= tokens:
            return lease.take(tokens)   # the usual case: no database round trip
        while True:
            lease = self._leases.setdefault(qid, _Lease(qid=qid, key=self.key))
            async with lease.lock:
                if self._leases.get(qid) is lease:
                    return await self._reserve_locked(lease, tokens)

    async def _reserve_locked(self, lease: _Lease, tokens: int) -> Reservation:
        if lease.pending is not None and not await self._resolve(lease):
            raise ConnectionError(f"the outcome of a write to quota {lease.qid} is still unknown")
        if lease.free >= tokens:
            return lease.take(tokens)
        if await self._grow(lease, tokens - lease.free + self.chunk) or (
                self.chunk and await self._grow(lease, tokens - lease.free)):
            return lease.take(tokens)
        doc = await self.store.find(lease.qid)
        if doc is None:
            raise NotClaimed(lease.qid)
        # Short: maybe because of leases that are gone (ours, taken back after it expired) or that
        # should be (a crashed gateway's).
        mine = lease_of(doc, lease.key)
        stale = lease.seq is not None and (mine is None or mine.get("seq") != lease.seq)
        if stale:
            await self._lapsed(lease, _Pending(seq=0))
        dropped = await self.store.reclaim_expired(doc, now=datetime.now(UTC))
        if lease.key in dropped and not stale:
            await self._lapsed(lease, _Pending(seq=0))
        if stale or dropped:
            if await self._grow(lease, tokens - lease.free):
                return lease.take(tokens)
            doc = await self.store.find(lease.qid) or doc
        raise NoRoom(self.balance(lease.qid, doc))

    async def _grow(self, lease: _Lease, tokens: int) -> bool:
        expected = (lease.seq or 0) + 1
        try:
            doc = await self.store.grow(lease.qid, key=lease.key, seq=lease.seq, tokens=tokens,
                                        expires_at=self._expiry())
        except Exception:
            lease.pending = _Pending(seq=expected, grown=tokens)
            raise
        if doc is None:
            return False
        self._applied(lease, doc)
        lease.held += tokens
        return True

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.lease_seconds)

    def _applied(self, lease: _Lease, doc: dict) -> None:
        lease.seq = int(lease_of(doc, lease.key)["seq"])
        lease.renew_at = time.monotonic() + self.lease_seconds / 3

    # ------------------------------------------------------------------------------------ flush

    async def flush(self, *, closing: bool = False) -> None:
        """Bill what settled calls used, renew the leases in use and give back idle ones
        (``closing``: every one without a call in progress)."""
        results = await asyncio.gather(*(self._flush_one(lease, closing=closing)
                                         for lease in list(self._leases.values())), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("writing free-quota usage failed (%s); retrying on the next flush", result)

    async def _flush_one(self, lease: _Lease, *, closing: bool) -> None:
        async with lease.lock:
            if lease.pending is not None and not await self._resolve(lease):
                return
            now = time.monotonic()
            idle = lease.reserved == 0 and (closing or now - lease.last_used >= self.idle_release)
            billed, spent, over = lease.spent + lease.over, lease.spent, lease.over
            given_back = max(0, lease.free) if idle else 0
            renew = lease.held > 0 and now >= lease.renew_at
            if not (billed or given_back or renew):
                if closing and idle and lease.held == 0 and lease.seq is not None:
                    await self.store.drop_empty(lease.qid, key=lease.key, seq=lease.seq)
                    lease.seq = None
                elif idle and lease.held == 0 and now - lease.last_used >= self.forget_after:
                    self._leases.pop(lease.qid, None)   # its empty entry in MongoDB goes with the next use
                return
            if lease.seq is None:   # nothing held in MongoDB: only tokens no lease covers to bill
                await self.store.bill(lease.qid, tokens=over)
                lease.over -= over
                return
            lease.held -= given_back   # at once: no call may reserve what is being given back
            pending = _Pending(seq=lease.seq + 1, billed=billed, spent=spent, given_back=given_back)
            try:
                doc = await self.store.charge(lease.qid, key=lease.key, seq=lease.seq, billed=billed,
                                              from_lease=spent + given_back, expires_at=self._expiry())
            except Exception:
                lease.pending = pending
                raise
            if doc is None:
                await self._lapsed(lease, pending)
                return
            self._applied(lease, doc)
            self._charged(lease, pending)
            if given_back:   # a good moment to clear the leases of gateways that are gone
                await self.store.reclaim_expired(doc, now=datetime.now(UTC))
            if closing and lease.held == 0:
                await self.store.drop_empty(lease.qid, key=lease.key, seq=lease.seq)
                lease.seq = None

    @staticmethod
    def _charged(lease: _Lease, write: _Pending) -> None:
        lease.spent -= write.spent
        lease.over -= write.billed - write.spent
        lease.held -= write.spent

    async def _lapsed(self, lease: _Lease, write: _Pending) -> None:
        """The lease is gone from MongoDB (expired and taken back: this process did not renew it in
        time). Bill without it; calls in progress settle beyond any lease."""
        log.warning("the lease of this gateway on quota %s lapsed; billing without it", lease.qid)
        lease.seq, lease.held = None, 0
        lease.over += lease.spent
        lease.spent = 0
        if write.billed:
            await self.store.bill(lease.qid, tokens=write.billed)
            lease.over -= write.billed

    async def _resolve(self, lease: _Lease) -> bool:
        """Find out whether the write in ``lease.pending`` was applied; False while it is unknown."""
        write = lease.pending
        try:
            doc = await self.store.find(lease.qid)
        except Exception as exc:
            log.warning("quota %s: cannot check an earlier write yet (%s)", lease.qid, exc)
            return False
        lease.pending = None
        mine = lease_of(doc, lease.key)
        if mine is not None and int(mine.get("seq", 0)) == write.seq:   # it was applied
            self._applied(lease, doc)
            lease.held += write.grown
            self._charged(lease, write)
        elif mine is not None and int(mine.get("seq", 0)) == write.seq - 1:   # it was not
            lease.held += write.given_back
        elif lease.seq is not None:   # the lease lapsed meanwhile
            lease.held += write.given_back
            await self._lapsed(lease, _Pending(seq=0))
        return True
