"""Event timelines: every event on the bus, stored under its subject for 30 days.

``models/<id>``, ``tuning-jobs/<id>``, ``services/<id>``, ... each get the list of what happened to
them, in order, whoever emitted it. ``resource_states`` keeps each subject's latest state (the
notification kind of its last state-changing event): it decides whether an event is a state change
worth notifying, and feeds the ``maas_jobs`` gauge.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pymongo import ASCENDING, DESCENDING

from contracts import Envelope
from contracts.notifications import EVENT_KIND_LABELS
from contracts.timestamps import Timestamp
from services.lib.common.mongo import IndexSpec
from services.notifier.kinds import resource_of

EVENTS = "event_timeline"
STATES = "resource_states"
RETENTION = timedelta(days=30)

INDEXES: list[IndexSpec] = [
    (EVENTS, [("tenant_id", ASCENDING), ("subject", ASCENDING), ("occurred_at", ASCENDING)], {}),
    (EVENTS, [("tenant_id", ASCENDING), ("occurred_at", DESCENDING)], {}),
    # MongoDB drops events 30 days after they happened; queries also cut at 30 days, so engines
    # without a TTL monitor show the same.
    (EVENTS, [("occurred_at", ASCENDING)], {"expireAfterSeconds": int(RETENTION.total_seconds()),
                                            "name": "timeline_ttl"}),
    (STATES, [("resource", ASCENDING), ("state", ASCENDING)], {}),
]


class TimelineEvent(BaseModel):
    id: str
    type: str
    kind: str | None = None
    kind_label: str | None = None
    subject: str
    message: str | None = None
    occurred_at: Timestamp
    data: dict[str, Any]


def _summary(data: dict) -> str | None:
    for key in ("message", "reason", "error"):
        if isinstance(data.get(key), str) and data[key]:
            return data[key]
    return None


async def record(uow, envelope: Envelope, kind: str | None) -> bool:
    """Store the event under its subject; True when it changed the subject's state (news to notify)."""
    changed = kind is not None and kind != await _move_state(uow, envelope, kind)
    await uow.collection(EVENTS).insert_one({
        "_id": envelope.id, "tenant_id": envelope.tenant_id, "subject": envelope.subject,
        "resource": resource_of(envelope.subject), "type": envelope.type, "version": envelope.version,
        "kind": kind, "state_change": changed, "message": _summary(envelope.data),
        "occurred_at": envelope.occurred_at, "recorded_at": datetime.now(UTC), "data": envelope.data,
    }, session=uow.session)
    return changed


async def _move_state(uow, envelope: Envelope, kind: str | None) -> str | None:
    """Set the subject's state to ``kind``; its previous state."""
    if kind is None:
        return None
    key = {"_id": f"{envelope.tenant_id}|{envelope.subject}"}
    states = uow.collection(STATES)
    if kind == "deleted":
        previous = await states.find_one_and_delete(key, session=uow.session)
    else:
        previous = await states.find_one_and_update(key, {"$set": {
            "tenant_id": envelope.tenant_id, "subject": envelope.subject, "resource": resource_of(envelope.subject),
            "state": kind, "event_id": envelope.id, "updated_at": envelope.occurred_at}},
            upsert=True, session=uow.session)
    return previous["state"] if previous else None


async def state_changes_since(uow, *, tenant_id: str, subject: str, since: datetime) -> list[tuple[Envelope, str]]:
    """The subject's state-changing events that happened at or after ``since``, oldest first, each with
    the kind it was recorded as."""
    since = since.replace(microsecond=since.microsecond // 1000 * 1000)  # MongoDB keeps milliseconds
    cursor = uow.collection(EVENTS).find(
        {"tenant_id": tenant_id, "subject": subject, "state_change": True, "occurred_at": {"$gte": since}},
        session=uow.session).sort("occurred_at", ASCENDING)
    return [(Envelope(id=d["_id"], type=d["type"], version=d["version"], occurred_at=d["occurred_at"],
                      tenant_id=d["tenant_id"], subject=d["subject"], data=d["data"]), d["kind"]) async for d in cursor]


def _view(doc: dict) -> TimelineEvent:
    return TimelineEvent(id=doc["_id"], type=doc["type"], kind=doc.get("kind"),
                         kind_label=EVENT_KIND_LABELS.get(doc.get("kind") or ""), subject=doc["subject"],
                         message=doc.get("message"), occurred_at=doc["occurred_at"], data=doc.get("data", {}))


async def list_events(platform, *, tenant_id: str, subject: str | None = None, event_type: str | None = None,
                      kind: str | None = None, since: datetime | None = None, order: str = "asc",
                      offset: int = 0, limit: int = 100) -> dict:
    floor = datetime.now(UTC) - RETENTION
    query: dict = {"tenant_id": tenant_id, "occurred_at": {"$gte": max(floor, since) if since else floor}}
    if subject:
        query["subject"] = subject
    if event_type:
        query["type"] = event_type
    if kind:
        query["kind"] = kind
    collection = platform.mongo[EVENTS]
    total = await collection.count_documents(query)
    cursor = (collection.find(query).sort("occurred_at", ASCENDING if order == "asc" else DESCENDING)
              .skip(offset).limit(limit))
    return {"total": total, "items": [_view(d) async for d in cursor]}


async def state_counts(platform) -> dict[tuple[str, str], int]:
    """(resource, state) → count over every tenant, for the ``maas_jobs`` gauge."""
    pipeline = [{"$group": {"_id": {"resource": "$resource", "state": "$state"}, "n": {"$sum": 1}}}]
    return {(row["_id"]["resource"], row["_id"]["state"]): row["n"]
            async for row in platform.mongo[STATES].aggregate(pipeline)}
