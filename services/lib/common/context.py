"""What every service needs at hand: settings and the adapters to Kafka, MongoDB, S3 and the compute cluster."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from faststream.kafka import KafkaBroker
from pymongo.errors import PyMongoError

from services.lib.common.bus import make_broker
from services.lib.common.cluster import ComputeCluster, connect_cluster
from services.lib.common.disk import DiskWatch
from services.lib.common.mongo import Mongo
from services.lib.common.objectstore import ObjectStore
from services.lib.common.outbox import OutboxRelay, UnitOfWork
from services.lib.common.settings import Settings


@dataclass
class Platform:
    settings: Settings
    mongo: Mongo
    store: ObjectStore
    broker: KafkaBroker
    cluster: ComputeCluster | None = None     # None: the one ``Settings`` selects
    relay: OutboxRelay = field(init=False)
    disk: DiskWatch = field(init=False)

    def __post_init__(self) -> None:
        self.relay = OutboxRelay(self.mongo, self.broker, self.settings)
        self.disk = DiskWatch.of(self.settings)
        if self.cluster is None:
            self.cluster = connect_cluster(self.settings)

    @classmethod
    def connect(cls, settings: Settings) -> "Platform":
        return cls(settings=settings, mongo=Mongo(settings), store=ObjectStore(settings), broker=make_broker(settings))

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.mongo, self.settings, on_commit=self.relay.nudge)


T = TypeVar("T")


async def transact(platform: Platform, work: Callable[[UnitOfWork], Awaitable[T]], *, attempts: int = 8) -> T | None:
    """Run ``work(uow)`` in a unit of work, again on a transient transaction error.

    A transaction that touches a document another writer changes meanwhile (a worker renewing its
    lease, the webhook sender updating a delivery, a concurrent request) loses with a write
    conflict; MongoDB labels those TransientTransactionError and the whole transaction is safe to
    repeat.
    """
    for attempt in range(attempts):
        try:
            async with platform.uow() as uow:
                return await work(uow)
        except PyMongoError as exc:
            transient = exc.has_error_label("TransientTransactionError") or exc.has_error_label(
                "UnknownTransactionCommitResult")
            if not transient or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.02 * (2 ** attempt) * (0.5 + random.random()))
    return None


def get_component(service: str) -> Callable[[Request], Awaitable[object]]:
    """A route dependency: the object the named service built for this app (``ServiceSpec.component``)."""
    async def component(request: Request) -> object:
        return request.app.state.components[service]
    return component


async def get_platform(request: Request) -> Platform:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    # on every request (the first token of every chat call waited for it).
    return request.app.state.platform
