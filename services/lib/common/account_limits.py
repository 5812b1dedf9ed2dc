"""Per-account caps on what a tenant can make the platform hold (buckets, stored bytes, models,
services, instances), so one team cannot exhaust a shared platform. Configurable with
``MAAS_LIMIT_*`` variables; a request past a cap is refused with 403 ``account_limit_reached``,
naming the cap, the current figure and the variable that raises it.
"""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.lib.common.errors import ApiError


class AccountLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_LIMIT_", extra="ignore")

    buckets: int = Field(20, ge=1, description="buckets per account, its default bucket included")
    stored_bytes: int = Field(200 * 1024 ** 3, ge=1, description="bytes in an account's buckets")
    object_bytes: int = Field(50 * 1024 ** 3, ge=1, description="largest single upload through the API")
    models: int = Field(100, ge=1, description="models per account")
    services: int = Field(20, ge=1, description="model services per account")
    instances: int = Field(20, ge=1, description="inference instances per account, over all its services")


@lru_cache
def account_limits() -> AccountLimits:
    return AccountLimits()


def env_name(cap: str) -> str:
    return f"MAAS_LIMIT_{cap.upper()}"


def refuse(cap: str, *, limit: int, current: int, wanted: int = 1, field: str | None = None) -> None:
    """Raise 403 unless ``current + wanted`` stays within ``limit``."""
    if current + wanted > limit:
        raise limit_reached(cap, limit=limit, current=current, wanted=wanted, field=field)


def limit_reached(cap: str, *, limit: int, current: int, wanted: int, field: str | None = None) -> ApiError:
    noun = cap.replace("_", " ")
    return ApiError(403, "account_limit_reached",
                    f"this account may hold at most {limit} {noun} and has {current}; this request needs "
                    f"{wanted} more (the platform operator sets {env_name(cap)})", field=field)
