"""Registry documents, request bodies and the views the API returns."""
from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING

from contracts.timestamps import Timestamp
from services.lib.common.mongo import IndexSpec
from services.lib.common.validation import Description100, ResourceName

from services.lib.readmodels.model_refs import MODELS, VERSIONS  # noqa: E402  (the registry's published read contract)

TASK_RECORDS = "model_task_records"
PRESETS = "preset_imports"

MAX_VERSIONS = 10           # guide 5: a model has at most 10 versions
MANAGED_BUCKET = "maas-models"  # platform-owned copies of every version's weights

INDEXES: list[IndexSpec] = [
    (MODELS, [("tenant_id", ASCENDING), ("name", ASCENDING)], {"unique": True}),
    (MODELS, [("tenant_id", ASCENDING), ("created_at", DESCENDING)], {}),
    (VERSIONS, [("model_id", ASCENDING), ("number", ASCENDING)], {"unique": True}),
    (VERSIONS, [("tenant_id", ASCENDING), ("model_id", ASCENDING)], {}),
    (TASK_RECORDS, [("tenant_id", ASCENDING), ("model_id", ASCENDING)], {}),
    (TASK_RECORDS, [("version_id", ASCENDING)], {}),
]


class Status(StrEnum):
    creating = "creating"   # 创建中
    created = "created"     # 创建成功
    failed = "failed"       # 创建失败


class TaskStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ResourceName
    description: Description100 = ""
    template_id: str = Field(description="a model-square template id, e.g. 'qwen2-7b'")
    weights_source: Literal["custom", "preset"] = Field(
        "custom", description="'custom': weights_path in your bucket; 'preset': the template's shipped weights")
    weights_path: str | None = Field(None, description="bucket/folder holding HF-format weights")
    validate_weights: bool = True


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: Description100 = ""
    weights_path: str = Field(description="bucket/folder holding HF-format weights")
    base_version: int | None = Field(None, ge=1, description="the version this one derives from (default: latest)")
    validate_weights: bool = True


class TaskRecordView(BaseModel):
    id: str
    kind: str
    name: str
    status: str
    message: str | None = None
    checks: list[dict] = []
    created_at: Timestamp
    updated_at: Timestamp


class VersionView(BaseModel):
    id: str
    model_id: str
    number: int
    name: str              # "V1", "V2", ... as the console shows it
    description: str
    status: Status
    message: str | None = None
    source_uri: str        # where the weights came from
    storage_uri: str | None  # the platform's copy (None until imported)
    validate_weights: bool
    base_version: int | None = None
    created_at: Timestamp
    updated_at: Timestamp
    tasks: list[TaskRecordView] | None = None


class ModelView(BaseModel):
    id: str
    name: str
    description: str
    template_id: str
    template_name: str
    status: Status
    quantization: str | None = None
    version_count: int
    latest_version: int
    created_at: Timestamp
    updated_at: Timestamp
    versions: list[VersionView] | None = None


def version_view(doc: dict, tasks: list[dict] | None = None) -> VersionView:
    return VersionView(
        id=doc["_id"], model_id=doc["model_id"], number=doc["number"], name=f"V{doc['number']}",
        description=doc.get("description", ""), status=doc["status"], message=doc.get("message"),
        source_uri=doc["source_uri"], storage_uri=doc.get("storage_uri"),
        validate_weights=doc["validate_weights"], base_version=doc.get("base_version"),
        created_at=doc["created_at"], updated_at=doc["updated_at"],
        tasks=None if tasks is None else [task_view(t) for t in tasks])


def task_view(doc: dict) -> TaskRecordView:
    return TaskRecordView(id=doc["_id"], kind=doc["kind"], name=doc.get("name", ""), status=doc["status"],
                          message=doc.get("message"), checks=doc.get("checks", []),
                          created_at=doc["created_at"], updated_at=doc["updated_at"])


def model_view(doc: dict, versions: list[VersionView] | None = None) -> ModelView:
    return ModelView(
        id=doc["_id"], name=doc["name"], description=doc.get("description", ""), template_id=doc["template_id"],
        template_name=doc.get("template_name", doc["template_id"]), status=doc["status"],
        quantization=doc.get("quantization"), version_count=doc["version_count"],
        latest_version=doc["latest_version"], created_at=doc["created_at"], updated_at=doc["updated_at"],
        versions=versions)
