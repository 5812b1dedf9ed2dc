"""Fine-tuning events (guide chapter 6). Owned by the tuning service; versioned like every contract."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import EventData

TUNING_TOPIC = "tuning.events"


class TuneRequested(EventData):
    """A job wants a worker: submitted, continued after a stop, or restarted after a failure.

    Workers treat it as a wake-up call: the job document is the truth, and a worker claims it
    atomically, so a duplicate or stale request is harmless.
    """
    type = "TuneRequested"
    topic = TUNING_TOPIC
    job_id: str
    reason: Literal["submitted", "continued", "restarted"] = "submitted"
    restart_count: int = 0


class TuneStarted(EventData):
    type = "TuneStarted"
    topic = TUNING_TOPIC
    job_id: str
    run_id: str = Field(description="one per claim; a restarted or continued job gets a new one")
    worker_id: str
    resume_from_iteration: int = Field(0, description="0: from scratch; else the checkpoint it continues from")
    total_iterations: int


class TuneProgress(EventData):
    type = "TuneProgress"
    topic = TUNING_TOPIC
    job_id: str
    iteration: int
    total_iterations: int
    lm_loss: float | None = None
    tokens_per_sec_per_card: float | None = None


class CheckpointSaved(EventData):
    type = "CheckpointSaved"
    topic = TUNING_TOPIC
    job_id: str
    iteration: int
    uri: str = Field(description="s3://bucket/prefix/ of the checkpoint folder")
    format: Literal["huggingface", "lora"] = Field(description="lora: an adapter that must be merged first")


class TuneCompleted(EventData):
    type = "TuneCompleted"
    topic = TUNING_TOPIC
    job_id: str
    iterations: int
    final_loss: float | None = None
    weights_uri: str = Field(description="s3://bucket/prefix/ of the resulting HF folder")
    output_model_name: str


class TuneFailed(EventData):
    type = "TuneFailed"
    topic = TUNING_TOPIC
    job_id: str
    message: str
    restart_count: int = 0
    will_restart: bool = Field(False, description="true when auto-restart re-queues the job")


class TuneStopped(EventData):
    type = "TuneStopped"
    topic = TUNING_TOPIC
    job_id: str
    reason: Literal["user", "auto_stop"] = "user"
    iteration: int = 0


class TuneDeleted(EventData):
    type = "TuneDeleted"
    topic = TUNING_TOPIC
    job_id: str
    name: str = ""


class TuneHangSuspected(EventData):
    """A running job's worker is alive (lease renewed) but no iteration finished for a long time (疑似卡死)."""
    type = "TuneHangSuspected"
    topic = TUNING_TOPIC
    job_id: str
    iteration: int = 0
    idle_seconds: float = 0.0


class CheckpointConversionRequested(EventData):
    """Turn a checkpoint into a model: merge a LoRA adapter (weight format conversion), then register it."""
    type = "CheckpointConversionRequested"
    topic = TUNING_TOPIC
    conversion_id: str
    job_id: str
    iteration: int
