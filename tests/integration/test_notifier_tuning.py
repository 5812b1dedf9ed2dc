"""Issue 7's end-to-end check: a real tuning job's state changes reach a confirmed webhook, signed,
exactly once per event even when the broker redelivers them."""
from __future__ import annotations

import asyncio

import pytest
from standardwebhooks.webhooks import Webhook

from contracts import Envelope
from contracts.tuning import TUNING_TOPIC
from services.lib.common.bus import topic_name
from services.lib.common.outbox import OUTBOX
from services.lib.mlkit.tiny import build_tiny_model
from services.notifier.models import DELIVERIES
from tests.integration.conftest import wait_for
from tests.integration.test_notifier_webhooks import _confirmed, _topic, receiver  # noqa: F401 (fixture)
from tests.integration.test_tuning_jobs import (alpaca_rows, bucket, created, create_model, job_body,  # noqa: F401
                                                job_in, jsonl, put, upload_model)

pytestmark = pytest.mark.integration


async def test_a_real_tuning_job_notifies_a_confirmed_webhook_once_per_state_change(
        api, anonymous, running_platform, receiver, bucket, tmp_path):
    platform = running_platform["platform"]
    topic = await _topic(api, "tune-notify")
    try:
        sub = await _confirmed(api, anonymous, receiver, topic, "/tuning-real")

        path = await upload_model(api, build_tiny_model(tmp_path / "tiny"), f"{bucket}/notify-tiny")
        model = await created(api, (await create_model(api, name="notify-base", path=path))["id"])
        data = await put(api, f"{bucket}/notify-data/alpaca.jsonl", jsonl(alpaca_rows(32)))
        r = await api.post("/api/v1/tuning-jobs", json=job_body(
            model["id"], data, name="notify-job", output_model_name="notify-out",
            hyperparameters={"epochs": 1, "checkpoint_count": 1},
            notification={"enabled": True, "topic_name": topic["name"], "events": ["running", "completed"]}))
        assert r.status_code == 201, r.text
        job = r.json()
        await job_in(api, job["id"], "completed")
        subject = f"tuning-jobs/{job['id']}"

        async def both():
            got = receiver.notifications("/tuning-real", subject)
            return got if len(got) >= 2 else None
        got = await wait_for(both, timeout=60)
        assert [g.payload["type"] for g in got] == ["tuning-jobs.running", "tuning-jobs.completed"]
        for g in got:
            body = Webhook(sub["secret"]).verify(g.body, g.headers)
            assert body["data"]["subject"] == subject and body["data"]["topic"] == topic["name"]
        assert got[1].payload["data"]["event_type"] == "TuneCompleted"

        # The broker hands TuneCompleted over twice more: still one delivery and one POST.
        doc = await platform.mongo[OUTBOX].find_one({"envelope.type": "TuneCompleted", "envelope.subject": subject})
        envelope = Envelope.model_validate(doc["envelope"])
        for _ in range(2):
            await platform.broker.publish(envelope.model_dump(mode="json"),
                                          topic=topic_name(platform.settings, TUNING_TOPIC),
                                          key=envelope.subject.encode())
        await asyncio.sleep(3)  # the redelivered copies are consumed well within this
        assert await platform.mongo[DELIVERIES].count_documents(
            {"event_id": envelope.id, "subscription_id": sub["id"]}) == 1
        assert len([g for g in receiver.notifications("/tuning-real", subject)
                    if g.payload["data"]["event_id"] == envelope.id]) == 1
    finally:
        await api.delete(f"/api/v1/notification-topics/{topic['id']}")
