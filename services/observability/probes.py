"""Scrape-time gauges read from MongoDB and Kafka: outbox backlog and consumer lag (cached)."""
from __future__ import annotations

import asyncio
import logging

from aiokafka import TopicPartition

from services.lib.common import metrics
from services.lib.common.bus import end_offsets
from services.lib.common.outbox import OUTBOX

log = logging.getLogger(__name__)


async def outbox_backlog(platform) -> None:
    metrics.outbox_pending.set(await platform.mongo[OUTBOX].count_documents({"published": False}))


class ConsumerLag:
    """Per group and topic: end offsets minus committed offsets, for this platform's groups."""

    def __init__(self, settings):
        self.settings = settings
        self._admin = None
        self._consumer = None

    async def _clients(self):
        if self._admin is None:
            from aiokafka import AIOKafkaConsumer
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                                        max_partition_fetch_bytes=1024)   # fetched for the high watermark only
            await admin.start()
            await consumer.start()
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def __call__(self, platform) -> None:
        admin, consumer = await self._clients()
        prefix = f"{self.settings.topic_prefix}."
        topics = sorted(t for t in await consumer.topics() if t.startswith(prefix))
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await end_offsets(consumer, partitions)
        lag: dict[tuple[str, str], int] = {}
        for group_id, *_ in await admin.list_consumer_groups():
            if not group_id.startswith(prefix) or not partitions:
                continue
            # Explicit partitions: "all of the group's offsets" (partitions=None) is not understood
            # by every Kafka-protocol broker (Tansu answers it with a malformed response).
            committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
            for tp, meta in committed.items():
                if meta.offset < 0:
                    continue  # the group has no offset there: it does not read that topic (yet)
                key = (group_id.removeprefix(prefix), tp.topic)
                lag[key] = lag.get(key, 0) + max(0, ends.get(tp, 0) - meta.offset)
        metrics.consumer_lag.clear()
        for (group, topic), value in lag.items():
            metrics.consumer_lag.labels(group=group, topic=topic).set(value)

    async def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    await client.stop() if hasattr(client, "stop") else await client.close()
                except Exception:
                    log.debug("closing a lag probe client failed", exc_info=True)
        self._admin = self._consumer = None


async def run_probes(platform) -> None:
    """Background task: register the probes, and close their Kafka clients at shutdown."""
    lag = ConsumerLag(platform.settings)
    metrics.on_scrape("observability.outbox", outbox_backlog, every=5)
    metrics.on_scrape("observability.consumer_lag", lag, every=15)
    try:
        await asyncio.Event().wait()
    finally:
        await lag.close()
