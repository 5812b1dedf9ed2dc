"""The event envelope every message on the bus carries.

Trace context does not live here: it travels in Kafka headers (W3C ``traceparent``), so the
envelope stays a pure business record.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventData(BaseModel):
    """Base of every event payload. Subclasses set ``type``, ``version`` and ``topic``."""

    model_config = ConfigDict(extra="ignore")  # tolerant reader: newer producers may add fields

    type: ClassVar[str]
    version: ClassVar[int] = 1
    topic: ClassVar[str]  # logical topic; the broker adds the deployment's prefix


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_id, description="unique per event; consumers dedupe on it")
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    tenant_id: str
    subject: str = Field(description="the aggregate this event is about, e.g. 'models/<id>'; the Kafka key")
    data: dict[str, Any]

    @classmethod
    def wrap(cls, data: EventData, *, tenant_id: str, subject: str) -> "Envelope":
        return cls(
            type=data.type,
            version=data.version,
            tenant_id=tenant_id,
            subject=subject,
            data=data.model_dump(mode="json"),
        )
