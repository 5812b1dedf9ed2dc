"""MongoDB access through motor: one client per process, transactions as a context manager."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession, AsyncIOMotorDatabase

from services.lib.common.settings import Settings

# (collection, keys, options) — every field a query filters on is indexed: the embedded server
# does full scans otherwise (INFRA.md).
IndexSpec = tuple[str, list[tuple[str, int]], dict]


class Mongo:
    def __init__(self, settings: Settings):
        # Bounded waits: while MongoDB is down a call fails within seconds (answered 503 by
        # services.lib.common.unavailable) instead of pymongo's 30 s.
        self.client = AsyncIOMotorClient(
            settings.mongo_url, tz_aware=True, uuidRepresentation="standard",
            serverSelectionTimeoutMS=int(settings.mongo_server_selection_timeout_seconds * 1000),
            connectTimeoutMS=int(settings.mongo_connect_timeout_seconds * 1000))
        self.db: AsyncIOMotorDatabase = self.client[settings.mongo_db]

    def __getitem__(self, name: str):
        return self.db[name]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncIOMotorClientSession]:
        async with await self.client.start_session() as session:
            async with session.start_transaction():
                yield session

    async def ensure_indexes(self, specs: list[IndexSpec]) -> None:
        existing = set(await self.db.list_collection_names())
        for collection, keys, options in specs:
            if collection not in existing:
                # Collections must exist before a transaction writes to them.
                try:
                    await self.db.create_collection(collection)
                except Exception:  # created concurrently by another process
                    pass
                existing.add(collection)
            await self.db[collection].create_index(keys, **options)

    def close(self) -> None:
        self.client.close()
