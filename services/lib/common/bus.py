"""Kafka through FastStream: broker factory, topic names and envelope publishing."""
from __future__ import annotations

import asyncio
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


async def end_offsets(consumer, partitions: list, *, timeout: float = 3.0) -> dict:
    """Each partition's end offset (its high watermark), as a started ``AIOKafkaConsumer`` of no group
    sees it; the consumer is left assigned to ``partitions``.

    ListOffsets alone is not enough: Tansu 0.6.0 answers it with a too-low offset after a batch of
    several records (10 records gave 1). A fetch's high watermark is right on every broker, so the
    partitions are fetched (from ListOffsets' answer on, a KiB at most each) and the larger of the two
    kept; a partition no fetch answered for within ``timeout`` keeps ListOffsets' answer."""
    if not partitions:
        return {}
    listed = await consumer.end_offsets(partitions)
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, listed.get(tp, 0))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(consumer.highwater(tp) is None for tp in partitions) and loop.time() < deadline:
        await consumer.getmany(timeout_ms=200, max_records=len(partitions))
    return {tp: max(listed.get(tp, 0), consumer.highwater(tp) or 0) for tp in partitions}
