"""Gateway options for the OpenAI-compatible API (environment variables ``MAAS_GATEWAY_*``)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_GATEWAY_", extra="ignore")

    routing_refresh_seconds: float = Field(0.5, gt=0, description="how stale the service/instance view may be")
    key_cache_seconds: float = Field(1.0, ge=0, description=(
        "how stale an API key's view (its owner's status and policies included) may be on a gateway that did "
        "not make the change itself: a disabled user's keys are refused within this long everywhere"))
    upstream_connect_timeout: float = Field(5.0, gt=0)
    upstream_read_timeout: float = Field(600.0, gt=0, description="longest silence from an instance mid-answer")
    preset_wake_timeout_seconds: float = Field(180.0, gt=0, description="how long a first call waits for a preset")
    free_quota_tokens: int = Field(1_000_000, ge=0, description="guide 9: free tokens per preset service per user")
    quota_chunk_tokens: int = Field(8192, ge=0, description="free-quota tokens a gateway reserves ahead, so that "
                                    "most calls reserve without a database write (0: exactly per call)")
    quota_lease_seconds: float = Field(30.0, ge=5, description="how long a gateway's free-quota reservation "
                                       "outlives it if it crashes")
    quota_idle_release_seconds: float = Field(10.0, gt=0, description="a gateway gives back its reserved "
                                              "free-quota tokens after this long without a call")
    max_api_keys: int = Field(5, ge=1, description="guide 11: at most 5 API keys per user")
    # Failed logins (services/gateway/accounts/login_throttle.py): past the free ones, each failure blocks the
    # username (or client address) for twice as long as the one before, up to the maximum.
    login_free_failures_per_user: int = Field(5, ge=1, description="failed logins of one username before it waits")
    login_free_failures_per_client: int = Field(30, ge=1, description=(
        "failed logins from one client address (any usernames) before it waits; higher: offices share an address"))
    login_backoff_base_seconds: float = Field(1.0, gt=0, description="the first wait; doubles with each failure")
    login_backoff_max_seconds: float = Field(900.0, gt=0, description="the longest wait")
    login_failure_window_seconds: float = Field(900.0, gt=0, description=(
        "failures are forgotten this long after the last one (at least the longest wait)"))
    usage_flush_seconds: float = Field(1.0, gt=0)
    moderation_blocklist: str = Field("", description="extra blocked terms, comma separated")
    moderation_cache_seconds: float = Field(5.0, ge=0)
    telemetry_capture_content: bool = Field(False, description=(
        "put the messages and answers of chat calls on their traces (gen_ai.input.messages, "
        "gen_ai.output.messages); off by default: prompts are the callers' data and traces are not tenant-scoped"))


@lru_cache
def gateway_settings() -> GatewaySettings:
    return GatewaySettings()
