"""API keys: who is calling (a key's caller, with the key's limits) and the request bodies."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from services.lib.common.validation import limited_text
from services.lib.iam.evaluator import Grant


@dataclass(frozen=True)
class Caller:
    """Who is calling the OpenAI API: the key's owner (key_id 'playground' for console chats), with
    the key's own limits (none for the playground)."""
    user_id: str
    tenant_id: str
    username: str
    role: str
    key_id: str
    expires_at: datetime | None = None
    allowed_models: frozenset[str] | None = None   # service names or ids; None: every service
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    # The owner's standing, read with the key (and as fresh: MAAS_GATEWAY_KEY_CACHE_SECONDS): a
    # disabled owner's keys are refused, and the owner's policies must allow the route's action.
    account_role: str = "admin"
    active: bool = True
    grant: Grant | None = None      # None: the playground, authorized as a console call already

    def may_call(self, service) -> bool:
        return self.allowed_models is None or service.name in self.allowed_models or service.id in self.allowed_models



ModelRef = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
MAX_ALLOWED_MODELS = 100


def _future(value: datetime | None) -> datetime | None:
    if value is not None and value <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return value


class KeyLimitsFields(BaseModel):
    """What a key may do; every field optional (none: no limit)."""
    expires_at: Annotated[AwareDatetime | None, AfterValidator(_future)] = Field(
        None, description="when the key stops working (ISO 8601 with a time zone); none: never")
    allowed_models: list[ModelRef] | None = Field(
        None, min_length=1, max_length=MAX_ALLOWED_MODELS,
        description="the services the key may call, by name (the `model` of a call) or id; none: every one")
    rpm_limit: int | None = Field(None, ge=1, le=1_000_000, description="requests per minute")
    tpm_limit: int | None = Field(None, ge=1, le=1_000_000_000, description="tokens (prompt + completion) per minute")


class KeyCreate(KeyLimitsFields):
    model_config = ConfigDict(extra="forbid")
    description: limited_text(256) = ""


class KeyUpdate(KeyLimitsFields):
    """The fields given are changed (null removes a limit); those left out stay as they are."""
    model_config = ConfigDict(extra="forbid")
    description: limited_text(256) | None = None

