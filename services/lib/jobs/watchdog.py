"""The lease watchdog of the job engine: a running job whose runner stopped renewing its lease (the
process died, the machine went away) is handed to its kind's ``recover`` (re-queue or fail), in one
unit of work fenced by that run's id and its expired lease, so a late renewal always wins."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from services.lib.common.context import Platform, transact
from services.lib.common.jobs import JobLogs, now

log = logging.getLogger(__name__)


class Recoverable(Protocol):
    name: str
    jobs: str
    logs: JobLogs

    async def recover(self, uow, job: dict, at: datetime) -> str | None:
        """Re-queue or fail one job whose lease expired at ``at``; the log message, or None when its
        runner came back meanwhile (the kind fences its update with the run id and the lease)."""


async def recover_expired(platform: Platform, kind: Recoverable) -> int:
    """Handle every running job of ``kind`` whose lease has expired; the number handled."""
    at, handled = now(), 0
    async for job in platform.mongo[kind.jobs].find({"status": "running", "run.lease_until": {"$lt": at}}):
        async def recover(uow, job=job) -> str | None:
            message = await kind.recover(uow, job, at)
            if message is not None:   # the line commits with the change it tells of
                await kind.logs.append(platform, job_id=job["_id"], tenant_id=job["tenant_id"],
                                       lines=[f"[maas] {message}"], session=uow.session)
            return message

        message = await transact(platform, recover)
        if message is not None:
            handled += 1
            log.warning("%s job %s: %s", kind.name, job["_id"], message)
    return handled


async def watch(platform: Platform, kind: Recoverable, *, every_seconds: float,
                also: tuple[Callable[[], Awaitable[object]], ...] = ()) -> None:
    """Recover expired leases (and run ``also``) every ``every_seconds``, forever."""
    while True:
        try:
            await recover_expired(platform, kind)
            for extra in also:
                await extra()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s lease watchdog failed; retrying", kind.name)
        await asyncio.sleep(every_seconds)
