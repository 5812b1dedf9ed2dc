"""Webhook delivery: a retry queue in MongoDB, Standard Webhooks signatures, backoff, dead letters.

Each delivery is one document (one per event per subscription, by a unique index). A worker claims
a due one by setting ``status=delivering`` with a lease (``next_attempt_at`` moves to the lease's
end), POSTs it, and settles it: ``succeeded``; ``pending`` again with an exponential backoff; or
``dead`` after ``max_attempts``. A worker that dies mid-attempt leaves a lease that runs out, and
the delivery is claimed again, so the queue survives restarts. Every attempt of one delivery
carries the same ``webhook-id``, so receivers can drop a repeat of an attempt we could not settle.

The delivery log is the tenant's to read, so a failure is recorded as one of a few fixed reasons
(``NO_RESPONSE`` for every connection-level failure): raw errors such as "connection refused" versus
a timeout would let a tenant map which ports are open on hosts the platform can reach. The detail
goes to the platform's own log.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, ReturnDocument
from standardwebhooks.webhooks import Webhook

from contracts import new_id
from services.lib.common import metrics
from services.notifier.cloudevents_format import CLOUDEVENTS, CLOUDEVENTS_CONTENT_TYPE, cloudevent
from services.notifier.endpoints import AddressNotAllowed, EndpointRejected, HostNotFound
from services.notifier.models import (DELIVERIES, SUBSCRIPTIONS, DeliveryKind, DeliveryStatus,
                                      SubscriptionStatus)
from services.notifier.webhook_http import ConnectionFailed, WebhookHttp

log = logging.getLogger(__name__)
USER_AGENT = "OpenMaaS-Webhooks/1"
ATTEMPT_LOG_LENGTH = 20
# The reasons a tenant sees for an attempt that got no HTTP response.
ADDRESS_NOT_ALLOWED = "address not allowed"
HOST_NOT_FOUND = "host not found"
NO_RESPONSE = "connection failed"


def new_delivery(*, tenant_id: str, subscription: dict, kind: DeliveryKind, event_id: str, payload: dict,
                 now: datetime, max_attempts: int, event_type: str | None = None, event_kind: str | None = None,
                 subject: str | None = None) -> dict:
    return {
        "_id": "msg_" + new_id(),  # also the webhook-id header
        "tenant_id": tenant_id, "subscription_id": subscription["_id"], "topic_id": subscription["topic_id"],
        "topic_name": subscription["topic_name"], "kind": kind, "event_id": event_id, "event_type": event_type,
        "event_kind": event_kind, "subject": subject, "payload": payload, "status": DeliveryStatus.pending,
        "attempts": 0, "max_attempts": max_attempts, "next_attempt_at": now, "claim": None,
        "last_error": None, "last_status_code": None, "attempt_log": [], "created_at": now, "updated_at": now,
    }


def backoff_seconds(attempts: int, *, base: float, cap: float, jitter: float | None = None) -> float:
    """Delay before attempt ``attempts + 1``: base, 2·base, 4·base, ... capped, ±20 % jitter."""
    jitter = random.random() if jitter is None else jitter
    return min(cap, base * 2 ** max(0, attempts - 1)) * (0.8 + 0.4 * jitter)


def encode_body(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def signed_headers(*, secret: str, msg_id: str, body: str, at: datetime,
                   content_type: str = "application/json") -> dict[str, str]:
    """Standard Webhooks headers: receivers verify with any Standard Webhooks library and the secret."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body),
        "content-type": content_type,
        "user-agent": USER_AGENT,
    }


def _reason(exc: Exception) -> str:
    """What the tenant's delivery log says: a fixed reason, never the raw error."""
    if isinstance(exc, AddressNotAllowed):
        return ADDRESS_NOT_ALLOWED
    if isinstance(exc, HostNotFound):
        return HOST_NOT_FOUND
    if isinstance(exc, EndpointRejected):  # a rule of the URL itself: the tenant's own input
        return f"endpoint {exc}"
    return NO_RESPONSE


class DeliveryWorker:
    def __init__(self, platform, *, http: WebhookHttp, batch: int = 8):
        self.platform, self.http, self.batch = platform, http, batch
        self.settings = platform.settings

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.webhook_timeout_seconds + 30)

    async def claim(self) -> dict | None:
        now = datetime.now(UTC)
        return await self.platform.mongo[DELIVERIES].find_one_and_update(
            {"status": {"$in": [DeliveryStatus.pending, DeliveryStatus.delivering]}, "next_attempt_at": {"$lte": now}},
            {"$set": {"status": DeliveryStatus.delivering, "claim": new_id(), "next_attempt_at": now + self._lease,
                      "updated_at": now}},
            sort=[("next_attempt_at", ASCENDING)], return_document=ReturnDocument.AFTER)

    async def _settle(self, doc: dict, update: dict, *, log_entry: dict | None = None) -> None:
        change: dict = {"$set": {**update, "updated_at": datetime.now(UTC)}}
        if log_entry is not None:
            change["$push"] = {"attempt_log": {"$each": [log_entry], "$slice": -ATTEMPT_LOG_LENGTH}}
        # Only the holder of the claim settles, and never over a cancellation.
        await self.platform.mongo[DELIVERIES].update_one(
            {"_id": doc["_id"], "claim": doc["claim"], "status": DeliveryStatus.delivering}, change)

    async def deliver(self, doc: dict) -> str:
        sub = await self.platform.mongo[SUBSCRIPTIONS].find_one({"_id": doc["subscription_id"]})
        wanted = SubscriptionStatus.confirmed if doc["kind"] == DeliveryKind.notification else \
            SubscriptionStatus.unconfirmed
        if sub is None or sub["status"] != wanted:
            await self._settle(doc, {"status": DeliveryStatus.cancelled})
            return "cancelled"
        now = datetime.now(UTC)
        if sub.get("format") == CLOUDEVENTS:
            body, content_type = encode_body(cloudevent(doc)), CLOUDEVENTS_CONTENT_TYPE
        else:
            body, content_type = encode_body(doc["payload"]), "application/json"
        started = time.perf_counter()
        status_code, error = None, None
        try:
            # The endpoint rules are applied to the very connection (webhook_http), not checked beforehand.
            status_code = await self.http.post(sub["endpoint"], body=body.encode(), headers=signed_headers(
                secret=sub["secret"], msg_id=doc["_id"], body=body, at=now, content_type=content_type))
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
        except (EndpointRejected, ConnectionFailed) as exc:
            error = _reason(exc)
            log.info("webhook delivery %s to subscription %s got no response: %s", doc["_id"], sub["_id"], exc)
        seconds = time.perf_counter() - started
        metrics.webhook_delivery_duration.observe(seconds)
        attempts = doc["attempts"] + 1
        entry = {"at": now, "status_code": status_code, "error": error, "duration_ms": round(seconds * 1000, 1)}
        common = {"attempts": attempts, "last_status_code": status_code, "last_error": error}
        if error is None:
            outcome, update = "succeeded", {"status": DeliveryStatus.succeeded, "delivered_at": now}
        elif attempts >= doc["max_attempts"]:
            outcome, update = "dead", {"status": DeliveryStatus.dead, "dead_at": now}
            log.warning("webhook delivery %s dead-lettered after %d attempts: %s", doc["_id"], attempts, error)
        else:
            delay = backoff_seconds(attempts, base=self.settings.webhook_retry_base_seconds,
                                    cap=self.settings.webhook_retry_max_seconds)
            outcome, update = "retry", {"status": DeliveryStatus.pending,
                                        "next_attempt_at": now + timedelta(seconds=delay)}
        metrics.webhook_deliveries.labels(kind=doc["kind"], outcome=outcome).inc()
        await self._settle(doc, {**common, **update}, log_entry=entry)
        return outcome

    async def run_once(self) -> int:
        claimed = []
        while len(claimed) < self.batch:
            doc = await self.claim()
            if doc is None:
                break
            claimed.append(doc)
        results = await asyncio.gather(*(self.deliver(d) for d in claimed), return_exceptions=True)
        for doc, result in zip(claimed, results):
            if isinstance(result, Exception):  # its lease runs out and it is tried again
                log.error("webhook delivery %s failed unexpectedly", doc["_id"], exc_info=result)
        return len(claimed)


class DeliveryQueue:
    """The notifier's component: this process's webhook sender, and the nudge that sends a fresh
    delivery at once instead of at the next poll."""

    def __init__(self, platform):
        self.platform = platform
        self._waker = asyncio.Event()

    def wake(self) -> None:
        self._waker.set()

    async def run(self) -> None:
        """Background task of the notifier service: send due deliveries until cancelled."""
        settings = self.platform.settings
        async with WebhookHttp(settings=settings) as http:
            worker = DeliveryWorker(self.platform, http=http)
            while True:
                try:
                    if await worker.run_once():
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception:  # database hiccup: the queue is in MongoDB, try again shortly
                    log.exception("webhook delivery loop failed; retrying")
                try:
                    await asyncio.wait_for(self._waker.wait(), timeout=max(0.2, settings.outbox_poll_seconds))
                except TimeoutError:
                    pass
                self._waker.clear()


async def run_delivery_queue(queue: DeliveryQueue) -> None:
    await queue.run()
