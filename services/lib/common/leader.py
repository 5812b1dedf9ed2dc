"""One leader among the processes that run the same singleton loop (the deployer): a lease document
taken and renewed with one conditional write.

A process leads while it renews the lease before it expires; another takes over once the lease
has lapsed (its holder died or hung). Expiry times are written by the holder's clock: machines of
one platform must keep their clocks within a small part of the lease (NTP does).
"""
from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psutil
from pymongo.errors import DuplicateKeyError

LEADERS = "leaders"


class LeaderLease:
    """``gone(holder)`` may tell that another holder is dead for sure (its process is gone from this
    machine): its lease lapses at once instead of at expiry, so a restart after a crash leads at once."""

    def __init__(self, collection, *, name: str, holder: str, lease_seconds: float,
                 gone: Callable[[str], bool] = lambda holder: False):
        self.collection, self.name, self.holder, self.gone = collection, name, holder, gone
        self.lease = timedelta(seconds=lease_seconds)

    async def hold(self) -> bool:
        """Take the lease or renew it: True while this process leads, False while another does.

        One write: it matches only a lease that is ours or has lapsed; when it matches nothing, the
        upsert inserts a document with the same ``_id``, which fails while the other holder's stands."""
        if await self._write():
            return True
        other = await self.collection.find_one({"_id": self.name})
        if other is None or not self.gone(other["holder"]):
            return False
        await self.collection.delete_one({"_id": self.name, "holder": other["holder"]})
        return await self._write()

    async def _write(self) -> bool:
        now = datetime.now(UTC)
        try:
            await self.collection.update_one(
                {"_id": self.name, "$or": [{"holder": self.holder}, {"expires_at": {"$lt": now}}]},
                {"$set": {"holder": self.holder, "expires_at": now + self.lease, "renewed_at": now}},
                upsert=True)
        except DuplicateKeyError:
            return False
        return True

    async def release(self) -> None:
        """Give the lease up (a clean shutdown): a standby takes over at its next try, not after expiry."""
        await self.collection.delete_one({"_id": self.name, "holder": self.holder})

    async def holder_now(self) -> str | None:
        doc = await self.collection.find_one({"_id": self.name})
        return doc["holder"] if doc and doc["expires_at"].replace(tzinfo=UTC) > datetime.now(UTC) else None


def holder_name() -> str:
    """A holder name that ``dead_on_this_machine`` can read: host, process id, and a token (two
    holders of one process stay apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def dead_on_this_machine(holder: str) -> bool:
    """A holder of this machine whose process is gone (a crash, kill -9): a restart need not wait for
    its lease to lapse."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))
