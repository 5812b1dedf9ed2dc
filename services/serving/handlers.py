"""Serving event handlers: the deployer's reports become service status; presets wake on first call.

Each handler claims the event id in its transaction, so a redelivered event has no second effect.
"""
from __future__ import annotations

from contracts import Envelope
from contracts.serving import InstanceChanged, PresetServiceWakeRequested, ServiceStatusReported
from services.lib.common.context import Platform
from services.serving import service


async def on_status_reported(platform: Platform, envelope: Envelope, event: ServiceStatusReported) -> None:
    await service.apply_report(platform, event_id=envelope.id, report=event, at=envelope.occurred_at)


async def on_instance_changed(platform: Platform, envelope: Envelope, event: InstanceChanged) -> None:
    await service.record_instance_change(platform, event_id=envelope.id, service_id=event.service_id,
                                         instance_id=event.instance_id, status=event.status, message=event.message,
                                         at=envelope.occurred_at)


async def on_preset_wake(platform: Platform, envelope: Envelope, event: PresetServiceWakeRequested) -> None:
    await service.wake_preset(platform, event_id=envelope.id, service_id=event.service_id)


HANDLERS = {
    ServiceStatusReported: on_status_reported,
    InstanceChanged: on_instance_changed,
    PresetServiceWakeRequested: on_preset_wake,
}
