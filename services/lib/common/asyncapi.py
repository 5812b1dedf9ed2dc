"""The event catalogue: an AsyncAPI 3.0 document generated from the code's own registry of events.

Why not FastStream's AsyncAPI: the platform subscribes one dispatcher per consumer group (body: a
dict) and publishes through the outbox, not FastStream publishers, so FastStream sees one untyped
message per topic. The code knows more: every event type (``contracts.ALL_EVENTS``, with its topic,
version and JSON Schema), which service handles which (each ``ServiceSpec``'s consumers) and which
emits which (``ServiceSpec.publishes``, checked against the code by tests/unit/test_asyncapi.py).

- channels: one per logical topic; the address carries the deployment's prefix as a parameter
  (``MAAS_TOPIC_PREFIX``); messages: one per event type and version (``<Type>.v<version>``);
- payload: the envelope (the Kafka value) whose ``data`` is the event's schema, exactly the one in
  ``contracts/schemas/`` (``contracts.export.schema_for``);
- headers: the CloudEvents Kafka binding (binary mode, services/lib/common/event_headers.py),
  ``event-type`` and ``traceparent``; the Kafka key is the envelope's subject;
- operations: ``<service>.send.<topic>`` and ``<service>.receive.<topic>`` per service.
"""
from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

from contracts import ALL_EVENTS, Envelope, EventData
from contracts.export import schema_for
from services.lib.common.event_headers import SOURCE_PREFIX, SPECVERSION, TYPE_PREFIX
from services.lib.common.service_spec import ServiceSpec

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEFAULT_PREFIX = "maas"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
CLOUDEVENTS_KAFKA_BINDING = ("https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/"
                             "kafka-protocol-binding.md")
# Not an event: /healthz writes an empty record here to prove the broker stores writes (services/lib/common/health.py).
HEALTH_TOPIC = "health"


def message_id(event: type[EventData]) -> str:
    return f"{event.type}.v{event.version}"


def _rebase_refs(node: Any, base: str) -> Any:
    """Pydantic's ``#/$defs/X`` refs, made to point at the schema's new place in the document."""
    if isinstance(node, dict):
        return {k: (base + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#/")
                    else _rebase_refs(v, base)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase_refs(v, base) for v in node]
    return node


def _headers(event: type[EventData]) -> dict:
    text = {"type": "string"}
    return {
        "type": "object",
        "required": ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_subject", "ce_time", "content-type",
                     "ce_tenantid", "ce_version", "event-type"],
        "properties": {
            "ce_specversion": {"const": SPECVERSION, "description": "CloudEvents spec version"},
            "ce_id": {**text, "description": "the envelope id; dedupe on it (delivery is at least once)"},
            "ce_type": {"const": TYPE_PREFIX + event.type},
            "ce_source": {**text, "description": f"{SOURCE_PREFIX}<Kafka topic, prefix included>"},
            "ce_subject": {**text, "description": "the aggregate, e.g. models/<id> (also the Kafka key)"},
            "ce_time": {**text, "format": "date-time", "description": "when the event occurred, RFC 3339 UTC"},
            "content-type": {"const": "application/json"},
            "ce_tenantid": {**text, "description": "extension: the tenant the event belongs to"},
            "ce_version": {"const": str(event.version), "description": "extension: the event's schema version"},
            "event-type": {"const": event.type, "description": "the bare event type"},
            "traceparent": {**text, "description": "W3C trace context of the change that emitted it"},
        },
    }


def _message(event: type[EventData], *, publishers: list[str], consumers: list[str]) -> dict:
    doc = (event.__doc__ or "").strip()
    message = {
        "name": event.type,
        "title": f"{event.type} v{event.version}",
        "contentType": "application/json",
        "headers": _headers(event),
        "payload": {"allOf": [
            {"$ref": "#/components/schemas/Envelope"},
            {"type": "object", "properties": {
                "type": {"const": event.type}, "version": {"const": event.version},
                "data": {"$ref": f"#/components/schemas/{message_id(event)}"}}},
        ]},
        "bindings": {"kafka": {"key": {"type": "string", "description": "the envelope's subject"},
                               "bindingVersion": KAFKA_BINDING_VERSION}},
        "x-event-type": event.type,
        "x-version": event.version,
        "x-published-by": publishers,
        "x-consumed-by": consumers,
    }
    if doc:
        message["summary"] = doc.splitlines()[0]
    return message


def _channel(topic: str, messages: list[type[EventData]]) -> dict:
    channel = {
        "address": "{prefix}." + topic,
        "title": topic,
        "parameters": {"prefix": {"default": DEFAULT_PREFIX,
                                  "description": "the deployment's topic prefix (MAAS_TOPIC_PREFIX)"}},
        "messages": {message_id(e): {"$ref": f"#/components/messages/{message_id(e)}"} for e in messages},
    }
    if topic == HEALTH_TOPIC:
        channel["description"] = "Readiness probe records (an empty value), not events: nothing consumes them."
    else:
        channel["description"] = ("Events of every tenant, keyed by subject; one topic carries several event "
                                  "types, told apart by the `event-type` / `ce_type` header (or the envelope's "
                                  "`type` and `version`).")
    return channel


def _operation(action: str, service: str, topic: str, events: Iterable[type[EventData]], **extra) -> dict:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{topic}"},
        "title": f"{service} {'publishes to' if action == 'send' else 'consumes'} {topic}",
        "messages": [{"$ref": f"#/channels/{topic}/messages/{message_id(e)}"}
                     for e in sorted(events, key=message_id)],
        "x-service": service,
        **extra,
    }


def consumed(spec: ServiceSpec) -> dict[tuple[str, str], set[type[EventData]]]:
    """(consumer group, topic) -> the event types the service handles there."""
    found: dict[tuple[str, str], set[type[EventData]]] = {}
    for consumer in spec.consumers:
        found.setdefault((consumer.group, consumer.topic), set()).update(consumer.handlers)
    return found


def build_document(specs: Iterable[ServiceSpec], *, version: str,
                   events: Iterable[type[EventData]] = ALL_EVENTS) -> dict:
    specs = sorted(specs, key=lambda s: s.name)
    events = sorted(events, key=lambda e: (e.topic, e.type, e.version))
    publishers = {e: sorted(s.name for s in specs if e in s.publishes) for e in events}
    consumers = {e: sorted({s.name for s in specs for c in s.consumers if e in c.handlers}) for e in events}
    topics = sorted({e.topic for e in events} | {c.topic for s in specs for c in s.consumers} | {HEALTH_TOPIC})

    operations: dict[str, dict] = {}
    for spec in specs:
        by_topic: dict[str, list[type[EventData]]] = {}
        for event in spec.publishes:
            by_topic.setdefault(event.topic, []).append(event)
        for topic, sent in sorted(by_topic.items()):
            operations[f"{spec.name}.send.{topic}"] = _operation("send", spec.name, topic, sent)
        for (group, topic), handled in sorted(consumed(spec).items()):
            key = f"{spec.name}.receive.{topic}"
            if key in operations:   # two groups of one service on one topic: keep both apart
                key = f"{spec.name}.{group}.receive.{topic}"
            operations[key] = _operation("receive", spec.name, topic, handled, **{
                "x-consumer-group": group,
                "description": f"Consumer group `<prefix>.{group}`; other event types on the topic are skipped."})

    schemas: dict[str, Any] = {"Envelope": Envelope.model_json_schema()}
    for event in events:
        schemas[message_id(event)] = _rebase_refs(schema_for(event), f"#/components/schemas/{message_id(event)}")

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "OpenMaaS events",
            "version": version,
            "description": (
                "Every Kafka topic of the platform, the event types on it (name, version, JSON Schema) and "
                "which service publishes and consumes each, generated from the code. The Kafka value is "
                "the platform envelope (`contracts/envelope.py`) whose `data` is the event; the key is the "
                "envelope's subject. Each message is also a CloudEvent (Kafka protocol binding, binary "
                "mode: `ce_*` headers). Operators: read docs/events.md before consuming; never publish."),
            "externalDocs": {"description": "CloudEvents Kafka protocol binding (binary content mode)",
                             "url": CLOUDEVENTS_KAFKA_BINDING},
        },
        "defaultContentType": "application/json",
        "servers": {"kafka": {
            "host": "{bootstrap}", "protocol": "kafka",
            "description": "The deployment's Kafka (MAAS_KAFKA_BOOTSTRAP); topics are <prefix>.<topic>.",
            "variables": {"bootstrap": {"default": DEFAULT_BOOTSTRAP}},
        }},
        "channels": {t: _channel(t, [e for e in events if e.topic == t]) for t in topics},
        "operations": operations,
        "components": {
            "messages": {message_id(e): _message(e, publishers=publishers[e], consumers=consumers[e])
                         for e in events},
            "schemas": schemas,
        },
    }


def render_html(document: dict) -> str:
    """A plain page for people: topic, event, version, publishers, consumers (no scripts to fetch)."""
    rows = []
    for topic, channel in document["channels"].items():
        for mid in channel["messages"]:
            m = document["components"]["messages"][mid]
            cells = [topic, m["name"], str(m["x-version"]), ", ".join(m["x-published-by"]),
                     ", ".join(m["x-consumed-by"]), m.get("summary", "")]
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>OpenMaaS events</title></head><body>"
            "<h1>OpenMaaS events</h1><p>Topics are <code>&lt;MAAS_TOPIC_PREFIX&gt;.&lt;topic&gt;</code>. "
            "Schemas, headers and operations: <a href='/asyncapi.json'>/asyncapi.json</a> (AsyncAPI "
            f"{ASYNCAPI_VERSION}).</p><table border='1'><tr><th>topic</th><th>event</th><th>version</th>"
            "<th>published by</th><th>consumed by</th><th>summary</th></tr>" + "".join(rows)
            + "</table></body></html>")


def router(document: dict) -> APIRouter:
    """``/asyncapi.json`` and ``/asyncapi``: public like /docs (services/lib/common/public_routes.py)."""
    routes = APIRouter()
    page = render_html(document)

    @routes.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(document)

    @routes.get("/asyncapi", include_in_schema=False)
    async def asyncapi_page() -> HTMLResponse:
        return HTMLResponse(page)

    return routes
