"""Compression documents, request bodies (table 7-3) and the views the API returns."""
from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pymongo import ASCENDING, DESCENDING

from contracts.notifications import EventNotification
from services.lib.common.cluster import Resources
from services.lib.pools.specs import COMPRESSION_SPECS
from services.lib.common.mongo import IndexSpec
from services.lib.common.jobs import PermanentLog, SourceModel
from services.lib.jobs import resources
from services.lib.common.validation import Description100, ResourceName, TaskName, limited_text
from services.lib.pools.models import PoolChoice

JOBS = "compression_jobs"
LOGS = "compression_logs"
MANAGED_BUCKET = "maas-compression"   # outputs of jobs that name no output_path

MAX_ATTEMPTS = 3          # a job whose worker vanished is re-queued, at most this many runs in all
MAX_INSTANCES = 8
DEFAULT_ALPHA = 0.5       # table 7-3: migration strength, default 0.5

INDEXES: list[IndexSpec] = [
    (JOBS, [("tenant_id", ASCENDING), ("created_at", DESCENDING)], {}),
    (JOBS, [("tenant_id", ASCENDING), ("output.model_name", ASCENDING)], {}),
    (JOBS, [("status", ASCENDING), ("created_at", ASCENDING)], {}),
    (JOBS, [("output.weights_uri", ASCENDING)], {}),
    (LOGS, [("job_id", ASCENDING), ("seq", ASCENDING)], {"unique": True}),
]


class JobStatus(StrEnum):
    pending = "pending"       # 等待中: queued for a worker (also after a continue)
    running = "running"       # 运行中
    stopped = "stopped"       # 已停止: by the user; continue runs it again from the start (no checkpoints)
    completed = "completed"   # 已完成
    failed = "failed"         # 运行失败


class Strategy(StrEnum):
    smoothquant_w8a8 = "smoothquant-w8a8"
    awq_w4a16 = "awq-w4a16"


STRATEGY_LABELS = {Strategy.smoothquant_w8a8: "SmoothQuant-W8A8", Strategy.awq_w4a16: "AWQ-W4A16"}

JobName = TaskName   # table 7-3: the guide's name rule for jobs (no '.')

# 实例规格 for compression (services.lib.pools.specs): the worker's threads follow the spec's CPUs.
INSTANCE_SPECS: dict[str, tuple[int, str]] = {s.id: (s.cpus, s.name) for s in COMPRESSION_SPECS.values()}
# What a job of each spec takes from its pool: its vCPUs and memory (one process, whatever the count).
SPEC_RESOURCES: dict[str, Resources] = {s.id: s.resources for s in COMPRESSION_SPECS.values()}
DEFAULT_SPEC = "cpu.2u8g"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobCreate(Strict):
    name: JobName
    description: limited_text(1000) = ""
    source: SourceModel
    strategy: Strategy
    alpha: float | None = Field(None, description="SmoothQuant migration strength in [0, 1], default 0.5; "
                                                  "only for smoothquant-w8a8")
    calibration_dataset: str | None = Field(
        None, description="bucket/path of a .txt / .jsonl / .json calibration file; default the built-in set")
    output_model_name: ResourceName
    output_model_description: Description100 = ""
    output_path: str | None = Field(None, description="bucket/folder for the compressed weights; a folder named "
                                                      "after the job id is created under it")
    resource_pool: PoolChoice = "public"
    instance_spec: str = Field(DEFAULT_SPEC, description=f"one of {', '.join(INSTANCE_SPECS)}")
    instance_count: int = Field(1, description=f"1~{MAX_INSTANCES}")
    permanent_log: PermanentLog = Field(default_factory=PermanentLog)
    notification: EventNotification = Field(default_factory=EventNotification)

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return value
        strategy = info.data.get("strategy")
        if strategy is not None and strategy != Strategy.smoothquant_w8a8:
            raise ValueError(f"the migration strength applies to smoothquant-w8a8 only; leave it out for "
                             f"{strategy.value}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the migration strength must be between 0 and 1; got {value}")
        return value

    @field_validator("instance_count")
    @classmethod
    def _instances(cls, value: int) -> int:
        if not 1 <= value <= MAX_INSTANCES:
            raise ValueError(f"must be between 1 and {MAX_INSTANCES}; got {value}")
        return value


class EstimateRequest(Strict):
    source: SourceModel
    strategy: Strategy


job_view = resources.job_view   # nothing of compression's own to add
