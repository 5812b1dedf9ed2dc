"""Notifier documents, request bodies and views: topics, webhook subscriptions, rules, deliveries."""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo import ASCENDING, DESCENDING

from contracts.notifications import EventKind
from contracts.timestamps import Timestamp
from services.lib.common.mongo import IndexSpec
from services.lib.common.validation import ResourceName, limited_text

TOPICS = "notification_topics"
SUBSCRIPTIONS = "notification_subscriptions"
RULES = "notification_rules"
DELIVERIES = "notification_deliveries"

MAX_TOPICS_PER_TENANT = 100
MAX_SUBSCRIPTIONS_PER_TOPIC = 20

INDEXES: list[IndexSpec] = [
    (TOPICS, [("tenant_id", ASCENDING), ("name", ASCENDING)], {"unique": True}),
    (SUBSCRIPTIONS, [("topic_id", ASCENDING), ("status", ASCENDING)], {}),
    (SUBSCRIPTIONS, [("tenant_id", ASCENDING), ("created_at", DESCENDING)], {}),
    (RULES, [("tenant_id", ASCENDING), ("subject", ASCENDING)], {}),
    # Exactly once per event per subscription, whatever the broker redelivers.
    (DELIVERIES, [("event_id", ASCENDING), ("subscription_id", ASCENDING)], {"unique": True}),
    (DELIVERIES, [("status", ASCENDING), ("next_attempt_at", ASCENDING)], {}),
    (DELIVERIES, [("tenant_id", ASCENDING), ("created_at", DESCENDING)], {}),
    (DELIVERIES, [("subscription_id", ASCENDING), ("created_at", DESCENDING)], {}),
]


class SubscriptionStatus(StrEnum):
    unconfirmed = "unconfirmed"   # 未确认: receives only the confirmation request
    confirmed = "confirmed"       # 已确认: receives notifications


class DeliveryStatus(StrEnum):
    pending = "pending"           # waiting for its (next) attempt
    delivering = "delivering"     # claimed by a delivery worker (lease until lease_until)
    succeeded = "succeeded"
    dead = "dead"                 # dead-lettered after max attempts; can be retried by hand
    cancelled = "cancelled"       # its subscription or topic was deleted


class DeliveryKind(StrEnum):
    confirmation = "confirmation"
    notification = "notification"


# "<resource>/<id>", "<resource>/*" (every job of a kind) or "*" (everything of the tenant).
_SUBJECT = re.compile(r"^(\*|[a-z][a-z0-9-]{0,63}/(\*|[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}))$")


class TopicCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ResourceName
    description: limited_text(256) = ""


# How a webhook request is shaped: the Standard Webhooks body, or a CloudEvent in the CloudEvents
# HTTP binding's structured mode (services/notifier/cloudevents_format.py). Both are signed alike.
WebhookFormat = Literal["standard-webhooks", "cloudevents"]
STANDARD_WEBHOOKS = "standard-webhooks"


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    protocol: Literal["webhook"] = "webhook"
    endpoint: str = Field(description="http(s) URL that receives signed POST requests")
    format: WebhookFormat = Field(STANDARD_WEBHOOKS, description=(
        "'standard-webhooks' (default): the notification JSON; 'cloudevents': a CloudEvent in structured "
        "mode (application/cloudevents+json) with the notification as its data. Standard Webhooks "
        "signature headers either way"))
    description: limited_text(256) = ""


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=256)


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic_name: str = Field(min_length=1, max_length=64)
    subject: str = Field(description="'tuning-jobs/<id>', 'tuning-jobs/*' (every tuning job) or '*'",
                         json_schema_extra={"pattern": _SUBJECT.pattern})
    events: list[EventKind] = Field(min_length=1, description="event kinds that notify")

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not _SUBJECT.fullmatch(value):
            raise ValueError("must be '<resource>/<id>', '<resource>/*' or '*', e.g. 'tuning-jobs/*'")
        return value

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class TopicView(BaseModel):
    id: str
    name: str
    description: str
    subscription_count: int = 0
    created_at: Timestamp


class SubscriptionView(BaseModel):
    id: str
    topic_id: str
    topic_name: str
    protocol: str
    endpoint: str
    format: WebhookFormat = STANDARD_WEBHOOKS
    description: str
    status: SubscriptionStatus
    confirmed_at: Timestamp | None = None
    created_at: Timestamp
    secret: str | None = Field(None, description="signing secret (whsec_...); shown once, at creation")


class RuleView(BaseModel):
    id: str
    topic_name: str
    subject: str
    events: list[str]
    source: str
    created_at: Timestamp


class AttemptView(BaseModel):
    at: Timestamp
    status_code: int | None = None
    error: str | None = None
    duration_ms: float


class DeliveryView(BaseModel):
    id: str
    subscription_id: str
    topic_name: str
    kind: DeliveryKind
    event_id: str
    event_type: str | None = None
    event_kind: str | None = None
    subject: str | None = None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Timestamp | None = None
    last_error: str | None = None
    last_status_code: int | None = None
    delivered_at: Timestamp | None = None
    created_at: Timestamp
    attempt_log: list[AttemptView] = []
    payload: dict[str, Any] | None = None


def topic_view(doc: dict, subscription_count: int = 0) -> TopicView:
    return TopicView(id=doc["_id"], name=doc["name"], description=doc.get("description", ""),
                     subscription_count=subscription_count, created_at=doc["created_at"])


def subscription_view(doc: dict, *, secret: str | None = None) -> SubscriptionView:
    return SubscriptionView(id=doc["_id"], topic_id=doc["topic_id"], topic_name=doc["topic_name"],
                            protocol=doc["protocol"], endpoint=doc["endpoint"],
                            format=doc.get("format", STANDARD_WEBHOOKS), description=doc.get("description", ""),
                            status=doc["status"], confirmed_at=doc.get("confirmed_at"), created_at=doc["created_at"],
                            secret=secret)


def rule_view(doc: dict) -> RuleView:
    return RuleView(id=doc["_id"], topic_name=doc["topic_name"], subject=doc["subject"], events=doc["events"],
                    source=doc.get("source", "api"), created_at=doc["created_at"])


def delivery_view(doc: dict, *, with_payload: bool = False) -> DeliveryView:
    return DeliveryView(
        id=doc["_id"], subscription_id=doc["subscription_id"], topic_name=doc["topic_name"], kind=doc["kind"],
        event_id=doc["event_id"], event_type=doc.get("event_type"), event_kind=doc.get("event_kind"),
        subject=doc.get("subject"), status=doc["status"], attempts=doc["attempts"],
        next_attempt_at=doc.get("next_attempt_at") if doc["status"] == DeliveryStatus.pending else None,
        last_error=doc.get("last_error"), last_status_code=doc.get("last_status_code"),
        delivered_at=doc.get("delivered_at"), created_at=doc["created_at"],
        attempt_log=[AttemptView(**a) for a in doc.get("attempt_log", [])],
        payload=doc.get("payload") if with_payload else None)
