"""The notifier's one consumer: every event of every topic.

Each event is claimed once (``mark_processed``), stored in its subject's timeline, and — when it is
a state change that a rule selects — turned into one delivery per confirmed subscription, all in
one transaction. A redelivered event is a no-op, so a subscription gets each event exactly once.
"""
from __future__ import annotations

from contracts import ALL_EVENTS, Envelope, EventData
from contracts.notifications import NotificationRuleChanged
from services.notifier import service, timeline
from services.notifier.delivery import DeliveryQueue
from services.notifier.kinds import NOT_IN_TIMELINE, classify

CONSUMER = "notifier"


async def on_event(queue: DeliveryQueue, envelope: Envelope, event: EventData) -> None:
    platform = queue.platform
    kind = classify(envelope.type, envelope.data)
    queued = 0
    async with platform.uow() as uow:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        if isinstance(event, NotificationRuleChanged):
            await service.apply_rule_event(uow, tenant_id=envelope.tenant_id, event=event)
            if not event.removed:
                queued += await _catch_up(uow, envelope)
        # Notify state changes only: a repeated "running" (e.g. progress) is not news.
        if await timeline.record(uow, envelope, kind):
            queued += await service.fan_out(uow, envelope=envelope, kind=kind)
    if queued:
        queue.wake()


async def _catch_up(uow, rule: Envelope) -> int:
    """Notify the state changes of the rule's subject that happened after the rule was set but were
    consumed before it: the rule travels on the notifications topic and the job's events on the
    job's own, and Kafka orders each topic on its own (a job's first "running" can come first)."""
    queued = 0
    for envelope, kind in await timeline.state_changes_since(uow, tenant_id=rule.tenant_id, subject=rule.subject,
                                                             since=rule.occurred_at):
        queued += await service.fan_out(uow, envelope=envelope, kind=kind, skip_delivered=True)
    return queued


def topics() -> list[str]:
    return sorted({e.topic for e in ALL_EVENTS})


def handlers_for(topic: str) -> dict[type[EventData], object]:
    return {e: on_event for e in ALL_EVENTS if e.topic == topic and e.type not in NOT_IN_TIMELINE}
