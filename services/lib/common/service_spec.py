"""How a service declares what it hosts, so one process can run one service or all of them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from fastapi import APIRouter

from contracts import Envelope, EventData
from services.lib.common.migrations import Migration
from services.lib.common.mongo import IndexSpec

PUBLIC_READ = "*"        # owner of buckets every tenant may read (platform presets); only the platform writes
PLATFORM = "@platform"   # owner of buckets only the platform's services use; no tenant id looks like this


@dataclass(frozen=True)
class PlatformBucket:
    """A bucket a service needs the platform to own (reserved at start-up, never a tenant's)."""
    name: str
    public_read: bool = False

    @property
    def owner(self) -> str:
        return PUBLIC_READ if self.public_read else PLATFORM


Handler = Callable[..., Awaitable[None]]  # (platform or component, envelope, event) -> None


@dataclass(frozen=True)
class Consumer:
    group: str                          # consumer group (prefixed with the topic prefix at run time)
    topic: str                          # logical topic, see contracts.events
    handlers: dict[type[EventData], Handler]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    routers: list[APIRouter] = field(default_factory=list)
    # The latency-critical data plane (the OpenAI API): included before every other router, because
    # each request walks the route list in order, once to route and once more for its trace span.
    hot_routers: list[APIRouter] = field(default_factory=list)
    indexes: list[IndexSpec] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    background: list[Callable[..., Awaitable[None]]] = field(default_factory=list)  # (platform) -> None
    uses_models: bool = False           # loads torch/transformers in worker threads
    buckets: list[PlatformBucket] = field(default_factory=list)  # reserved for the platform at start-up
    # What the service builds once per process (a job runner, the chat gateway, the reconciler):
    # ``component(platform)``, called by the composition root. When set, the service's handlers and
    # background tasks receive that object instead of the platform, and its routes reach it with
    # ``services.lib.common.context.get_component(name)``. Nothing keeps it in a module-level registry.
    component: Callable[[Any], Any] | None = None
    # The event types its code emits (``uow.emit``), for the event catalogue (services/lib/common/asyncapi.py);
    # tests/unit/test_asyncapi.py fails when the code emits one its service does not declare, or the reverse.
    publishes: list[type[EventData]] = field(default_factory=list)
    # Its data migrations (services.lib.common.migrations), applied at start-up by a process hosting it.
    migrations: list[Migration] = field(default_factory=list)

    def topics(self) -> set[str]:
        return {c.topic for c in self.consumers}


def envelope_handler_types(consumer: Consumer) -> dict[tuple[str, int], tuple[type[EventData], Handler]]:
    return {(cls.type, cls.version): (cls, fn) for cls, fn in consumer.handlers.items()}


__all__ = ["Consumer", "Envelope", "Handler", "ServiceSpec", "envelope_handler_types"]
