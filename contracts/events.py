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
    task_kind: Literal["tuning", "compression", "deployment", "weight_validation", "weight_conversion"]
    task_name: str = ""
    model_id: str
    version_id: str
    status: str
    removed: bool = Field(False, description="true when the task was deleted; the record goes away")


class ModelArtifactProduced(EventData):
    """A job (tuning, compression) produced weights that should become a new model or a new version.

    The registry consumes it and creates the model/version (status creating → created/failed, with
    the same weight import as an upload), then answers with ModelVersionStatusChanged.
    """
    type = "ModelArtifactProduced"
    topic = REGISTRY_TOPIC
    task_id: str
    task_kind: Literal["tuning", "compression"]
    weights_uri: str = Field(description="s3://bucket/prefix/ of an HF-format folder")
    target: Literal["new_model", "new_version"]
    model_name: str | None = Field(None, description="name of the new model (target new_model)")
    model_id: str | None = Field(None, description="model that gets a version (target new_version)")
    template_id: str
    quantization: str | None = Field(None, description="compression strategy; such models are deploy-only")
    description: str = ""
    validate_weights: bool = True


class ModelArtifactRejected(EventData):
    """The registry could not make the model or version a ModelArtifactProduced asked for.

    Why: the target model is gone or already has the most versions a model may have, or the template
    is unknown. The producing job (task_id: a job or a checkpoint conversion) records the reason;
    the weights stay where the job wrote them.
    """
    type = "ModelArtifactRejected"
    topic = REGISTRY_TOPIC
    task_id: str
    task_kind: Literal["tuning", "compression"]
    weights_uri: str
    reason: str


def _collect() -> tuple[type[EventData], ...]:
    """Every concrete event in this package: each domain has its own module (contracts/<domain>.py)."""
    import importlib
    import pkgutil

    import contracts

    for info in pkgutil.iter_modules(contracts.__path__):
        if info.name not in ("export", "compat", "envelope"):
            importlib.import_module(f"contracts.{info.name}")
    found, stack = [], list(EventData.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "type" in cls.__dict__:
            found.append(cls)
    return tuple(sorted(found, key=lambda e: (e.topic, e.type, e.version)))


ALL_EVENTS: tuple[type[EventData], ...] = _collect()
_BY_TYPE = {(e.type, e.version): e for e in ALL_EVENTS}
assert len(_BY_TYPE) == len(ALL_EVENTS), "two events share a (type, version)"


def parse_data(envelope: Envelope) -> EventData:
    """The typed payload of an envelope; KeyError for a type/version this build does not know."""
    return _BY_TYPE[(envelope.type, envelope.version)].model_validate(envelope.data)
