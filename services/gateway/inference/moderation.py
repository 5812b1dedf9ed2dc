"""Content moderation (内容审核) of inputs and outputs, on by default for every service.

``ContentChecker`` is the plug-in point: anything with ``check(text) -> Verdict``. The built-in
``BlocklistChecker`` matches configured terms (shipped defaults, the environment, and the list
admins edit through the API) case-insensitively. A blocked input is answered with 400
(code ``content_filter``) and never reaches the model; a blocked output is withheld the same way,
or, mid-stream, ends the stream with ``finish_reason: "content_filter"``.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_component, get_platform
from services.lib.common.errors import ApiError
from services.gateway.settings import gateway_settings
from services.gateway.views import ReadThroughView
from services.lib.iam.authorize import Authorized

MODERATION = "moderation_settings"
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    reason: str | None = None


class ContentChecker(Protocol):
    """A moderation plug-in. ``window``: how many trailing characters of a streamed answer must be
    re-checked with each new piece (the longest pattern it can match)."""
    window: int

    def check(self, text: str) -> Verdict: ...


def normalize(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).casefold()


class BlocklistChecker:
    def __init__(self, terms: list[str]):
        self.terms = sorted({normalize(t).strip() for t in terms if t.strip()})
        self.window = max((len(t) for t in self.terms), default=0)

    def check(self, text: str) -> Verdict:
        if not self.terms:
            return Verdict(False)
        folded = normalize(text)
        for term in self.terms:
            if term in folded:
                return Verdict(True, f"matched the blocklist term '{term}'")
        return Verdict(False)


def default_terms() -> list[str]:
    text = resources.files(__package__).joinpath("moderation_blocklist.txt").read_text(encoding="utf-8")
    extra = gateway_settings().moderation_blocklist.split(",")
    return [line.strip() for line in text.splitlines() + extra if line.strip() and not line.startswith("#")]


class Moderation:
    """The configured checker, at most ``moderation_cache_seconds`` old (services.gateway.views)."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.view = ReadThroughView(max_age=gateway_settings().moderation_cache_seconds)

    async def checker(self) -> ContentChecker:
        return await self.view.get("blocklist", self._load)

    async def _load(self) -> ContentChecker:
        doc = await self.platform.mongo[MODERATION].find_one({"_id": "blocklist"}) or {}
        return BlocklistChecker(default_terms() + list(doc.get("terms", [])))

    def invalidate(self) -> None:
        self.view.forget("blocklist")


def message_text(messages: list) -> str:
    """All text a request sends: every message's content (string or text parts)."""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/v1/moderation", tags=["moderation"])


class BlocklistUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    terms: list[str] = Field(max_length=10_000, description="blocked terms (case-insensitive, matched anywhere)")


def _admins_only(principal: Principal) -> None:
    # The terms are the platform's policy, and knowing them is knowing how to word around them.
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "the moderation blocklist can be read and changed by platform "
                                         "administrators only")


@router.get("/blocklist", summary="The blocked terms of content moderation (admins only)")
async def get_blocklist(principal: Principal = Authorized("maas:moderation:getBlocklist"),
                        platform: Platform = Depends(get_platform)):
    _admins_only(principal)
    doc = await platform.mongo[MODERATION].find_one({"_id": "blocklist"}) or {}
    return {"terms": doc.get("terms", []), "default_terms": default_terms()}


@router.put("/blocklist", summary="Replace the admin-managed blocked terms (admins only)")
async def put_blocklist(body: BlocklistUpdate, principal: Principal = Authorized("maas:moderation:updateBlocklist"),
                        platform: Platform = Depends(get_platform), gateway=Depends(get_component("gateway"))):
    _admins_only(principal)
    terms = [t.strip() for t in body.terms if t.strip()]
    if any(len(t) > 200 for t in terms):
        raise ApiError(400, "invalid_parameter", "terms: each term must be at most 200 characters", field="terms")
    async with platform.uow() as uow:   # with the request's audit record
        await uow.collection(MODERATION).update_one({"_id": "blocklist"}, {"$set": {"terms": terms}}, upsert=True,
                                                    session=uow.session)
    gateway.moderation.invalidate()   # this process's filter; others see the change within its max_age
    return {"terms": terms}
