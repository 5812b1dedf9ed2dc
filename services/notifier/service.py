"""Use cases of the notifier: topics, webhook subscriptions (with a confirmation handshake), rules,
the fan-out of events to deliveries, and the delivery log. Keyword-only, one transaction each.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts import Envelope, new_id
from contracts.notifications import EVENT_KIND_LABELS, NotificationRuleChanged
from contracts.timestamps import rfc3339
from services.lib.common.context import Platform, transact
from services.lib.common.errors import ApiError, bad_request, conflict, not_found
from services.notifier import delivery
from services.notifier.endpoints import EndpointRejected
from services.notifier.endpoints import check as check_endpoint
from services.notifier.kinds import resource_of
from services.notifier.models import (DELIVERIES, MAX_SUBSCRIPTIONS_PER_TOPIC, MAX_TOPICS_PER_TENANT, RULES,
                                      SUBSCRIPTIONS, TOPICS, DeliveryKind, DeliveryStatus, DeliveryView, RuleCreate,
                                      RuleView, SubscriptionCreate, SubscriptionStatus, SubscriptionView,
                                      TopicCreate, TopicView, delivery_view, rule_view, subscription_view,
                                      topic_view)

CONFIRMATION_TYPE = "subscription.confirmation"


def _now() -> datetime:
    return datetime.now(UTC)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


# ------------------------------------------------------------------------------------ topics

async def create_topic(platform: Platform, *, tenant_id: str, request: TopicCreate) -> TopicView:
    topics = platform.mongo[TOPICS]
    if await topics.count_documents({"tenant_id": tenant_id}) >= MAX_TOPICS_PER_TENANT:
        raise conflict(f"a tenant can have at most {MAX_TOPICS_PER_TENANT} topics", code="topic_limit")
    doc = {"_id": new_id(), "tenant_id": tenant_id, "name": request.name, "description": request.description,
           "created_at": _now()}
    try:
        async with platform.uow() as uow:   # with the request's audit record
            await uow.collection(TOPICS).insert_one(doc, session=uow.session)
    except DuplicateKeyError:
        raise conflict(f"name: a topic named '{request.name}' already exists", field="name") from None
    return topic_view(doc)


async def _topic_or_404(platform: Platform, *, tenant_id: str, topic: str) -> dict:
    """A topic by id or by name."""
    doc = await platform.mongo[TOPICS].find_one({"tenant_id": tenant_id, "_id": topic}) or \
        await platform.mongo[TOPICS].find_one({"tenant_id": tenant_id, "name": topic})
    if doc is None:
        raise not_found("topic", topic)
    return doc


async def _subscription_counts(platform: Platform, topic_ids: list[str]) -> dict[str, int]:
    pipeline = [{"$match": {"topic_id": {"$in": topic_ids}}}, {"$group": {"_id": "$topic_id", "n": {"$sum": 1}}}]
    return {row["_id"]: row["n"] async for row in platform.mongo[SUBSCRIPTIONS].aggregate(pipeline)}


async def list_topics(platform: Platform, *, tenant_id: str) -> dict:
    docs = [d async for d in platform.mongo[TOPICS].find({"tenant_id": tenant_id}).sort("created_at", DESCENDING)]
    counts = await _subscription_counts(platform, [d["_id"] for d in docs])
    return {"total": len(docs), "items": [topic_view(d, counts.get(d["_id"], 0)) for d in docs]}


async def get_topic(platform: Platform, *, tenant_id: str, topic: str) -> TopicView:
    doc = await _topic_or_404(platform, tenant_id=tenant_id, topic=topic)
    counts = await _subscription_counts(platform, [doc["_id"]])
    return topic_view(doc, counts.get(doc["_id"], 0))


async def delete_topic(platform: Platform, *, tenant_id: str, topic: str) -> None:
    doc = await _topic_or_404(platform, tenant_id=tenant_id, topic=topic)

    async def remove(uow) -> None:
        await uow.collection(TOPICS).delete_one({"_id": doc["_id"]}, session=uow.session)
        await uow.collection(SUBSCRIPTIONS).delete_many({"topic_id": doc["_id"]}, session=uow.session)
        await uow.collection(DELIVERIES).update_many(
            {"topic_id": doc["_id"], "status": {"$in": [DeliveryStatus.pending, DeliveryStatus.delivering]}},
            {"$set": {"status": DeliveryStatus.cancelled, "updated_at": _now()}}, session=uow.session)
    # The webhook sender updates deliveries meanwhile: transact retries a lost write conflict.
    await transact(platform, remove)


# ------------------------------------------------------------------------------------ subscriptions

def _confirmation_payload(sub: dict, *, token: str, confirm_url: str) -> dict:
    return {"type": CONFIRMATION_TYPE, "timestamp": rfc3339(_now()), "data": {
        "subscription_id": sub["_id"], "topic": sub["topic_name"], "token": token, "confirm_url": confirm_url,
        "message": ("You are receiving this because this endpoint was subscribed to an OpenMaaS notification "
                    "topic. To receive notifications, POST {\"token\": \"<token>\"} to confirm_url."),
    }}


async def _queue_confirmation(uow, sub: dict, *, confirm_base_url: str) -> str:
    """A fresh token (only its hash is kept on the subscription) and its confirmation request."""
    token = secrets.token_urlsafe(24)
    confirm_url = f"{confirm_base_url.rstrip('/')}/api/v1/notification-subscriptions/{sub['_id']}/confirm"
    await uow.collection(SUBSCRIPTIONS).update_one(
        {"_id": sub["_id"]}, {"$set": {"token_hash": _hash(token), "confirm_url": confirm_url}}, session=uow.session)
    now = _now()
    await uow.collection(DELIVERIES).insert_one(delivery.new_delivery(
        tenant_id=sub["tenant_id"], subscription=sub, kind=DeliveryKind.confirmation,
        event_id=f"confirm:{sub['_id']}:{_hash(token)[:16]}", payload=_confirmation_payload(
            sub, token=token, confirm_url=confirm_url), now=now, max_attempts=uow.settings.webhook_max_attempts),
        session=uow.session)
    return token


async def create_subscription(platform: Platform, *, tenant_id: str, topic: str, request: SubscriptionCreate,
                              confirm_base_url: str, wake: Callable[[], None]) -> SubscriptionView:
    topic_doc = await _topic_or_404(platform, tenant_id=tenant_id, topic=topic)
    try:
        endpoint = await check_endpoint(request.endpoint.strip(),
                                        allow_private=platform.settings.webhook_allow_private)
    except EndpointRejected as exc:
        raise bad_request(f"endpoint: {exc}", field="endpoint") from None
    subs = platform.mongo[SUBSCRIPTIONS]
    if await subs.count_documents({"topic_id": topic_doc["_id"]}) >= MAX_SUBSCRIPTIONS_PER_TOPIC:
        raise conflict(f"topic '{topic_doc['name']}' already has {MAX_SUBSCRIPTIONS_PER_TOPIC} subscriptions, "
                       "the maximum", code="subscription_limit")
    if await subs.find_one({"topic_id": topic_doc["_id"], "endpoint": endpoint}, {"_id": 1}):
        raise conflict(f"endpoint: '{endpoint}' is already subscribed to topic '{topic_doc['name']}'",
                       field="endpoint")
    secret = new_secret()
    sub = {"_id": new_id(), "tenant_id": tenant_id, "topic_id": topic_doc["_id"], "topic_name": topic_doc["name"],
           "protocol": request.protocol, "endpoint": endpoint, "format": request.format,
           "description": request.description,
           "secret": secret, "status": SubscriptionStatus.unconfirmed, "confirmed_at": None, "created_at": _now()}
    async with platform.uow() as uow:
        await uow.collection(SUBSCRIPTIONS).insert_one(sub, session=uow.session)
        await _queue_confirmation(uow, sub, confirm_base_url=confirm_base_url)
    wake()
    return subscription_view(sub, secret=secret)


async def _subscription_or_404(platform: Platform, *, subscription_id: str, tenant_id: str | None) -> dict:
    query = {"_id": subscription_id} | ({"tenant_id": tenant_id} if tenant_id is not None else {})
    doc = await platform.mongo[SUBSCRIPTIONS].find_one(query)
    if doc is None:
        raise not_found("subscription", subscription_id)
    return doc


async def list_subscriptions(platform: Platform, *, tenant_id: str, topic: str | None = None) -> dict:
    query: dict = {"tenant_id": tenant_id}
    if topic:
        query["topic_id"] = (await _topic_or_404(platform, tenant_id=tenant_id, topic=topic))["_id"]
    docs = [d async for d in platform.mongo[SUBSCRIPTIONS].find(query).sort("created_at", DESCENDING)]
    return {"total": len(docs), "items": [subscription_view(d) for d in docs]}


async def get_subscription(platform: Platform, *, tenant_id: str, subscription_id: str) -> SubscriptionView:
    return subscription_view(await _subscription_or_404(platform, subscription_id=subscription_id,
                                                        tenant_id=tenant_id))


async def delete_subscription(platform: Platform, *, tenant_id: str, subscription_id: str) -> None:
    await _subscription_or_404(platform, subscription_id=subscription_id, tenant_id=tenant_id)

    async def remove(uow) -> None:
        await uow.collection(SUBSCRIPTIONS).delete_one({"_id": subscription_id}, session=uow.session)
        await uow.collection(DELIVERIES).update_many(
            {"subscription_id": subscription_id,
             "status": {"$in": [DeliveryStatus.pending, DeliveryStatus.delivering]}},
            {"$set": {"status": DeliveryStatus.cancelled, "updated_at": _now()}}, session=uow.session)
    await transact(platform, remove)


async def confirm_subscription(platform: Platform, *, subscription_id: str, token: str) -> SubscriptionView:
    """The receiver's half of the handshake: the token it was sent proves it controls the endpoint."""
    sub = await platform.mongo[SUBSCRIPTIONS].find_one({"_id": subscription_id})
    if sub is None or not sub.get("token_hash") or not hmac.compare_digest(sub["token_hash"], _hash(token)):
        # One answer for "no such subscription" and "wrong token": ids cannot be probed.
        raise ApiError(403, "invalid_token", "the confirmation token does not match this subscription",
                       field="token")
    if sub["status"] == SubscriptionStatus.confirmed:
        return subscription_view(sub)
    now = _now()

    async def confirm(uow) -> None:
        await uow.collection(SUBSCRIPTIONS).update_one(
            {"_id": subscription_id}, {"$set": {"status": SubscriptionStatus.confirmed, "confirmed_at": now}},
            session=uow.session)
        # The token has done its job: drop it from queued confirmation requests.
        await uow.collection(DELIVERIES).update_many(
            {"subscription_id": subscription_id, "kind": DeliveryKind.confirmation,
             "status": {"$in": [DeliveryStatus.pending, DeliveryStatus.dead]}},
            {"$set": {"status": DeliveryStatus.cancelled, "updated_at": now}}, session=uow.session)
    await transact(platform, confirm)
    sub.update(status=SubscriptionStatus.confirmed, confirmed_at=now)
    return subscription_view(sub)


async def resend_confirmation(platform: Platform, *, tenant_id: str, subscription_id: str,
                              confirm_base_url: str, wake: Callable[[], None]) -> SubscriptionView:
    sub = await _subscription_or_404(platform, subscription_id=subscription_id, tenant_id=tenant_id)
    if sub["status"] == SubscriptionStatus.confirmed:
        raise conflict("the subscription is already confirmed", code="already_confirmed")
    async def requeue(uow) -> None:
        await uow.collection(DELIVERIES).update_many(
            {"subscription_id": subscription_id, "kind": DeliveryKind.confirmation,
             "status": DeliveryStatus.pending},
            {"$set": {"status": DeliveryStatus.cancelled, "updated_at": _now()}}, session=uow.session)
        await _queue_confirmation(uow, sub, confirm_base_url=confirm_base_url)
    await transact(platform, requeue)
    wake()
    return subscription_view(sub)


# ------------------------------------------------------------------------------------ rules

async def create_rule(platform: Platform, *, tenant_id: str, request: RuleCreate) -> RuleView:
    if not await platform.mongo[TOPICS].find_one({"tenant_id": tenant_id, "name": request.topic_name}, {"_id": 1}):
        raise bad_request(f"topic_name: topic '{request.topic_name}' does not exist; create it first",
                          field="topic_name")
    doc = {"_id": new_id(), "tenant_id": tenant_id, "topic_name": request.topic_name, "subject": request.subject,
           "events": request.events, "source": "api", "created_at": _now()}
    async with platform.uow() as uow:   # with the request's audit record
        await uow.collection(RULES).insert_one(doc, session=uow.session)
    return rule_view(doc)


async def list_rules(platform: Platform, *, tenant_id: str, subject: str | None = None) -> dict:
    query = {"tenant_id": tenant_id} | ({"subject": subject} if subject else {})
    docs = [d async for d in platform.mongo[RULES].find(query).sort("created_at", DESCENDING)]
    return {"total": len(docs), "items": [rule_view(d) for d in docs]}


async def delete_rule(platform: Platform, *, tenant_id: str, rule_id: str) -> None:
    async with platform.uow() as uow:   # with the request's audit record
        result = await uow.collection(RULES).delete_one({"_id": rule_id, "tenant_id": tenant_id}, session=uow.session)
    if result.deleted_count != 1:
        raise not_found("rule", rule_id)


async def apply_rule_event(uow, *, tenant_id: str, event: NotificationRuleChanged) -> None:
    """A job's "事件通知" setting becomes (or stops being) a rule for its own subject."""
    key = {"_id": f"job:{tenant_id}:{event.subject}"}
    if event.removed or not event.topic_name or not event.events:
        await uow.collection(RULES).delete_one(key, session=uow.session)
        return
    await uow.collection(RULES).update_one(key, {
        "$set": {"tenant_id": tenant_id, "topic_name": event.topic_name, "subject": event.subject,
                 "events": sorted(set(event.events)), "source": "job"},
        "$setOnInsert": {"created_at": _now()}}, upsert=True, session=uow.session)


# ------------------------------------------------------------------------------------ fan-out

def notification_payload(envelope: Envelope, *, kind: str, topic_name: str, subscription_id: str) -> dict:
    resource = resource_of(envelope.subject)
    return {"type": f"{resource}.{kind}", "timestamp": rfc3339(envelope.occurred_at), "data": {
        "event_id": envelope.id, "event_type": envelope.type, "kind": kind, "kind_label": EVENT_KIND_LABELS.get(kind),
        "subject": envelope.subject, "resource": resource,
        "resource_id": envelope.subject.split("/", 1)[1] if "/" in envelope.subject else None,
        "topic": topic_name, "subscription_id": subscription_id, "occurred_at": rfc3339(envelope.occurred_at),
        "detail": envelope.data,
    }}


async def fan_out(uow, *, envelope: Envelope, kind: str, skip_delivered: bool = False) -> int:
    """Queue one delivery per confirmed subscription whose topic a matching rule names.

    ``skip_delivered``: leave out subscriptions that already have this event (a second fan-out of
    it, for a rule that arrived late); otherwise a second fan-out fails on the unique index."""
    resource = resource_of(envelope.subject)
    rules = [r async for r in uow.collection(RULES).find(
        {"tenant_id": envelope.tenant_id, "subject": {"$in": [envelope.subject, f"{resource}/*", "*"]},
         "events": kind}, session=uow.session)]
    topic_names = sorted({r["topic_name"] for r in rules})
    if not topic_names:
        return 0
    topic_ids = [t["_id"] async for t in uow.collection(TOPICS).find(
        {"tenant_id": envelope.tenant_id, "name": {"$in": topic_names}}, {"_id": 1}, session=uow.session)]
    if not topic_ids:
        return 0
    # Unconfirmed subscriptions get nothing but their confirmation request.
    subs = [s async for s in uow.collection(SUBSCRIPTIONS).find(
        {"topic_id": {"$in": topic_ids}, "status": SubscriptionStatus.confirmed}, session=uow.session)]
    if skip_delivered:
        done = {d["subscription_id"] async for d in uow.collection(DELIVERIES).find(
            {"event_id": envelope.id}, {"subscription_id": 1}, session=uow.session)}
        subs = [s for s in subs if s["_id"] not in done]
    now = _now()
    docs = [delivery.new_delivery(
        tenant_id=envelope.tenant_id, subscription=s, kind=DeliveryKind.notification, event_id=envelope.id,
        event_type=envelope.type, event_kind=kind, subject=envelope.subject, now=now,
        max_attempts=uow.settings.webhook_max_attempts,
        payload=notification_payload(envelope, kind=kind, topic_name=s["topic_name"], subscription_id=s["_id"]))
        for s in subs]
    if docs:
        # The unique (event_id, subscription_id) index makes a second fan-out of this event fail
        # the transaction rather than deliver twice.
        await uow.collection(DELIVERIES).insert_many(docs, session=uow.session)
    return len(docs)


# ------------------------------------------------------------------------------------ delivery log

async def list_deliveries(platform: Platform, *, tenant_id: str, subscription_id: str | None = None,
                          status: str | None = None, event_id: str | None = None, offset: int = 0,
                          limit: int = 50) -> dict:
    query: dict = {"tenant_id": tenant_id}
    if subscription_id:
        query["subscription_id"] = subscription_id
    if status:
        query["status"] = status
    if event_id:
        query["event_id"] = event_id
    collection = platform.mongo[DELIVERIES]
    total = await collection.count_documents(query)
    docs = [d async for d in collection.find(query).sort("created_at", DESCENDING).skip(offset).limit(limit)]
    return {"total": total, "items": [delivery_view(d) for d in docs]}


async def get_delivery(platform: Platform, *, tenant_id: str, delivery_id: str) -> DeliveryView:
    doc = await platform.mongo[DELIVERIES].find_one({"_id": delivery_id, "tenant_id": tenant_id})
    if doc is None:
        raise not_found("delivery", delivery_id)
    # Confirmation requests carry a live token: their payload is not shown.
    return delivery_view(doc, with_payload=doc["kind"] == DeliveryKind.notification)


async def retry_delivery(platform: Platform, *, tenant_id: str, delivery_id: str,
                         wake: Callable[[], None]) -> DeliveryView:
    """Re-drive a dead-lettered delivery: it gets a fresh round of attempts."""
    current = await platform.mongo[DELIVERIES].find_one({"_id": delivery_id, "tenant_id": tenant_id})
    if current is None:
        raise not_found("delivery", delivery_id)
    now = _now()

    async def requeue(uow) -> dict | None:   # with the request's audit record
        return await uow.collection(DELIVERIES).find_one_and_update(
            {"_id": delivery_id, "status": DeliveryStatus.dead},
            {"$set": {"status": DeliveryStatus.pending, "next_attempt_at": now, "updated_at": now,
                      "max_attempts": current["attempts"] + platform.settings.webhook_max_attempts}},
            return_document=ReturnDocument.AFTER, session=uow.session)
    doc = await transact(platform, requeue)
    if doc is None:
        raise conflict(f"delivery is {current['status']}; only a dead-lettered delivery can be retried",
                       code="not_dead")
    wake()
    return delivery_view(doc)
