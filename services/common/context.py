"""What every service needs at hand: settings and the adapters to Kafka, MongoDB and S3."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from faststream.kafka import KafkaBroker

from services.common.bus import make_broker
from services.common.mongo import Mongo
from services.common.objectstore import ObjectStore
from services.common.outbox import OutboxRelay, UnitOfWork
from services.common.settings import Settings


@dataclass
class Platform:
    settings: Settings
    mongo: Mongo
    store: ObjectStore
    broker: KafkaBroker
    relay: OutboxRelay = field(init=False)

    def __post_init__(self) -> None:
        self.relay = OutboxRelay(self.mongo, self.broker, self.settings)

    @classmethod
    def connect(cls, settings: Settings) -> "Platform":
        return cls(settings=settings, mongo=Mongo(settings), store=ObjectStore(settings), broker=make_broker(settings))

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.mongo, self.settings, on_commit=self.relay.nudge)


async def get_platform(request: Request) -> Platform:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    # on every request (the first token of every chat call waited for it).
    return request.app.state.platform
