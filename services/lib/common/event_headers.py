"""CloudEvents Kafka protocol binding, binary content mode, for the events the platform publishes.

Each event's Kafka message carries the CloudEvents 1.0 attributes as ``ce_*`` headers, so any
CloudEvents SDK or tool reads it as a CloudEvent. Compatible by construction: the message value is
still the platform envelope (contracts.envelope, what existing consumers parse), and in binary mode
the value is the CloudEvent's ``data``; the key is still the subject (the SDKs read it as the
``partitionkey`` extension).

- ``ce_id`` = envelope id, ``ce_type`` = ``io.openmaas.<event type>``, ``ce_source`` =
  ``/openmaas/<Kafka topic>`` (the topic carries the deployment's prefix, so id+source stay unique
  across deployments), ``ce_subject`` = the aggregate (``models/<id>``), ``ce_time`` = when the
  event occurred (RFC 3339, UTC), ``ce_specversion`` = ``1.0``, ``content-type`` = ``application/json``;
- extensions (names lowercase alphanumeric, as the spec requires): ``ce_tenantid`` (the tenant the
  event belongs to) and ``ce_version`` (the event type's schema version).
"""
from __future__ import annotations

from datetime import UTC

from contracts import Envelope

SPECVERSION = "1.0"
TYPE_PREFIX = "io.openmaas."
SOURCE_PREFIX = "/openmaas/"


def cloudevents_headers(envelope: Envelope, *, topic: str) -> dict[str, str]:
    occurred = envelope.occurred_at
    occurred = occurred.replace(tzinfo=UTC) if occurred.tzinfo is None else occurred.astimezone(UTC)
    return {
        "ce_specversion": SPECVERSION,
        "ce_id": envelope.id,
        "ce_type": TYPE_PREFIX + envelope.type,
        "ce_source": SOURCE_PREFIX + topic,
        "ce_subject": envelope.subject,
        "ce_time": occurred.isoformat().replace("+00:00", "Z"),
        "content-type": "application/json",
        "ce_tenantid": envelope.tenant_id,
        "ce_version": str(envelope.version),
    }
