"""Transactional outbox: state changes and their events commit together; a relay publishes.

A use case does its writes inside ``UnitOfWork`` and calls ``uow.emit(...)``; on exit the outbox
documents (and, in a request, its audit record) are inserted in the same MongoDB transaction and
committed with the state. The ``OutboxRelay`` publishes unpublished documents to Kafka in creation
order and marks them. If the process dies between publish and mark, the event goes out again:
consumers are idempotent (see ``mark_processed``), so at-least-once delivery has one effect.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Callable

from opentelemetry import context as otel_context
from opentelemetry import propagate
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from contracts import Envelope, EventData
from services.lib.common import audit
from services.lib.common.bus import publish_envelope, topic_name
from services.lib.common.mongo import IndexSpec, Mongo
from services.lib.common.settings import Settings

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PROCESSED = "processed_events"

INDEXES: list[IndexSpec] = [
    (OUTBOX, [("published", ASCENDING), ("seq", ASCENDING)], {}),
    (PROCESSED, [("consumer", ASCENDING), ("event_id", ASCENDING)], {"unique": True}),
]


class AlreadyProcessed(Exception):
    """This consumer has already handled this event; the unit of work was rolled back."""


class UnitOfWork:
    """One MongoDB transaction plus the events it emits."""

    def __init__(self, mongo: Mongo, settings: Settings, on_commit: Callable[[], None] | None = None):
        self.mongo = mongo
        self.settings = settings
        self._on_commit = on_commit
        self._events: list[tuple[str, Envelope]] = []
        self.session = None

    async def __aenter__(self) -> "UnitOfWork":
        self.session = await self.mongo.client.start_session()
        self.session.start_transaction()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if self._events:
                    await self._write_outbox()
                # The request's audit record commits with the change it records (services/lib/common/audit.py).
                trail = audit.pending()
                if trail is not None:
                    await audit.write(trail, self.mongo, session=self.session)
                await self.session.commit_transaction()
                if trail is not None:
                    trail.written = True
            else:
                await self.session.abort_transaction()
        finally:
            await self.session.end_session()
        if exc_type is None and self._events and self._on_commit:
            self._on_commit()
        if exc_type is AlreadyProcessed:
            return True  # a duplicate delivery: swallowed, nothing written
        return False

    def collection(self, name: str):
        return self.mongo[name]

    def emit(self, data: EventData, *, tenant_id: str, subject: str) -> Envelope:
        envelope = Envelope.wrap(data, tenant_id=tenant_id, subject=subject)
        self._events.append((topic_name(self.settings, data.topic), envelope))
        return envelope

    async def mark_processed(self, *, consumer: str, event_id: str) -> None:
        """Claim an event for this consumer inside the transaction; raises AlreadyProcessed if seen."""
        try:
            await self.mongo[PROCESSED].insert_one(
                {"consumer": consumer, "event_id": event_id, "at": datetime.now(UTC)}, session=self.session)
        except DuplicateKeyError:
            raise AlreadyProcessed(event_id) from None

    async def _write_outbox(self) -> None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the caller's trace continues when the relay publishes
        now = datetime.now(UTC)
        docs = [
            {"_id": env.id, "topic": topic, "envelope": env.model_dump(mode="json"), "trace": carrier,
             "published": False, "created_at": now, "seq": (now.timestamp(), i)}
            for i, (topic, env) in enumerate(self._events)
        ]
        await self.mongo[OUTBOX].insert_many(docs, session=self.session)


class OutboxRelay:
    """Publishes committed outbox documents to Kafka in order."""

    def __init__(self, mongo: Mongo, broker, settings: Settings, *, batch: int = 100):
        self.mongo, self.broker, self.settings, self.batch = mongo, broker, settings, batch
        self._wake = asyncio.Event()
        self._stopped = False

    def nudge(self) -> None:
        self._wake.set()

    async def publish_pending(self) -> int:
        published = 0
        cursor = self.mongo[OUTBOX].find({"published": False}).sort("seq", ASCENDING).limit(self.batch)
        async for doc in cursor:
            token = otel_context.attach(propagate.extract(doc.get("trace") or {}))
            try:
                await publish_envelope(self.broker, topic=doc["topic"], envelope=Envelope.model_validate(doc["envelope"]))
            finally:
                otel_context.detach(token)
            await self.mongo[OUTBOX].update_one(
                {"_id": doc["_id"]}, {"$set": {"published": True, "published_at": datetime.now(UTC)}})
            published += 1
        return published

    async def run(self) -> None:
        while not self._stopped:
            try:
                while await self.publish_pending() == self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # broker or database hiccup: keep the events, try again shortly
                log.exception("outbox relay failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.outbox_poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
