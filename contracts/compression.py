"""Model compression events (guide chapter 7). Owned by the compression service; versioned like every contract.

Flow: the API records a job (status ``pending``) and emits ``CompressionRequested``; a worker claims
the job atomically (the job document is the truth, the event only wakes workers), emits
``CompressionStarted``, then ``CompressionCompleted`` (and ``ModelArtifactProduced`` for the registry)
or ``CompressionFailed``. ``CompressionStopped`` when the user stops a pending or running job (its
worker ends the run; nothing more is recorded); continuing it emits ``CompressionRequested`` with
reason ``continued`` and the job runs again from the beginning. ``CompressionDeleted`` when the user
deletes the job.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from contracts.envelope import EventData

COMPRESSION_TOPIC = "compression.events"

Strategy = Literal["smoothquant-w8a8", "awq-w4a16"]


class CompressionRequested(EventData):
    """A job wants a worker: submitted, continued after a stop, or re-queued after its worker vanished."""
    type = "CompressionRequested"
    topic = COMPRESSION_TOPIC
    job_id: str
    strategy: Strategy
    reason: Literal["submitted", "restarted", "continued"] = "submitted"
    attempt: int = 1


class CompressionStarted(EventData):
    type = "CompressionStarted"
    topic = COMPRESSION_TOPIC
    job_id: str
    worker_id: str
    attempt: int = 1


class CompressionMetrics(BaseModel):
    """What every job reports: size and held-out perplexity before/after, and how long it took."""
    size_before_bytes: int
    size_after_bytes: int
    size_ratio: float
    perplexity_before: float
    perplexity_after: float
    perplexity_ratio: float
    duration_seconds: float


class CompressionCompleted(EventData):
    type = "CompressionCompleted"
    topic = COMPRESSION_TOPIC
    job_id: str
    strategy: Strategy
    weights_uri: str = Field(description="s3://bucket/prefix/ of the quantized ONNX folder")
    output_model_name: str
    metrics: CompressionMetrics


class CompressionFailed(EventData):
    type = "CompressionFailed"
    topic = COMPRESSION_TOPIC
    job_id: str
    message: str = Field(description="why, in words the console shows")
    attempt: int = 1


class CompressionStopped(EventData):
    """The user stopped the job; a running compression is ended (it has no checkpoints to keep)."""
    type = "CompressionStopped"
    topic = COMPRESSION_TOPIC
    job_id: str
    reason: Literal["user"] = "user"


class CompressionDeleted(EventData):
    type = "CompressionDeleted"
    topic = COMPRESSION_TOPIC
    job_id: str
    name: str = ""
