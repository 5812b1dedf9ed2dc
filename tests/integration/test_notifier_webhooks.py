"""Webhook notifications end to end: real platform, real Kafka/MongoDB/S3, a real HTTP receiver.

The receiver is a tiny ASGI app served by uvicorn on 127.0.0.1, so its fixture opts in to private
webhook targets as an operator would (MAAS_WEBHOOK_ALLOW_PRIVATE, off by default). It records every
request; paths under ``/fail`` answer 500 to everything but the confirmation request, so a
subscription there can be confirmed and then fails every notification.
"""
from __future__ import annotations

import asyncio
import json
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from cloudevents.core.bindings import http as http_binding
from standardwebhooks.webhooks import Webhook

from contracts import Envelope, new_id
from contracts.events import ModelVersionStatusChanged
from contracts.notifications import NotificationRuleChanged
from contracts.tuning import TuneCompleted, TuneFailed, TuneStarted
from services.lib.common import metrics
from services.lib.common.bus import topic_name
from services.lib.common.http import server_config
from services.lib.common.outbox import OUTBOX
from services.lib.mlkit.tiny import build_tiny_model
from services.notifier import delivery
from services.notifier.models import DELIVERIES, SUBSCRIPTIONS, DeliveryKind
from services.notifier.timeline import EVENTS
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self):
        self.requests: list[Received] = []
        self.url = ""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        got = Received(scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]}, body.decode())
        self.requests.append(got)
        failing = scope["path"].startswith("/fail") and got.payload.get("type") != "subscription.confirmation"
        await send({"type": "http.response.start", "status": 500 if failing else 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"no" if failing else b"ok"})

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def notifications(self, path: str, subject: str) -> list[Received]:
        return [r for r in self.at(path) if r.payload["type"] != "subscription.confirmation"
                and r.payload["data"]["subject"] == subject]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def served(receiver: Receiver):
    """``receiver`` answering on a free loopback port (``receiver.url``) until the block ends."""
    port = _free_port()
    server = uvicorn.Server(server_config(receiver, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "receiver did not start"
        await asyncio.sleep(0.05)
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def receiver(running_platform):
    settings = running_platform["platform"].settings
    saved, settings.webhook_allow_private = settings.webhook_allow_private, True
    try:
        async with served(Receiver()) as app:
            yield app
    finally:
        settings.webhook_allow_private = saved


@pytest.fixture(scope="module")
async def tenant(api) -> dict:
    return (await api.get("/api/v1/auth/me")).json()


async def _topic(api, name: str) -> dict:
    r = await api.post("/api/v1/notification-topics", json={"name": f"{name}-{new_id()[:6]}"})
    assert r.status_code == 201, r.text
    return r.json()


async def _subscribe(api, topic: dict, url: str) -> dict:
    r = await api.post(f"/api/v1/notification-topics/{topic['id']}/subscriptions", json={"endpoint": url})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["status"] == "unconfirmed" and sub["secret"].startswith("whsec_")
    return sub


async def _confirm(anonymous, receiver: Receiver, path: str, sub: dict) -> dict:
    """Play the receiver's side of the handshake: verify the request, post its token back."""
    async def handshake():
        return next((r for r in receiver.at(path) if r.payload["type"] == "subscription.confirmation"), None)
    request = await wait_for(handshake, timeout=30)
    data = Webhook(sub["secret"]).verify(request.body, request.headers)["data"]
    assert data["subscription_id"] == sub["id"]
    r = await anonymous.post(data["confirm_url"], json={"token": data["token"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed"
    return data


async def _confirmed(api, anonymous, receiver: Receiver, topic: dict, path: str) -> dict:
    """A subscription of ``topic`` to ``receiver``'s ``path``, handshake done."""
    sub = await _subscribe(api, topic, f"{receiver.url}{path}")
    await _confirm(anonymous, receiver, path, sub)
    return sub


async def _tiny_model(api, tenant: dict, tmp_path, name: str) -> dict:
    folder = build_tiny_model(tmp_path / name)
    for f in sorted(folder.iterdir()):
        r = await api.put(f"/api/v1/storage/objects/{tenant['default_bucket']}/{name}/{f.name}", content=f.read_bytes())
        assert r.status_code == 201, r.text
    r = await api.post("/api/v1/models", json={"name": name, "template_id": "qwen2-custom",
                                               "weights_path": f"{tenant['default_bucket']}/{name}"})
    assert r.status_code == 201, r.text
    model = r.json()

    async def created():
        doc = (await api.get(f"/api/v1/models/{model['id']}")).json()
        return doc if doc["status"] != "creating" else None
    assert (await wait_for(created, timeout=120))["status"] == "created"
    return model


def _consumed(event_type: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "maas_events_consumed_total", {"group": "notifier", "type": event_type, "outcome": "ok"}) or 0.0


async def test_a_confirmed_webhook_gets_each_model_state_change_once_and_signed(
        api, anonymous, running_platform, receiver, tenant, tmp_path):
    platform = running_platform["platform"]
    topic = await _topic(api, "models")
    try:
        confirmed = await _subscribe(api, topic, f"{receiver.url}/confirmed")
        silent = await _subscribe(api, topic, f"{receiver.url}/unconfirmed")
        data = await _confirm(anonymous, receiver, "/confirmed", confirmed)
        r = await anonymous.post(data["confirm_url"], json={"token": "not-the-token"})
        assert r.status_code == 403 and r.json()["error"]["field"] == "token"

        r = await api.post("/api/v1/notification-rules", json={
            "topic_name": topic["name"], "subject": "models/*", "events": ["creating", "completed", "failed"]})
        assert r.status_code == 201, r.text

        model = await _tiny_model(api, tenant, tmp_path, f"notified-{new_id()[:6]}")
        subject = f"models/{model['id']}"

        async def both():
            got = receiver.notifications("/confirmed", subject)
            return got if len(got) >= 2 else None
        got = await wait_for(both, timeout=60)
        assert [g.payload["type"] for g in got] == ["models.creating", "models.completed"]
        for g in got:  # signed with the subscription's secret, Standard Webhooks style
            body = Webhook(confirmed["secret"]).verify(g.body, g.headers)
            assert body["data"]["subject"] == subject and body["data"]["topic"] == topic["name"]
            assert g.headers["webhook-id"].startswith("msg_")
        completed = got[1].payload["data"]
        assert completed["event_type"] == "ModelVersionStatusChanged" and completed["kind_label"] == "已完成"
        assert completed["detail"]["status"] == "created"

        # The broker redelivers the status change twice: still one delivery, one POST.
        doc = await platform.mongo[OUTBOX].find_one({"envelope.type": "ModelVersionStatusChanged",
                                                     "envelope.subject": subject})
        envelope = Envelope.model_validate(doc["envelope"])
        assert envelope.id == completed["event_id"]
        before = _consumed("ModelVersionStatusChanged")
        for _ in range(2):
            await platform.broker.publish(envelope.model_dump(mode="json"),
                                          topic=topic_name(platform.settings, ModelVersionStatusChanged.topic),
                                          key=envelope.subject.encode())

        async def handled_twice():
            return _consumed("ModelVersionStatusChanged") >= before + 2
        await wait_for(handled_twice, timeout=60)
        assert await platform.mongo[DELIVERIES].count_documents(
            {"event_id": envelope.id, "subscription_id": confirmed["id"]}) == 1
        await asyncio.sleep(1)  # a second POST, were there one, would have gone out by now
        assert len([g for g in receiver.notifications("/confirmed", subject)
                    if g.payload["data"]["event_id"] == envelope.id]) == 1

        # The unconfirmed subscription got its confirmation request and nothing else.
        assert [r.payload["type"] for r in receiver.at("/unconfirmed")] == ["subscription.confirmation"]
        assert await platform.mongo[DELIVERIES].count_documents(
            {"subscription_id": silent["id"], "kind": DeliveryKind.notification}) == 0

        # The delivery log shows the handshake and both notifications (of this model: "models/*" also
        # matches models that other tests of the session create in this account meanwhile).
        r = await api.get("/api/v1/notification-deliveries", params={"subscription_id": confirmed["id"]})
        log = [d for d in r.json()["items"] if d["kind"] == "confirmation" or d["subject"] == subject]
        assert sorted((d["kind"], d["status"]) for d in log) == [
            ("confirmation", "succeeded"), ("notification", "succeeded"), ("notification", "succeeded")]
        detail = (await api.get(f"/api/v1/notification-deliveries/{log[0]['id']}")).json()
        assert detail["attempts"] == 1 and detail["attempt_log"][0]["status_code"] == 200
    finally:
        await api.delete(f"/api/v1/notification-topics/{topic['id']}")


async def test_a_failing_receiver_is_retried_with_backoff_then_dead_lettered(
        api, anonymous, running_platform, receiver, tenant):
    """Also the job path: a tuning job's "事件通知" setting arrives as NotificationRuleChanged."""
    platform = running_platform["platform"]
    settings = platform.settings
    saved = settings.webhook_retry_base_seconds, settings.webhook_max_attempts
    settings.webhook_retry_base_seconds, settings.webhook_max_attempts = 0.2, 3
    topic = await _topic(api, "tuning")
    try:
        sub = await _confirmed(api, anonymous, receiver, topic, "/fail/tuning")
        job_id = new_id()
        subject = f"tuning-jobs/{job_id}"
        async with platform.uow() as uow:
            uow.emit(NotificationRuleChanged(subject=subject, topic_name=topic["name"], events=["failed"]),
                     tenant_id=tenant["tenant_id"], subject=subject)
        async with platform.uow() as uow:
            uow.emit(TuneStarted(job_id=job_id, run_id="r1", worker_id="w1", total_iterations=10),
                     tenant_id=tenant["tenant_id"], subject=subject)
            failed = uow.emit(TuneFailed(job_id=job_id, message="loss is NaN"),
                              tenant_id=tenant["tenant_id"], subject=subject)

        async def dead():
            doc = await platform.mongo[DELIVERIES].find_one({"event_id": failed.id, "subscription_id": sub["id"]})
            return doc if doc and doc["status"] == "dead" else None
        doc = await wait_for(dead, timeout=60)
        assert doc["attempts"] == 3
        posts = receiver.notifications("/fail/tuning", subject)
        assert len(posts) == 3 and {p.headers["webhook-id"] for p in posts} == {doc["_id"]}
        assert all(p.payload["type"] == "tuning-jobs.failed" for p in posts)
        Webhook(sub["secret"]).verify(posts[0].body, posts[0].headers)
        # "running" was not chosen, so TuneStarted notified nobody.
        assert await platform.mongo[DELIVERIES].count_documents({"subject": subject}) == 1

        view = (await api.get(f"/api/v1/notification-deliveries/{doc['_id']}")).json()
        assert view["status"] == "dead" and [a["status_code"] for a in view["attempt_log"]] == [500, 500, 500]
        assert view["last_error"] == "HTTP 500" and view["payload"]["data"]["detail"]["message"] == "loss is NaN"
        dead_list = (await api.get("/api/v1/notification-deliveries", params={"status": "dead",
                                                                             "subscription_id": sub["id"]})).json()
        assert [d["id"] for d in dead_list["items"]] == [doc["_id"]]

        # A dead letter can be re-driven by hand: a fresh round of attempts, then dead again.
        r = await api.post(f"/api/v1/notification-deliveries/{doc['_id']}/retry")
        assert r.status_code == 200 and r.json()["status"] in ("pending", "delivering", "dead")
        again = await wait_for(lambda: _dead_after(platform, doc["_id"], 6), timeout=60)
        assert again["attempts"] == 6
        r = await api.post(f"/api/v1/notification-deliveries/{doc['_id']}/retry")
        assert r.status_code == 200
    finally:
        settings.webhook_retry_base_seconds, settings.webhook_max_attempts = saved
        await api.delete(f"/api/v1/notification-topics/{topic['id']}")


async def test_a_job_rule_consumed_after_the_jobs_first_state_change_still_notifies_it(
        api, anonymous, running_platform, receiver, tenant):
    """The rule travels on the notifications topic, the job's events on the tuning topic: Kafka may
    hand the notifier the job's "completed" first. Only what happened after the rule was set counts."""
    platform = running_platform["platform"]
    topic = await _topic(api, "late-rule")
    try:
        await _confirmed(api, anonymous, receiver, topic, "/late-rule")
        job_id = new_id()
        subject = f"tuning-jobs/{job_id}"
        async with platform.uow() as uow:   # before the rule was set: not notified
            uow.emit(TuneStarted(job_id=job_id, run_id="r1", worker_id="w1", total_iterations=10),
                     tenant_id=tenant["tenant_id"], subject=subject)
        await asyncio.sleep(0.01)  # the database keeps milliseconds: keep the three apart
        rule = Envelope.wrap(NotificationRuleChanged(subject=subject, topic_name=topic["name"],
                                                     events=["running", "completed"]),
                             tenant_id=tenant["tenant_id"], subject=subject)
        await asyncio.sleep(0.01)
        async with platform.uow() as uow:
            completed = uow.emit(TuneCompleted(job_id=job_id, iterations=10, weights_uri="s3://b/p/",
                                               output_model_name="late-out"),
                                 tenant_id=tenant["tenant_id"], subject=subject)

        async def recorded():
            return await platform.mongo[EVENTS].find_one({"_id": completed.id})
        await wait_for(recorded, timeout=60)
        assert await platform.mongo[DELIVERIES].count_documents({"subject": subject}) == 0

        for _ in range(2):  # the rule, late, and then redelivered: one notification all the same
            await platform.broker.publish(rule.model_dump(mode="json"),
                                          topic=topic_name(platform.settings, NotificationRuleChanged.topic),
                                          key=subject.encode())

        async def notified():
            return receiver.notifications("/late-rule", subject) or None
        await wait_for(notified, timeout=60)
        await asyncio.sleep(1)  # a second POST, were there one, would have gone out by now
        got = receiver.notifications("/late-rule", subject)
        assert [g.payload["type"] for g in got] == ["tuning-jobs.completed"]
        assert got[0].payload["data"]["event_id"] == completed.id
        assert await platform.mongo[DELIVERIES].count_documents({"subject": subject}) == 1
    finally:
        await api.delete(f"/api/v1/notification-topics/{topic['id']}")


async def test_a_cloudevents_subscription_gets_cloudevents_that_the_sdk_reads(
        api, anonymous, running_platform, receiver, tenant):
    """format "cloudevents": each request is a structured-mode CloudEvent, still signed."""
    platform = running_platform["platform"]
    topic = await _topic(api, "ce")
    try:
        r = await api.post(f"/api/v1/notification-topics/{topic['id']}/subscriptions",
                           json={"endpoint": f"{receiver.url}/ce", "format": "cloudevents"})
        assert r.status_code == 201, r.text
        sub = r.json()
        assert sub["format"] == "cloudevents"
        r = await api.post(f"/api/v1/notification-topics/{topic['id']}/subscriptions",
                           json={"endpoint": f"{receiver.url}/ce-bad", "format": "xml"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "format"

        def as_cloudevent(request: Received):
            Webhook(sub["secret"]).verify(request.body, request.headers)   # the signature covers this body
            assert request.headers["content-type"] == "application/cloudevents+json"
            return http_binding.from_http_event(http_binding.HTTPMessage(
                headers=request.headers, body=request.body.encode()))

        async def handshake():
            return receiver.at("/ce") or None
        confirmation = as_cloudevent((await wait_for(handshake, timeout=30))[0])
        assert confirmation.get_type() == "io.openmaas.subscription.confirmation"
        data = confirmation.get_data()
        r = await anonymous.post(data["confirm_url"], json={"token": data["token"]})
        assert r.status_code == 200 and r.json()["format"] == "cloudevents"

        job_id = new_id()
        subject = f"tuning-jobs/{job_id}"
        r = await api.post("/api/v1/notification-rules", json={
            "topic_name": topic["name"], "subject": subject, "events": ["running"]})
        assert r.status_code == 201, r.text
        async with platform.uow() as uow:
            started = uow.emit(TuneStarted(job_id=job_id, run_id="r1", worker_id="w1", total_iterations=10),
                               tenant_id=tenant["tenant_id"], subject=subject)

        async def notified():
            return receiver.at("/ce")[1:] or None
        (request,) = await wait_for(notified, timeout=60)
        event = as_cloudevent(request)
        assert event.get_specversion() == "1.0"
        assert (event.get_id(), event.get_type(), event.get_source(), event.get_subject()) == (
            request.headers["webhook-id"], "io.openmaas.tuning-jobs.running",
            f"/openmaas/notification-topics/{topic['name']}", subject)
        # The notifier may read the event back from MongoDB, which keeps milliseconds.
        assert abs(event.get_time() - started.occurred_at) < timedelta(milliseconds=1)
        assert event.get_data()["event_id"] == started.id and event.get_data()["kind"] == "running"
    finally:
        await api.delete(f"/api/v1/notification-topics/{topic['id']}")


async def _dead_after(platform, delivery_id: str, attempts: int):
    doc = await platform.mongo[DELIVERIES].find_one({"_id": delivery_id})
    return doc if doc["status"] == "dead" and doc["attempts"] == attempts else None


async def test_a_delivery_claimed_by_a_worker_that_died_is_delivered_after_its_lease(
        api, anonymous, running_platform, receiver, tenant):
    """The queue lives in MongoDB: a crash mid-attempt leaves a lease that runs out, then it goes out."""
    platform = running_platform["platform"]
    topic = await _topic(api, "crash")
    try:
        sub = await _confirmed(api, anonymous, receiver, topic, "/crash")
        sub_doc = await platform.mongo[SUBSCRIPTIONS].find_one({"_id": sub["id"]})
        now = datetime.now(UTC)
        doc = delivery.new_delivery(tenant_id=tenant["tenant_id"], subscription=sub_doc,
                                    kind=DeliveryKind.notification, event_id=new_id(), subject="services/x",
                                    payload={"type": "services.running", "data": {"subject": "services/x"}},
                                    now=now, max_attempts=3)
        # As a dead worker leaves it: claimed, lease expired.
        doc.update(status="delivering", claim="dead-worker", next_attempt_at=now - timedelta(seconds=1))
        await platform.mongo[DELIVERIES].insert_one(doc)
        running_platform["app"].state.components["notifier"].wake()

        async def delivered():
            d = await platform.mongo[DELIVERIES].find_one({"_id": doc["_id"]})
            return d if d["status"] == "succeeded" else None
        assert (await wait_for(delivered, timeout=30))["attempts"] == 1
        assert [r.headers["webhook-id"] for r in receiver.notifications("/crash", "services/x")] == [doc["_id"]]
    finally:
        await api.delete(f"/api/v1/notification-topics/{topic['id']}")


async def test_subscription_rules_and_errors(api, anonymous, running_platform, receiver):
    platform = running_platform["platform"]
    topic = await _topic(api, "rules")
    path = f"/api/v1/notification-topics/{topic['id']}/subscriptions"
    try:
        r = await api.post("/api/v1/notification-topics", json={"name": topic["name"]})
        assert r.status_code == 409 and r.json()["error"]["field"] == "name"
        r = await api.post("/api/v1/notification-topics", json={"name": "1bad"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "name"
        r = await api.post(path, json={"endpoint": "ftp://example.com/x"})
        assert r.status_code == 400 and r.json()["error"] == {
            "code": "invalid_parameter", "field": "endpoint",
            "message": "endpoint: must be an http:// or https:// URL"}
        platform.settings.webhook_allow_private = False
        try:
            r = await api.post(path, json={"endpoint": f"{receiver.url}/private"})
            assert r.status_code == 400 and "private, loopback or link-local" in r.json()["error"]["message"]
        finally:
            platform.settings.webhook_allow_private = True
        sub = await _subscribe(api, topic, f"{receiver.url}/rules")
        r = await api.post(path, json={"endpoint": f"{receiver.url}/rules"})
        assert r.status_code == 409 and r.json()["error"]["field"] == "endpoint"
        r = await api.post(f"/api/v1/notification-subscriptions/{sub['id']}/confirm", json={"token": ""})
        assert r.status_code == 400 and r.json()["error"]["field"] == "token"
        r = await anonymous.post(f"/api/v1/notification-subscriptions/{new_id()}/confirm", json={"token": "x"})
        assert r.status_code == 403
        assert "secret" not in {k for k, v in (await api.get(
            f"/api/v1/notification-subscriptions/{sub['id']}")).json().items() if v}

        r = await api.post("/api/v1/notification-rules", json={"topic_name": "no-such-topic", "subject": "*",
                                                               "events": ["failed"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "topic_name"
        r = await api.post("/api/v1/notification-rules", json={"topic_name": topic["name"], "subject": "*",
                                                               "events": ["exploded"]})
        assert r.status_code == 400 and r.json()["error"]["field"].startswith("events")
        r = await api.get("/api/v1/notification-deliveries", params={"status": "lost"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "status"

        kinds = (await api.get("/api/v1/notification-event-kinds")).json()["items"]
        assert {"kind": "suspected_hang", "label": "疑似卡死"} in kinds
        listed = (await api.get("/api/v1/notification-topics")).json()["items"]
        assert next(t for t in listed if t["id"] == topic["id"])["subscription_count"] == 1
    finally:
        assert (await api.delete(f"/api/v1/notification-topics/{topic['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/notification-topics/{topic['id']}")).status_code == 404
    assert await platform.mongo[SUBSCRIPTIONS].count_documents({"topic_id": topic["id"]}) == 0
