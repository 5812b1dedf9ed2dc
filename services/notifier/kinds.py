"""Which platform events notify, and as which kind: a small table, so new events plug in by data.

Each row maps an envelope type to an event kind of ``contracts.notifications.EventKind``: a fixed
kind (``TuneStarted`` → running) or one read from a payload field (``ModelVersionStatusChanged`` →
its ``status``). Event types without a row fall back to their ``status`` field
when their type follows the ``<Thing>StatusChanged`` convention, so a new status event of another
domain notifies without a change here (other unknown events only reach the timeline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from contracts.notifications import EventKind

KINDS: frozenset[str] = frozenset(get_args(EventKind))

# Raw statuses of the domains, in the notification vocabulary.
STATUS_ALIASES: dict[str, str] = {
    "created": "completed", "succeeded": "completed", "success": "completed", "finished": "completed",
    "done": "completed", "error": "failed", "deploy_failed": "failed", "abnormal": "alarm",
    "terminated": "stopped", "hang": "suspected_hang", "queued": "pending", "waiting": "pending",
    "removed": "deleted",
}


@dataclass(frozen=True)
class KindRule:
    kind: str | None = None    # fixed kind
    field: str | None = None   # or: the payload field that holds the state
    values: tuple[tuple[str, str], ...] = ()  # field value → kind, before the common aliases
    ignore: bool = False       # plumbing, never a notification


def fixed(kind: str) -> KindRule:
    assert kind in KINDS, kind
    return KindRule(kind=kind)


def by_field(field: str, **values: str) -> KindRule:
    assert all(v in KINDS for v in values.values()), values
    return KindRule(field=field, values=tuple(values.items()))


BY_STATUS = KindRule(field="status")
IGNORE = KindRule(ignore=True)

EVENT_KINDS: dict[str, KindRule] = {
    # registry (contracts/events.py)
    "ModelCreated": fixed("creating"),
    "ModelVersionCreated": fixed("creating"),
    "ModelVersionStatusChanged": BY_STATUS,
    "ModelDeleted": fixed("deleted"),
    "WeightValidationRequested": IGNORE,
    "WeightValidationCompleted": IGNORE,   # answered by ModelVersionStatusChanged
    "ModelArtifactProduced": IGNORE,
    "ModelArtifactRejected": IGNORE,       # the producing job shows the reason (output.error)
    "TaskRecordChanged": IGNORE,           # mirrors the owning job's own events
    "NotificationRuleChanged": IGNORE,
    # fine-tuning (contracts/tuning.py)
    "TuneRequested": by_field("reason", submitted="creating", continued="starting", restarted="starting"),
    "TuneStarted": fixed("running"),
    "TuneHangSuspected": fixed("suspected_hang"),
    "TuneStopped": fixed("stopped"),
    "TuneCompleted": fixed("completed"),
    "TuneFailed": fixed("failed"),
    "TuneDeleted": fixed("deleted"),
    "TuneProgress": IGNORE,
    "CheckpointSaved": IGNORE,
    "CheckpointConversionRequested": IGNORE,
    # compression (contracts/compression.py)
    "CompressionRequested": by_field("reason", submitted="creating", continued="starting", restarted="starting"),
    "CompressionStarted": fixed("running"),
    "CompressionStatusChanged": BY_STATUS,
    "CompressionStopped": fixed("stopped"),
    "CompressionCompleted": fixed("completed"),
    "CompressionFailed": fixed("failed"),
    "CompressionDeleted": fixed("deleted"),
    "CompressionProgress": IGNORE,
    # deployment (contracts/serving.py): the serving API reports every user-visible status change
    # as ServiceStatusChanged; the other Service* events are requests or internal reports.
    "ServiceDeployRequested": fixed("deploying"),
    "ServiceStatusChanged": BY_STATUS,
    "ServiceDeleted": fixed("deleted"),
    "ServiceStarted": IGNORE,
    "ServiceStopped": IGNORE,
    "ServiceStatusReported": IGNORE,
    "InstanceChanged": IGNORE,
}

# High-frequency reports that would drown a timeline; jobs show progress through their own API.
NOT_IN_TIMELINE: frozenset[str] = frozenset({"TuneProgress", "CompressionProgress"})

# Resources that have a timeline route (GET /api/v1/<resource>/<id>/timeline); subjects are
# "<resource>/<id>".
TIMELINE_RESOURCES: frozenset[str] = frozenset({"models", "tuning-jobs", "compression-jobs", "services"})


def normalise(status: object) -> str | None:
    if not isinstance(status, str):
        return None
    value = status.strip().lower().replace("-", "_").replace(" ", "_")
    value = STATUS_ALIASES.get(value, value)
    return value if value in KINDS else None


def classify(event_type: str, data: dict) -> str | None:
    """The event kind an envelope stands for, or None when it is not a notification."""
    rule = EVENT_KINDS.get(event_type)
    if rule is None:
        rule = BY_STATUS if event_type.endswith("StatusChanged") else IGNORE
    if rule.ignore:
        return None
    if rule.kind is not None:
        return rule.kind
    value = data.get(rule.field or "status")
    own = dict(rule.values)
    if isinstance(value, str) and value in own:
        return own[value]
    return normalise(value)


def resource_of(subject: str) -> str:
    return subject.split("/", 1)[0] if "/" in subject else subject
