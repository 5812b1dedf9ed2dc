"""Versioned v1 events. Change them only compatibly: add optional fields, never remove or retype.

``tests/unit/test_contracts.py`` compares each model with its checked-in JSON Schema under
``contracts/schemas/``; regenerate those with ``python -m contracts.export`` after a compatible change.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from contracts.envelope import Envelope, EventData

REGISTRY_TOPIC = "registry.events"
TASKS_TOPIC = "tasks.events"


class ModelCreated(EventData):
    type = "ModelCreated"
    topic = REGISTRY_TOPIC
    model_id: str
    name: str
    template_id: str
    version_id: str
    weights_uri: str


class ModelVersionCreated(EventData):
    type = "ModelVersionCreated"
    topic = REGISTRY_TOPIC
    model_id: str
    version_id: str
    version_number: int
    weights_uri: str
    validate_weights: bool


class WeightValidationRequested(EventData):
    """Command-like event for the validation worker (owned by the registry)."""
    type = "WeightValidationRequested"
    topic = REGISTRY_TOPIC
    task_id: str
    model_id: str
    version_id: str
    template_id: str
    weights_uri: str
    target_uri: str = Field("", description="where the platform keeps its copy; equal to weights_uri for presets")
    validate_weights: bool = True


class WeightCheck(BaseModel):
    name: str
    passed: bool


class WeightValidationCompleted(EventData):
    type = "WeightValidationCompleted"
    topic = REGISTRY_TOPIC
    task_id: str
    model_id: str
    version_id: str
    ok: bool
    message: str | None = Field(None, description="the guide's table 5-4 text when not ok")
    detail: str | None = None
    checks: list[WeightCheck] = []
    storage_uri: str | None = Field(None, description="where the imported weights now live")


class ModelVersionStatusChanged(EventData):
    type = "ModelVersionStatusChanged"
    topic = REGISTRY_TOPIC
    model_id: str
    version_id: str
    version_number: int
    status: Literal["creating", "created", "failed"]
    message: str | None = None


class ModelDeleted(EventData):
    type = "ModelDeleted"
    topic = REGISTRY_TOPIC
    model_id: str
    name: str
    version_ids: list[str] = []


class TaskRecordChanged(EventData):
    """Any service running a task on a model version (tuning, compression, deployment) announces it.

    The registry keeps these as the version's "task records" and refuses to delete a model that
    still has any.
    """
    type = "TaskRecordChanged"
    topic = TASKS_TOPIC
    task_id: str
    task_kind: Literal["tuning", "compression", "deployment", "weight_validation"]
    task_name: str = ""
    model_id: str
    version_id: str
    status: str
    removed: bool = Field(False, description="true when the task was deleted; the record goes away")


ALL_EVENTS: tuple[type[EventData], ...] = (
    ModelCreated,
    ModelVersionCreated,
    WeightValidationRequested,
    WeightValidationCompleted,
    ModelVersionStatusChanged,
    ModelDeleted,
    TaskRecordChanged,
)

_BY_TYPE = {(e.type, e.version): e for e in ALL_EVENTS}


def parse_data(envelope: Envelope) -> EventData:
    """The typed payload of an envelope; KeyError for a type/version this build does not know."""
    return _BY_TYPE[(envelope.type, envelope.version)].model_validate(envelope.data)
