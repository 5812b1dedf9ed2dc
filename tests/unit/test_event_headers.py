"""The CloudEvents Kafka binding headers of published events, read back with the CloudEvents SDK."""
from __future__ import annotations

from datetime import UTC, datetime

from cloudevents.core.bindings import kafka as kafka_binding

from contracts import Envelope
from services.lib.common.event_headers import cloudevents_headers


def test_the_headers_are_a_binary_mode_cloudevent_whose_data_is_the_envelope():
    env = Envelope(type="ModelCreated", version=2, tenant_id="t1", subject="models/m1", data={"model_id": "m1"},
                   occurred_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC))
    headers = cloudevents_headers(env, topic="maas.registry.events")
    assert all(name == "content-type" or name.startswith("ce_") for name in headers)
    event = kafka_binding.from_binary_event(kafka_binding.KafkaMessage(
        headers={k: v.encode() for k, v in headers.items()}, key=env.subject.encode(),
        value=env.model_dump_json().encode()))
    assert event.get_attributes() | {"time": None} == {
        "specversion": "1.0", "id": env.id, "type": "io.openmaas.ModelCreated",
        "source": "/openmaas/maas.registry.events",
        "subject": "models/m1", "time": None, "datacontenttype": "application/json", "tenantid": "t1", "version": "2",
        "partitionkey": "models/m1"}
    assert event.get_time() == env.occurred_at
    assert Envelope.model_validate(event.get_data()) == env


def test_a_naive_time_is_taken_as_utc():
    env = Envelope(type="X", tenant_id="t", subject="s/1", data={}, occurred_at=datetime(2026, 1, 2, 3, 4, 5))
    assert cloudevents_headers(env, topic="t")["ce_time"] == "2026-01-02T03:04:05Z"
