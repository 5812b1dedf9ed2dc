"""The consumer-side dispatcher: routes an envelope to its handler and measures how late it arrived."""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from contracts import Envelope
from contracts.events import ModelCreated, ModelDeleted
from services.lib.common import metrics
from services.lib.common.settings import Settings
from services.runtime import dispatcher


def _delivered(group: str, event_type: str) -> tuple[float, float]:
    """(count, sum) of maas_event_delivery_seconds for one group and type."""
    labels = {"group": group, "type": event_type}
    return (metrics.REGISTRY.get_sample_value("maas_event_delivery_seconds_count", labels) or 0.0,
            metrics.REGISTRY.get_sample_value("maas_event_delivery_seconds_sum", labels) or 0.0)


def _setup(group: str):
    handled: list[tuple[Envelope, ModelDeleted]] = []

    async def on_deleted(platform, envelope, event):
        handled.append((envelope, event))
    platform = SimpleNamespace(settings=Settings(slow_event_seconds=5.0))
    return dispatcher(platform, group, {(ModelDeleted.type, ModelDeleted.version): (ModelDeleted, on_deleted)}), handled


def _body(*, age: timedelta, event=None) -> dict:
    envelope = Envelope.wrap(event or ModelDeleted(model_id="m1", name="m"), tenant_id="t1", subject="models/m1")
    envelope.occurred_at = datetime.now(UTC) - age
    return envelope.model_dump(mode="json")


async def test_a_prompt_event_is_handled_and_its_delivery_time_recorded_without_a_warning(caplog):
    dispatch, handled = _setup("dispatch-prompt")
    with caplog.at_level(logging.WARNING, logger="services.runtime"):
        await dispatch(_body(age=timedelta(milliseconds=200)))
    assert [e.model_id for _, e in handled] == ["m1"]
    count, total = _delivered("dispatch-prompt", "ModelDeleted")
    assert count == 1 and 0.2 <= total < 5.0
    assert not caplog.records


async def test_a_late_event_is_still_handled_and_logged_with_its_group_and_delay(caplog):
    dispatch, handled = _setup("dispatch-late")
    body = _body(age=timedelta(seconds=23))
    with caplog.at_level(logging.WARNING, logger="services.runtime"):
        await dispatch(body)
    assert len(handled) == 1
    count, total = _delivered("dispatch-late", "ModelDeleted")
    assert count == 1 and 23.0 <= total < 30.0
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "ModelDeleted" in message and body["id"] in message and "dispatch-late" in message
    assert "23." in message


async def test_another_consumers_event_is_ignored_and_not_timed():
    dispatch, handled = _setup("dispatch-other")
    await dispatch(_body(age=timedelta(seconds=60), event=ModelCreated(
        model_id="m1", name="n", template_id="t", version_id="v", weights_uri="s3://b/k/")))
    assert handled == []
    assert _delivered("dispatch-other", "ModelCreated") == (0.0, 0.0)
    assert metrics.REGISTRY.get_sample_value(
        "maas_events_consumed_total", {"group": "dispatch-other", "type": "ModelCreated", "outcome": "ignored"}) == 1
