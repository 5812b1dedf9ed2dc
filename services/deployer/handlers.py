"""Service events nudge the reconciler; it re-reads the desired state, so repeats are harmless
(a repeated start request does not retry a start that failed: see ``Reconciler.nudge``)."""
from __future__ import annotations

from contracts import Envelope
from contracts.serving import (ServiceDeleted, ServiceDeployRequested, ServiceModerationChanged, ServiceQpsChanged,
                               ServiceScaled, ServiceStarted, ServiceStopped, ServiceUpgraded)
from services.deployer.reconciler import Reconciler


async def on_service_event(reconciler: Reconciler, envelope: Envelope, event) -> None:
    # A (re)start or a new desired state deserves new attempts even if the last ones failed.
    # The event's generation keeps a redelivered or older request from retrying a failed start again.
    retry = isinstance(event, (ServiceDeployRequested, ServiceStarted, ServiceScaled, ServiceUpgraded))
    await reconciler.request(event.service_id, retry=retry, generation=getattr(event, "generation", None))


HANDLERS = {cls: on_service_event for cls in (
    ServiceDeployRequested, ServiceStarted, ServiceStopped, ServiceDeleted, ServiceScaled, ServiceQpsChanged,
    ServiceUpgraded, ServiceModerationChanged)}
