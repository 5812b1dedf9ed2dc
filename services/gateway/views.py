"""The gateway's read-through views of the database (services, instances, API keys, the blocklist).

Every value is at most ``max_age`` seconds old when a call uses it, as before; what changes is who
waits for the database. A call waits only on a miss (a service or key seen for the first time) or if
the background refresher has fallen behind. ``refresh_due`` (run by the gateway's background task)
re-reads every entry used in the last ``keep`` seconds before it gets too old, so in steady state no
call waits on MongoDB: a blocking re-read costs the first token a millisecond or more.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[Any]]


@dataclass
class _Entry:
    value: Any
    loaded_at: float
    used_at: float
    load: Loader


class ReadThroughView:
    def __init__(self, *, max_age: float, keep: float = 300.0, remember_missing: bool = True):
        """``remember_missing=False``: a load that finds nothing (None) is not kept, so the next call
        reads again (unknown API keys: guessing must not fill memory; unclaimed quotas: a claim
        counts at once)."""
        self.max_age, self.keep, self.remember_missing = max_age, keep, remember_missing
        self._entries: dict[Hashable, _Entry] = {}

    async def get(self, key: Hashable, load: Loader, *, fresh: bool = False) -> Any:
        """The value of ``key``, re-read with ``load`` when missing, older than ``max_age`` or ``fresh``."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if fresh or entry is None or now - entry.loaded_at >= self.max_age:
            entry = _Entry(await load(), time.monotonic(), now, load)
            if entry.value is None and not self.remember_missing:
                self._entries.pop(key, None)
                return None
            self._entries[key] = entry
        entry.used_at = now
        return entry.value

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    async def refresh_due(self) -> None:
        """Re-read the entries past half their age limit; forget those unused for ``keep`` seconds."""
        now = time.monotonic()
        due = []
        for key, entry in list(self._entries.items()):
            if now - entry.used_at > self.keep:
                del self._entries[key]
            elif now - entry.loaded_at >= self.max_age / 2:
                due.append((key, entry))
        results = await asyncio.gather(*(entry.load() for _, entry in due), return_exceptions=True)
        for (key, entry), value in zip(due, results):
            if self._entries.get(key) is not entry:
                continue   # re-read or forgotten meanwhile
            if isinstance(value, BaseException):
                log.warning("refreshing %r failed (%s); the next call re-reads it", key, value)
                del self._entries[key]
            elif value is None and not self.remember_missing:
                del self._entries[key]
            else:
                entry.value, entry.loaded_at = value, time.monotonic()


async def keep_fresh(views: list[ReadThroughView], *, period: float) -> None:
    """Background task: refresh the views every ``period`` seconds (a quarter of the shortest max age)."""
    while True:
        await asyncio.sleep(period)
        for view in views:
            try:
                await view.refresh_due()
            except Exception:   # a database hiccup must not end the refresher
                log.exception("refreshing the gateway's views failed")
