"""Composition root: builds one process hosting the chosen services (all of them in embedded mode).

The only module that imports every service; services themselves never import each other.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from faststream import AckPolicy

import services
import services.apps
from contracts import Envelope
from services.lib.common import asyncapi, audit, health, metrics, outbox
from services.lib.common.bus import ensure_topics, topic_name
from services.lib.common.context import Platform
from services.lib.common.errors import install_error_handlers
from services.lib.common.http import BodySizeLimit
from services.lib.common.migrations import migrate
from services.lib.common.openapi_errors import document_errors
from services.lib.common.notices import StallNotice
from services.lib.common.service_spec import Consumer, PlatformBucket, ServiceSpec, envelope_handler_types
from services.lib.common.settings import Settings, get_settings
from services.lib.readmodels.buckets import reserve_platform_buckets
from services.lib.common.telemetry import isolate_request_context, tracer_provider
from services.lib.iam import authorize as authorization

log = logging.getLogger(__name__)

def _discover() -> dict[str, ServiceSpec]:
    """Every ServiceSpec declared in a ``services/<name>/spec.py`` or ``services/apps/<name>/spec.py``
    (the console is an app the platform serves)."""
    found: dict[str, ServiceSpec] = {}
    for parent in (services, services.apps):
        for info in sorted(pkgutil.iter_modules(parent.__path__), key=lambda i: i.name):
            if info.ispkg:
                _collect(f"{parent.__name__}.{info.name}", found)
    return found


def _collect(package: str, found: dict[str, ServiceSpec]) -> None:
    try:
        module = importlib.import_module(f"{package}.spec")
    except ModuleNotFoundError as exc:
        if exc.name == f"{package}.spec":
            return  # not a service: the libraries, the apps' folder, the CLI
        raise
    for value in vars(module).values():
        if isinstance(value, ServiceSpec):
            if value.name in found:
                raise RuntimeError(f"two services are named {value.name!r}")
            found[value.name] = value


SERVICES: dict[str, ServiceSpec] = _discover()
VERSION = "0.1.0"


def event_catalogue() -> dict:
    """The AsyncAPI document of every service's events, whatever this process hosts (contracts/asyncapi.json)."""
    return asyncapi.build_document(SERVICES.values(), version=VERSION)


def select_services(names: str) -> list[ServiceSpec]:
    if names.strip() in ("", "all"):
        return list(SERVICES.values())
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; known: {sorted(SERVICES)}")
    return [SERVICES[n] for n in chosen]


def dispatcher(platform: Platform, group: str, handlers: dict):
    """The function a consumer group calls per message: decode, time, hand to the event's handler."""
    async def dispatch(body: dict) -> None:
        envelope = Envelope.model_validate(body)
        entry = handlers.get((envelope.type, envelope.version))
        if entry is None:
            metrics.observe_consumed(group=group, event_type=envelope.type, outcome="ignored", seconds=0)
            return  # another consumer's event on a shared topic
        event_cls, handler = entry
        waited = metrics.observe_delivery(group=group, event_type=envelope.type, occurred_at=envelope.occurred_at)
        if waited > platform.settings.slow_event_seconds:
            # Names the slow hop when an event chain stalls (a busy broker, a rebalance, a blocked loop).
            log.warning("%s %s reached consumer group %s %.1f s after it occurred", envelope.type, envelope.id,
                        group, waited)
        started, outcome = time.perf_counter(), "error"
        try:
            await handler(platform, envelope, event_cls.model_validate(envelope.data))
            outcome = "ok"
        finally:
            metrics.observe_consumed(group=group, event_type=envelope.type, outcome=outcome,
                                     seconds=time.perf_counter() - started)
    return dispatch


def _subscribe(platform: Platform, group: str, consumers: list[Consumer]) -> None:
    """One Kafka consumer per group, over all of its topics: each group join costs seconds."""
    handlers = {}
    for consumer in consumers:
        handlers.update(envelope_handler_types(consumer))
    settings = platform.settings
    platform.broker.subscriber(
        *sorted({topic_name(settings, c.topic) for c in consumers}),
        group_id=f"{settings.topic_prefix}.{group}",
        auto_offset_reset="earliest",
        # At-least-once: the offset is committed after the handler; a failure re-delivers.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        # A group join waits about half the session timeout on Tansu; 6 s keeps start-up and
        # rebalances short while heartbeats (1.5 s) still tolerate a busy event loop.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
        # Tansu answers a waiting fetch only when the wait expires, not when data arrives: a short
        # wait keeps event hops near 10 ms instead of ~250 ms (benchmarks/bench_event_pipeline.py).
        fetch_max_wait_ms=50,
    )(dispatcher(platform, group, handlers))


def _bound(consumer: Consumer, target: object) -> Consumer:
    """The consumer with handlers that receive ``target`` (the service's component, or the platform)."""
    def bind(handler):
        async def handle(platform: Platform, envelope: Envelope, event) -> None:
            await handler(target, envelope, event)
        return handle
    if isinstance(target, Platform):
        return consumer
    return Consumer(group=consumer.group, topic=consumer.topic,
                    handlers={cls: bind(fn) for cls, fn in consumer.handlers.items()})


def build_app(settings: Settings | None = None, *, services: str | None = None) -> FastAPI:
    settings = settings or get_settings()
    specs = select_services(services if services is not None else settings.services)
    platform = Platform.connect(settings)
    components = {s.name: s.component(platform) for s in specs if s.component is not None}
    groups: dict[str, list[Consumer]] = {}
    for spec in specs:
        target = components.get(spec.name, platform)
        for consumer in spec.consumers:
            groups.setdefault(consumer.group, []).append(_bound(consumer, target))
    for group, consumers in groups.items():
        _subscribe(platform, group, consumers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if any(s.uses_models for s in specs):
            from services.lib.mlkit import preload_transformers

            await asyncio.to_thread(preload_transformers)  # before any worker thread touches it
        # Every process's units of work may write the audit log: its collection exists everywhere.
        indexes = list(outbox.INDEXES) + list(audit.INDEXES) + [i for s in specs for i in s.indexes]
        await platform.mongo.ensure_indexes(indexes)
        await migrate(platform.mongo, [m for s in specs for m in s.migrations],
                      known={m.id for s in SERVICES.values() for m in s.migrations})
        await audit.ensure_retention(platform.mongo, days=settings.audit_retention_days)
        await reserve_platform_buckets(platform, {PlatformBucket(settings.system_bucket),
                                                  *(b for s in specs for b in s.buckets)})
        topics = sorted({t for s in specs for t in s.topics()} | _published_topics() | {health.HEALTH_TOPIC})
        await ensure_topics(settings, topics)
        await platform.broker.start()
        tasks = [asyncio.create_task(platform.relay.run(), name="outbox-relay")]
        tasks += [asyncio.create_task(job(components.get(s.name, platform)), name=job.__name__)
                  for s in specs for job in s.background]
        log.info("services up: %s", ", ".join(s.name for s in specs))
        try:
            yield
        finally:
            platform.relay.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await platform.broker.stop()
            platform.mongo.close()

    app = FastAPI(title="OpenMaaS", version=VERSION, lifespan=lifespan,
                  description="Self-hosted Model-as-a-Service: console REST API under /api/v1.")
    app.state.platform = platform
    app.state.components = components
    app.state.services = [s.name for s in specs]
    install_error_handlers(app, retry_after=settings.unavailable_retry_after_seconds, disk_watch=platform.disk)
    document_errors(app)  # the OpenAPI document shows the 400/401/404/... bodies the handlers answer
    # No span per ASGI send/receive: a streamed chat answer would otherwise cost one span per chunk;
    # none for probes and the console's static files either (they would crowd out the traces).
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider(settings),
                                       excluded_urls="healthz,console/assets/,favicon.ico",
                                       exclude_spans=["send", "receive"])
    isolate_request_context(app)  # outside the instrumentation: one trace per request, always
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, exempt_prefixes=("/api/v1/storage/objects/",))
    app.add_middleware(StallNotice, stall=platform.relay.stall)
    app.add_middleware(audit.AuditTrail, mongo=platform.mongo)   # outermost: it sees every answer
    for router in [r for spec in specs for r in spec.hot_routers]:
        app.include_router(router)
    app.include_router(health.router)  # every process answers /healthz, whatever it hosts
    app.include_router(asyncapi.router(event_catalogue()))   # /asyncapi.json beside /docs, likewise
    for spec in specs:
        for router in spec.routers:
            app.include_router(router)
    authorization.install(app)  # the grant cache, and each route's action in the OpenAPI document
    return app


def _published_topics() -> set[str]:
    from contracts import ALL_EVENTS

    return {e.topic for e in ALL_EVENTS}
