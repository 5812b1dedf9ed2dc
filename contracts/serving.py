"""Model services (deployment): the events of the serving API, the deployer and the gateway.

Flow: the serving API records a change of a service's desired state (deploy, start, stop, scale,
upgrade, delete) and emits one of the ``Service*`` events below; the deployer consumes them and
reconciles the service's instances toward that desired state, reporting back with
``ServiceStatusReported`` and ``InstanceChanged``; the serving API turns the reports into the
service's status (``ServiceStatusChanged``). The events only nudge: the deployer always re-reads the
desired state, so a lost or repeated event cannot leave a service in a wrong state for long.
``generation`` counts desired-state changes; a report about an older generation is stale.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import EventData

SERVING_TOPIC = "serving.events"
DEPLOYER_TOPIC = "deployer.events"
GATEWAY_TOPIC = "gateway.events"

ServiceStatus = Literal["deploying", "running", "alarm", "stopping", "stopped", "failed"]
InstanceStatus = Literal["starting", "ready", "unhealthy", "draining", "stopped", "failed"]


class ServiceDeployRequested(EventData):
    type = "ServiceDeployRequested"
    topic = SERVING_TOPIC
    service_id: str
    name: str
    model_id: str
    version_id: str
    version_number: int
    template_id: str
    storage_uri: str
    instance_count: int
    qps_limit: int
    max_model_len: int
    instance_spec: str
    resource_pool: str
    content_moderation: bool = True
    generation: int = 1


class ServiceStarted(EventData):
    """The user (or a first call to a preset service) asked a stopped service to run again."""
    type = "ServiceStarted"
    topic = SERVING_TOPIC
    service_id: str
    generation: int
    reason: str = "user"


class ServiceStopped(EventData):
    """Stop requested: the deployer drains and stops every instance, then reports ``stopped``."""
    type = "ServiceStopped"
    topic = SERVING_TOPIC
    service_id: str
    generation: int
    reason: Literal["user", "auto_stop"] = "user"


class ServiceDeleted(EventData):
    type = "ServiceDeleted"
    topic = SERVING_TOPIC
    service_id: str
    name: str
    model_id: str = ""
    version_id: str = ""


class ServiceScaled(EventData):
    type = "ServiceScaled"
    topic = SERVING_TOPIC
    service_id: str
    from_count: int
    to_count: int
    generation: int


class ServiceQpsChanged(EventData):
    type = "ServiceQpsChanged"
    topic = SERVING_TOPIC
    service_id: str
    from_qps: int
    to_qps: int


class ServiceUpgraded(EventData):
    """Rolling upgrade to another version of the same model: new instances are ready before old ones stop."""
    type = "ServiceUpgraded"
    topic = SERVING_TOPIC
    service_id: str
    from_version_id: str
    from_version_number: int
    to_version_id: str
    to_version_number: int
    storage_uri: str
    generation: int


class ServiceModerationChanged(EventData):
    type = "ServiceModerationChanged"
    topic = SERVING_TOPIC
    service_id: str
    enabled: bool


class ServiceStatusChanged(EventData):
    """The service's status as users see it changed (notifications and timelines key on this)."""
    type = "ServiceStatusChanged"
    topic = SERVING_TOPIC
    service_id: str
    name: str
    status: ServiceStatus
    previous_status: str | None = None
    message: str | None = None
    ready_instances: int = 0
    instance_count: int = 0


class ServiceStatusReported(EventData):
    """The deployer's view after reconciling (or after a health change) of one generation."""
    type = "ServiceStatusReported"
    topic = DEPLOYER_TOPIC
    service_id: str
    generation: int
    status: ServiceStatus
    ready_instances: int = 0
    desired_instances: int = 0
    message: str | None = None


class InstanceChanged(EventData):
    """One instance started, became ready, turned unhealthy, was drained, stopped or failed."""
    type = "InstanceChanged"
    topic = DEPLOYER_TOPIC
    service_id: str
    instance_id: str
    version_id: str = ""
    status: InstanceStatus
    message: str | None = None


class PresetServiceWakeRequested(EventData):
    """A call reached a preset service that is not running: the serving API starts it (lazy start)."""
    type = "PresetServiceWakeRequested"
    topic = GATEWAY_TOPIC
    service_id: str
    requested_by: str = Field("", description="user id of the first caller")
