"""Kafka through FastStream: broker factory, topic names and envelope publishing."""
from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

from contracts import Envelope
from services.lib.common import metrics
from services.lib.common.event_headers import cloudevents_headers
from services.lib.common.settings import Settings
from services.lib.common.telemetry import tracer_provider


def topic_name(settings: Settings, logical_topic: str) -> str:
    return f"{settings.topic_prefix}.{logical_topic}"


def make_broker(settings: Settings) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider(settings))],
        client_id=settings.service_name,
        logger=None,
    )


async def publish_envelope(broker: KafkaBroker, *, topic: str, envelope: Envelope,
                           headers: dict[str, Any] | None = None) -> None:
    # Keyed by subject: every event of one aggregate lands on one partition, in order. The ce_*
    # headers make the message a CloudEvent (Kafka binding, binary mode) without changing its value.
    await broker.publish(
        envelope.model_dump(mode="json"),
        topic=topic,
        key=envelope.subject.encode(),
        headers={"event-type": envelope.type, **cloudevents_headers(envelope, topic=topic), **(headers or {})},
    )
    metrics.count_published(topic=topic, event_type=envelope.type)


async def ensure_topics(settings: Settings, logical_topics: list[str], *, partitions: int = 3) -> None:
    """Create missing topics (idempotent). Partitions bound how many consumers of a group share the work."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(topic_name(settings, t), num_partitions=partitions, replication_factor=1)
                  for t in logical_topics if topic_name(settings, t) not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
