"""Tuning documents, request bodies (table 6-4) and the views the API returns."""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pymongo import ASCENDING, DESCENDING

from contracts.notifications import EventNotification
from contracts.timestamps import Timestamp, instants
from services.lib.common.cluster import Resources
from services.lib.pools.specs import rank_resources
from services.lib.common.mongo import IndexSpec
from services.lib.common.jobs import PermanentLog, SourceModel
from services.lib.common.objectstore import ObjectPath
from services.lib.jobs import resources
from services.lib.common.validation import Description100, ResourceName, TaskName, limited_text
from services.lib.pools.models import PoolChoice

JOBS = "tuning_jobs"
LOGS = "tuning_logs"
CONVERSIONS = "tuning_conversions"
MANAGED_BUCKET = "maas-tuning"   # platform-owned: normalised examples, converted tables, resume state

MAX_ITERATIONS = 100_000         # table 6-4: Iterations 1~100000
MAX_CHECKPOINTS = 10             # table 6-4: at most 10 checkpoints
MAX_UNCONDITIONAL_RESTARTS = 3   # table 6-4: unconditional restarts at most 3 in a row
MAX_DATASET_BYTES = 5 * 1024 ** 3  # table 6-4: a dataset file up to 5 GB
LOG_RETENTION_DAYS = 30          # table 6-4: without permanent logs, logs are cleaned after 30 days

INDEXES: list[IndexSpec] = [
    (JOBS, [("tenant_id", ASCENDING), ("created_at", DESCENDING)], {}),
    (JOBS, [("tenant_id", ASCENDING), ("output.model_name", ASCENDING)], {}),
    (JOBS, [("status", ASCENDING), ("run.lease_until", ASCENDING)], {}),
    (JOBS, [("output.weights_uri", ASCENDING)], {}),
    (LOGS, [("job_id", ASCENDING), ("seq", ASCENDING)], {"unique": True}),
    # Guide 6: logs are cleaned after 30 days (a job with permanent logs keeps its copy in object storage).
    (LOGS, [("at", ASCENDING)], {"expireAfterSeconds": LOG_RETENTION_DAYS * 86400}),
    (CONVERSIONS, [("job_id", ASCENDING), ("created_at", ASCENDING)], {}),
    (CONVERSIONS, [("weights_uri", ASCENDING)], {}),
]


def managed_root(tenant_id: str, job_id: str) -> ObjectPath:
    """The job's folder in the platform's own bucket: no tenant can read or write there."""
    return ObjectPath(MANAGED_BUCKET, f"{tenant_id}/{job_id}/")


class JobStatus(StrEnum):
    creating = "creating"     # 创建中: submitted or continued, not yet queued
    waiting = "waiting"       # 等待中: queued for a worker (also after an auto-restart)
    running = "running"       # 运行中
    stopped = "stopped"       # 已停止: by the user or auto-stop; can continue from the latest checkpoint
    completed = "completed"   # 已完成
    failed = "failed"         # 运行失败


class TuneType(StrEnum):
    full = "full"             # 全参微调
    lora = "lora"             # LoRA微调
    pretrain = "pretrain"     # 增量预训练


TUNE_TYPE_LABELS = {TuneType.full: "full-parameter tuning", TuneType.lora: "LoRA tuning",
                    TuneType.pretrain: "incremental pretraining"}

JobName = TaskName   # the guide's name rule for jobs and services: like model names, without '.'

# Flavors (规格): the card count feeds the duration estimate (table 6-5); training runs one
# data-parallel process per node on whatever accelerator or CPU the worker has.
FLAVORS: dict[str, tuple[int, str]] = {
    "cpu.1": (1, "CPU: 1*cpu"),
    "ascend.1": (1, "Ascend: 1*ascend-snt9b2(64GB)"),
    "ascend.2": (2, "Ascend: 2*ascend-snt9b2(64GB)"),
    "ascend.4": (4, "Ascend: 4*ascend-snt9b2(64GB)"),
    "ascend.8": (8, "Ascend: 8*ascend-snt9b2(64GB)"),
    "gpu.1": (1, "GPU: 1*gpu"),
    "gpu.8": (8, "GPU: 8*gpu"),
}


def node_resources(flavor: str) -> Resources:
    """What one node (rank) of a job of ``flavor`` takes from its pool: its cards (or one CPU) and a
    rank's memory (services.lib.pools.specs)."""
    return rank_resources(cards=FLAVORS[flavor][0], accelerated=not flavor.startswith("cpu."))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoStop(Strict):
    enabled: bool = False
    hours: float | None = Field(None, description="running time after which the job stops: 1, 2, 4, 6 or custom")

    @model_validator(mode="after")
    def _hours_when_enabled(self):
        if self.enabled and (self.hours is None or not 0 < self.hours <= 720):
            raise ValueError("auto_stop.hours must be in (0, 720] when auto_stop.enabled is true")
        return self


class AutoRestart(Strict):
    enabled: bool = False
    max_restarts: int = Field(3, description="1~128, default 3; cannot change after creation")
    unconditional: bool = Field(False, description="restart on any training error, at most 3 times in a row")

    @model_validator(mode="after")
    def _range(self):
        if not 1 <= self.max_restarts <= 128:
            raise ValueError(f"auto_restart.max_restarts must be between 1 and 128; got {self.max_restarts}")
        return self


def _learning_rate(value: float) -> float:
    if not 0 < value <= 0.1:
        raise ValueError(f"must be in (0, 0.1]; got {value}")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be an integer >= 1; got {value}")
    return value


LearningRate = Annotated[float, AfterValidator(_learning_rate)]
PositiveInt = Annotated[int, AfterValidator(_positive)]


class Hyperparameters(Strict):
    epochs: PositiveInt = Field(1, description="passes over the dataset; suggested 4~8 (hundreds), 2~4 (thousands)")
    learning_rate: LearningRate = Field(2e-5, description="(0, 0.1], default 0.00002")
    checkpoint_count: PositiveInt = Field(1, description="1 ~ min(iterations, 10)")
    global_batch_size: PositiveInt | None = Field(
        None, description="samples per iteration; default the template's (32, or 512 for -1K templates). Only "
                          "templates with a global_batch_size_range let a job choose another one")


class JobCreate(Strict):
    name: JobName
    description: limited_text(1000) = ""
    source: SourceModel
    tune_type: TuneType
    output_model_name: ResourceName
    output_model_description: Description100 = ""
    output_path: str | None = Field(None, description="bucket/folder for checkpoints and weights; a folder named "
                                                      "after the job id is created under it")
    dataset_format: Literal["moss", "alpaca", "sharegpt"] | None = Field(
        None, description="format of a .jsonl/.json file; csv/xlsx are converted per table 6-2")
    dataset_path: str = Field(description="bucket/path of the dataset file")
    sample_count: PositiveInt | None = Field(None, description="samples in the file; checked against it when given")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resource_pool: PoolChoice = "public"
    flavor: str = "cpu.1"
    node_count: PositiveInt = Field(1, description="> 1 starts data-parallel training over that many processes")
    permanent_log: PermanentLog = Field(default_factory=PermanentLog)
    notification: EventNotification = Field(default_factory=EventNotification)
    auto_stop: AutoStop = Field(default_factory=AutoStop)
    auto_restart: AutoRestart = Field(default_factory=AutoRestart)


class EstimateRequest(Strict):
    source: SourceModel
    tune_type: TuneType
    sample_count: PositiveInt
    epochs: PositiveInt = 1
    global_batch_size: PositiveInt | None = Field(None, description="as hyperparameters.global_batch_size of a job")
    flavor: str = "cpu.1"
    node_count: PositiveInt = 1


class ConversionCreate(Strict):
    target: Literal["new_model", "new_version"]
    model_name: ResourceName | None = Field(None, description="name of the new model (target new_model)")
    description: Description100 = ""
    validate_weights: bool = True

    @model_validator(mode="after")
    def _name_for_new_model(self):
        if self.target == "new_model" and not self.model_name:
            raise ValueError("model_name is required when target is 'new_model'")
        return self


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------

class CheckpointView(BaseModel):
    iteration: int
    format: str            # huggingface | lora (an adapter: converted by merging into the base)
    path: str              # the usable weights (HF folder or adapter)
    state_path: str        # optimizer / scheduler / RNG / data position, for resuming
    created_at: Timestamp


def job_view(doc: dict) -> dict:
    """The job as the API shows it, with its checkpoints."""
    view = resources.job_view(doc)
    view["checkpoints"] = [checkpoint_view(c) for c in doc.get("checkpoints", [])]
    return instants(view)


def checkpoint_view(c: dict) -> dict:
    return CheckpointView(iteration=c["iteration"], format=c["format"], path=c["uri"], state_path=c["state_uri"],
                          created_at=c["created_at"]).model_dump(mode="json")


def conversion_view(doc: dict) -> dict:
    view = {k: v for k, v in doc.items() if k not in ("_id", "tenant_id")}
    view["id"] = doc["_id"]
    return instants(view)
