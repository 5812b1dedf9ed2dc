"""Webhook requests as CloudEvents: the CloudEvents HTTP protocol binding, structured content mode.

A subscription with ``format: "cloudevents"`` receives each request as one CloudEvent
(``application/cloudevents+json``), which CloudEvents SDKs parse as is:

- ``id``: the delivery id (also the ``webhook-id`` header; every attempt of one delivery repeats it,
  so receivers dedupe on it), ``type``: ``io.openmaas.<notification type>`` (``io.openmaas.
  tuning-jobs.completed``, ``io.openmaas.subscription.confirmation``), ``source``:
  ``/openmaas/notification-topics/<topic>``, ``subject``: the resource (``tuning-jobs/<id>``),
  ``time``: when the event occurred;
- ``data``: what the Standard Webhooks body carries under ``data`` (the same fields).
The Standard Webhooks signature headers come along unchanged, over this body: CloudEvents itself
authenticates nothing.
"""
from __future__ import annotations

CLOUDEVENTS = "cloudevents"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
TYPE_PREFIX = "io.openmaas."


def cloudevent(delivery: dict) -> dict:
    """The structured-mode CloudEvent of a delivery document (the same for every attempt)."""
    payload = delivery["payload"]
    event = {
        "specversion": "1.0",
        "id": delivery["_id"],
        "type": TYPE_PREFIX + payload["type"],
        "source": f"/openmaas/notification-topics/{delivery['topic_name']}",
        "time": payload["timestamp"],
        "datacontenttype": "application/json",
        "data": payload["data"],
    }
    if delivery.get("subject"):
        event["subject"] = delivery["subject"]
    return event
