"""Serving options (environment variables ``MAAS_SERVING_*``)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_SERVING_", extra="ignore")

    # Preset services start on their first call by default (a cold start of seconds to a minute):
    # an idle platform then holds no model in memory. True starts them as soon as their weights are in.
    preset_autostart: bool = False
    preset_qps_limit: int = Field(10, ge=1, description="per-user requests per second on a preset service")
    preset_instance_spec: str = "cpu.2u8g"
    sweep_seconds: float = Field(5.0, gt=0, description="how often auto-stop deadlines and presets are checked")


@lru_cache
def serving_settings() -> ServingSettings:
    return ServingSettings()
