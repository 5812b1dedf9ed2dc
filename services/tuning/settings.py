"""Tuning knobs (env prefix ``MAAS_TUNING_``): leases, polling, worker capacity.

Read when a worker or watchdog starts, so a process started with other values (e.g. a short lease
for a test worker) uses its own.
"""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TuningSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_TUNING_", extra="ignore")

    lease_seconds: float = Field(30.0, gt=0, description="a job whose worker misses heartbeats this long is "
                                                          "considered dead and re-queued (auto-restart) or failed")
    heartbeat_seconds: float = Field(2.0, gt=0, description="how often a worker renews its lease and checks "
                                                            "for stop / delete / auto-stop")
    watchdog_seconds: float = Field(3.0, gt=0, description="how often the tuning service looks for expired leases")
    poll_seconds: float = Field(5.0, gt=0, description="how often an idle worker looks for queued jobs "
                                                       "(besides the Kafka wake-up)")
    hang_seconds: float = Field(1800.0, gt=0, description="a running job with a live worker but no finished "
                                                          "iteration for this long is reported as suspected hung")
    shutdown_grace_seconds: float = Field(60.0, ge=0, description="on shutdown, how long running jobs get to "
                                                                  "stop at a checkpoint and go back to the queue")
    slots: int = Field(1, ge=1, description="jobs one worker process trains at a time")
    log_flush_seconds: float = Field(1.0, gt=0)
    progress_event_seconds: float = Field(10.0, gt=0, description="at most one TuneProgress event per interval")
    num_threads: int | None = Field(None, ge=1, description="torch threads per training (default: torch's)")
