"""Explicit, recorded data migrations.

A migration is an id that sorts in the order they were written (``"0001-..."``), a sentence, and an
idempotent async function of the database that returns how many documents it changed. Each service
declares its own (``ServiceSpec.migrations``); at start-up a process applies the pending ones of
the services it hosts, in id order, once: the first process to take the ``migrations`` lease applies
them and records each in ``schema_migrations`` (id, description, when, by whom, documents changed);
the others wait for the record. A database that records a migration this code does not know was
written by a newer release: the process refuses to start rather than misread it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.lib.common.leader import LEADERS, LeaderLease, dead_on_this_machine, holder_name

log = logging.getLogger(__name__)

MIGRATIONS = "schema_migrations"
_LOCK_SECONDS = 600.0


@dataclass(frozen=True)
class Migration:
    id: str
    description: str
    apply: Callable[..., Awaitable[int]]     # (db) -> documents changed; safe to run twice


class NewerData(RuntimeError):
    """The database was migrated by a newer release of the platform."""


async def migrate(db, migrations: list[Migration], *, known: set[str], wait_seconds: float = 0.5) -> list[str]:
    """Apply what is pending of ``migrations``; returns the ids applied here. ``known``: the ids of
    every migration of this release (all services), to recognise data of a newer one."""
    if len({m.id for m in migrations}) != len(migrations):
        raise ValueError("two migrations share an id")
    lease = LeaderLease(db[LEADERS], name="migrations", lease_seconds=_LOCK_SECONDS, holder=holder_name(),
                        gone=dead_on_this_machine)
    while True:
        recorded = {d["_id"] async for d in db[MIGRATIONS].find({}, {"_id": 1})}
        if unknown := recorded - known:
            raise NewerData(f"the database was migrated by a newer release ({', '.join(sorted(unknown))}); "
                            "run that release, or restore a backup taken before it")
        pending = sorted((m for m in migrations if m.id not in recorded), key=lambda m: m.id)
        if not pending:
            return []
        if await lease.hold():
            break
        await asyncio.sleep(wait_seconds)   # another process applies them: wait for its records
    applied = []
    try:
        recorded = {d["_id"] async for d in db[MIGRATIONS].find({}, {"_id": 1})}
        for migration in (m for m in pending if m.id not in recorded):
            changed = await migration.apply(db)
            await db[MIGRATIONS].insert_one({"_id": migration.id, "description": migration.description,
                                             "applied_at": datetime.now(UTC), "by": lease.holder,
                                             "documents_changed": changed})
            log.info("migration %s applied (%d documents): %s", migration.id, changed, migration.description)
            applied.append(migration.id)
    finally:
        await lease.release()
    return applied
