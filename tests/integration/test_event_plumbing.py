"""Outbox atomicity, idempotent handlers and trace context across Kafka, on the real servers."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cloudevents.core.bindings import kafka as kafka_binding
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Envelope, new_id
from contracts.events import ModelVersionStatusChanged, TaskRecordChanged, WeightValidationCompleted
from services.lib.common.bus import end_offsets, topic_name
from services.lib.common.outbox import OUTBOX
from services.lib.common.telemetry import tracer_provider
from services.lib.mlkit.tiny import build_tiny_model
from services.registry import handlers
from services.registry.models import MODELS, TASK_RECORDS, VERSIONS
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


class Boom(Exception):
    pass


async def test_a_failed_unit_of_work_writes_neither_state_nor_event(running_platform):
    platform = running_platform["platform"]
    doc_id = new_id()
    with pytest.raises(Boom):
        async with platform.uow() as uow:
            await uow.collection(MODELS).insert_one({"_id": doc_id, "tenant_id": "t"}, session=uow.session)
            uow.emit(TaskRecordChanged(task_id=doc_id, task_kind="tuning", model_id="m", version_id="v",
                                       status="running"), tenant_id="t", subject="x")
            raise Boom()
    assert await platform.mongo[MODELS].find_one({"_id": doc_id}) is None
    assert await platform.mongo[OUTBOX].count_documents({"envelope.data.task_id": doc_id}) == 0


async def test_state_and_event_commit_together_and_the_relay_publishes(running_platform):
    platform = running_platform["platform"]
    doc_id = new_id()
    async with platform.uow() as uow:
        await uow.collection(MODELS).insert_one({"_id": doc_id, "tenant_id": "t"}, session=uow.session)
        env = uow.emit(TaskRecordChanged(task_id=doc_id, task_kind="tuning", model_id="m", version_id="v",
                                         status="running", removed=True), tenant_id="t", subject="x")
    assert await platform.mongo[MODELS].find_one({"_id": doc_id}) is not None

    async def published():
        doc = await platform.mongo[OUTBOX].find_one({"_id": env.id})
        return doc and doc["published"]
    await wait_for(published, timeout=30)
    await platform.mongo[MODELS].delete_one({"_id": doc_id})


async def test_events_on_kafka_are_cloudevents_and_their_value_is_still_the_envelope(running_platform):
    """CloudEvents Kafka binding, binary mode: the SDK reads the event from the ce_* headers, and a
    consumer of the envelope (the value) reads it as before."""
    platform = running_platform["platform"]
    topic = topic_name(platform.settings, TaskRecordChanged.topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await wait_for(
            lambda: _partitions(consumer, topic), timeout=30)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)   # the end is fixed before the event goes out
        task_id = new_id()
        async with platform.uow() as uow:
            env = uow.emit(TaskRecordChanged(task_id=task_id, task_kind="tuning", model_id="m", version_id="v",
                                             status="running", removed=True),
                           tenant_id="tenant-ce", subject=f"tasks/{task_id}")

        async def received():
            batch = await consumer.getmany(timeout_ms=500)
            return next((rec for records in batch.values() for rec in records
                         if dict(rec.headers).get("ce_id") == env.id.encode()), None)
        record = await wait_for(received, timeout=30)
    finally:
        await consumer.stop()

    event = kafka_binding.from_binary_event(
        kafka_binding.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value))
    assert event.get_specversion() == "1.0"
    assert (event.get_id(), event.get_type(), event.get_source(), event.get_subject()) == (
        env.id, "io.openmaas.TaskRecordChanged", f"/openmaas/{topic}", f"tasks/{task_id}")
    assert event.get_time() == env.occurred_at and event.get_time().tzinfo is not None
    assert event.get_datacontenttype() == "application/json"
    assert (event.get_extension("tenantid"), event.get_extension("version")) == ("tenant-ce", str(env.version))
    assert event.get_extension("partitionkey") == f"tasks/{task_id}"   # the Kafka key, as before
    # The value is the envelope, unchanged: the CloudEvent's data, and what existing consumers parse.
    assert Envelope.model_validate(event.get_data()) == env
    assert Envelope.model_validate_json(record.value) == env
    assert dict(record.headers)["event-type"] == b"TaskRecordChanged"


async def _partitions(consumer: AIOKafkaConsumer, topic: str):
    await consumer.topics()   # fetches the cluster's metadata
    return sorted(consumer.partitions_for_topic(topic) or [])


async def _version_in_creating(platform) -> tuple[str, str, str]:
    model_id, version_id, task_id = new_id(), new_id(), new_id()
    await platform.mongo[MODELS].insert_one({"_id": model_id, "tenant_id": "tenant-x", "name": f"m{model_id[:6]}",
                                             "status": "creating"})
    await platform.mongo[VERSIONS].insert_one({"_id": version_id, "tenant_id": "tenant-x", "model_id": model_id,
                                               "number": 1, "status": "creating"})
    await platform.mongo[TASK_RECORDS].insert_one({"_id": task_id, "tenant_id": "tenant-x", "model_id": model_id,
                                                   "version_id": version_id, "kind": "weight_validation",
                                                   "status": "running"})
    return model_id, version_id, task_id


async def test_the_same_event_handled_twice_has_one_effect(running_platform):
    platform = running_platform["platform"]
    model_id, version_id, task_id = await _version_in_creating(platform)
    event = WeightValidationCompleted(task_id=task_id, model_id=model_id, version_id=version_id, ok=True)
    envelope = Envelope.wrap(event, tenant_id="tenant-x", subject=f"models/{model_id}")
    # Concurrent duplicates, as a redelivery after a rebalance would produce.
    await asyncio.gather(*(handlers.on_validation_completed(platform, envelope, event) for _ in range(2)),
                         return_exceptions=True)
    await handlers.on_validation_completed(platform, envelope, event)
    assert (await platform.mongo[VERSIONS].find_one({"_id": version_id}))["status"] == "created"
    emitted = await platform.mongo[OUTBOX].count_documents(
        {"envelope.type": ModelVersionStatusChanged.type, "envelope.data.version_id": version_id})
    assert emitted == 1


async def test_a_redelivered_kafka_message_is_applied_once(running_platform):
    """Publish the very same envelope twice on the broker: the registry consumer applies it once."""
    platform = running_platform["platform"]
    model_id, version_id, task_id = await _version_in_creating(platform)
    event = WeightValidationCompleted(task_id=task_id, model_id=model_id, version_id=version_id, ok=False,
                                      message="Failed to read user config.json.")
    envelope = Envelope.wrap(event, tenant_id="tenant-x", subject=f"models/{model_id}")
    topic = topic_name(platform.settings, event.topic)
    for _ in range(2):
        await platform.broker.publish(envelope.model_dump(mode="json"), topic=topic, key=envelope.subject.encode())

    async def settled():
        v = await platform.mongo[VERSIONS].find_one({"_id": version_id})
        return v["status"] == "failed"
    await wait_for(settled, timeout=60)
    await asyncio.sleep(2)  # give the duplicate time to arrive and be skipped
    assert await platform.mongo["processed_events"].count_documents(
        {"consumer": "registry", "event_id": envelope.id}) == 1  # other consumers (the notifier) claim their own
    assert await platform.mongo[OUTBOX].count_documents(
        {"envelope.type": ModelVersionStatusChanged.type, "envelope.data.version_id": version_id}) == 1


async def test_one_trace_runs_from_the_http_request_through_kafka_to_the_worker(api, running_platform, tmp_path):
    platform = running_platform["platform"]
    exporter = InMemorySpanExporter()
    tracer_provider(platform.settings, extra_processors=[SimpleSpanProcessor(exporter)])
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    folder = build_tiny_model(tmp_path / "m")
    for f in folder.iterdir():
        await api.put(f"/api/v1/storage/objects/{bucket}/traced/{f.name}", content=f.read_bytes())

    consumer = AIOKafkaConsumer(topic_name(platform.settings, "registry.events"),
                                bootstrap_servers=platform.settings.kafka_bootstrap, auto_offset_reset="latest")
    await consumer.start()
    try:
        await consumer.seek_to_end()
        r = await api.post("/api/v1/models", json={"name": "traced", "template_id": "qwen2-custom",
                                                   "weights_path": f"{bucket}/traced"})
        assert r.status_code == 201
        model_id = r.json()["id"]

        async def post_span():  # the server span ends just after the response is sent
            return [s for s in exporter.get_finished_spans()
                    if s.name == "POST /api/v1/models"]
        trace_id = (await wait_for(post_span, timeout=10))[-1].context.trace_id

        headers = None
        async def model_created_headers():
            nonlocal headers
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    body = json.loads(rec.value)
                    if body["type"] == "ModelCreated" and body["data"]["model_id"] == model_id:
                        headers = dict(rec.headers)
            return headers
        await wait_for(model_created_headers, timeout=30)
        traceparent = headers["traceparent"].decode()
        assert int(traceparent.split("-")[1], 16) == trace_id
    finally:
        await consumer.stop()

    # The weight worker's consumer span belongs to the same trace.
    async def worker_span():
        return [s for s in exporter.get_finished_spans()
                if s.context.trace_id == trace_id and s.kind.name == "CONSUMER"]
    spans = await wait_for(worker_span, timeout=60)
    assert any("registry.events" in s.name for s in spans)


async def test_end_offsets_count_every_record_of_a_batch(embedded_servers):
    """Consumer lag is end offset minus committed offset: the end offset must count each record of a
    batch (Tansu's ListOffsets alone answered 1 for a batch of 10)."""
    bootstrap, topic = embedded_servers.kafka_bootstrap, f"maas-offsets-{new_id()[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)   # one batch of ten records
    await producer.start()
    try:
        sent = [await producer.send(topic, b"record", partition=0) for _ in range(10)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=1024)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        assert await end_offsets(consumer, partitions) == {partitions[0]: 10, partitions[1]: 0}
    finally:
        await consumer.stop()
