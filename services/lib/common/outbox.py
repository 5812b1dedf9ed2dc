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
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Stall:
    """The relay cannot publish: since when (UTC) and why."""
    since: datetime
    reason: str


class OutboxRelay:
    """Publishes committed outbox documents to Kafka in order.

    While it cannot publish (the broker is down, or a publish hangs for ``STALLED_AFTER_S``) it is
    *stalled*: the state changes are saved, the work their events start waits. ``stall()`` says so,
    for the API to tell its callers (``services.lib.common.notices``); the log says it once when the
    relay stalls and once when it is through again, not once per retry."""

    STALLED_AFTER_S = 5.0

    def __init__(self, mongo: Mongo, broker, settings: Settings, *, batch: int = 100):
        self.mongo, self.broker, self.settings, self.batch = mongo, broker, settings, batch
        self._wake = asyncio.Event()
        self._stopped = False
        self._failing: Stall | None = None
        self._publishing_since: tuple[float, datetime] | None = None   # (monotonic, UTC) of a publish under way

    def nudge(self) -> None:
        self._wake.set()

    def stall(self) -> Stall | None:
        if self._failing is not None:
            return self._failing
        under_way = self._publishing_since
        if under_way is not None and time.monotonic() - under_way[0] >= self.STALLED_AFTER_S:
            return Stall(since=under_way[1], reason="the Kafka broker does not answer")
        return None

    async def publish_pending(self) -> int:
        published = 0
        cursor = self.mongo[OUTBOX].find({"published": False}).sort("seq", ASCENDING).limit(self.batch)
        async for doc in cursor:
            token = otel_context.attach(propagate.extract(doc.get("trace") or {}))
            self._publishing_since = self._publishing_since or (time.monotonic(), datetime.now(UTC))
            try:
                await publish_envelope(self.broker, topic=doc["topic"], envelope=Envelope.model_validate(doc["envelope"]))
            finally:
                otel_context.detach(token)
            self._publishing_since = None
            await self.mongo[OUTBOX].update_one(
                {"_id": doc["_id"]}, {"$set": {"published": True, "published_at": datetime.now(UTC)}})
            published += 1
        return published

    async def run(self) -> None:
        while not self._stopped:
            try:
                while await self.publish_pending() == self.batch:
                    pass
                self._recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database hiccup: keep the events, try again shortly
                self._failed(exc)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.outbox_poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    def _failed(self, exc: Exception) -> None:
        under_way, self._publishing_since = self._publishing_since, None
        if self._failing is None:
            self._failing = Stall(since=under_way[1] if under_way else datetime.now(UTC),
                                  reason=f"{type(exc).__name__}: {exc}"[:200])
            log.warning("outbox relay cannot publish events (%s); the state changes are saved and their events "
                        "wait until it can (logged once until then)", self._failing.reason)

    def _recovered(self) -> None:
        if self._failing is not None:
            waited = (datetime.now(UTC) - self._failing.since).total_seconds()
            self._failing = None
            log.warning("outbox relay publishes again; events had waited up to %.0f s", waited)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
