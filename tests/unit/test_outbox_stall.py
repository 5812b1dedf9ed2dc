"""The outbox relay says when it cannot publish (the API's word to callers) and logs it once per
state change, not once per retry. MongoDB is mongomock here; the broker a stand-in that fails."""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx
from mongomock_motor import AsyncMongoMockClient

from services.apps.cli.client import platform_warning
from services.lib.common.notices import notice_text
from services.lib.common.outbox import OUTBOX, OutboxRelay, Stall
from services.lib.common.settings import Settings


class Broker:
    def __init__(self):
        self.down, self.published = True, []

    async def publish(self, message, **kwargs):
        if self.down:
            raise ConnectionError("Unable to connect to the broker")
        self.published.append(kwargs["topic"])


def _pending(i: int) -> dict:
    envelope = {"id": f"e{i}", "type": "ModelDeleted", "tenant_id": "t", "subject": "models/m",
                "occurred_at": "2026-12-07T10:00:00Z",
                "data": {"model_id": "m", "name": "m", "version_ids": []}}
    return {"_id": f"e{i}", "topic": "maas.models", "envelope": envelope, "published": False, "seq": (float(i), 0)}


async def test_a_failing_broker_stalls_the_relay_logs_once_and_clears_when_it_publishes(caplog):
    mongo = AsyncMongoMockClient(tz_aware=True)["maas"]
    await mongo[OUTBOX].insert_many([_pending(1), _pending(2)])
    broker = Broker()
    relay = OutboxRelay(mongo, broker, Settings(outbox_poll_seconds=0.01))
    assert relay.stall() is None
    caplog.set_level(logging.WARNING, logger="services.lib.common.outbox")

    task = asyncio.create_task(relay.run())
    while relay.stall() is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)           # many retries
    stall = relay.stall()
    assert "Unable to connect" in stall.reason
    assert len([r for r in caplog.records if "cannot publish" in r.message]) == 1

    broker.down = False
    while relay.stall() is not None:
        await asyncio.sleep(0.01)
    relay.stop()
    await task
    assert broker.published == ["maas.models", "maas.models"]
    assert await mongo[OUTBOX].count_documents({"published": False}) == 0
    assert len([r for r in caplog.records if "publishes again" in r.message]) == 1


async def test_a_publish_that_hangs_is_a_stall_too():
    mongo = AsyncMongoMockClient(tz_aware=True)["maas"]
    await mongo[OUTBOX].insert_one(_pending(1))
    hang = asyncio.Event()

    class Hanging:
        async def publish(self, message, **kwargs):
            await hang.wait()

    relay = OutboxRelay(mongo, Hanging(), Settings(outbox_poll_seconds=0.01))
    relay.STALLED_AFTER_S = 0.05
    task = asyncio.create_task(relay.run())
    while relay.stall() is None:
        await asyncio.sleep(0.01)
    assert "does not answer" in relay.stall().reason
    hang.set()
    while relay.stall() is not None:
        await asyncio.sleep(0.01)
    relay.stop()
    await task


def test_the_notice_header_round_trips_to_what_the_cli_prints():
    header = notice_text(Stall(since=datetime(2026, 12, 7, 10, 31, 2, tzinfo=UTC), reason="x"))
    response = httpx.Response(201, headers={"Warning": header})
    text = platform_warning(response)
    assert text.startswith("events cannot be published since 2026-12-07T10:31:02Z (the event bus, Kafka")
    assert not text.endswith('"')
    assert platform_warning(httpx.Response(200)) is None
