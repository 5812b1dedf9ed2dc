"""One text form for every instant the API answers: RFC 3339, UTC, milliseconds, ``Z``.

``2026-12-07T03:04:36.299Z``, always 24 characters. pydantic alone writes ``...:36Z`` when the
microseconds are 0 and ``...:36.299000Z`` otherwise, and FastAPI's encoder ``...+00:00``: strings
of one list then do not sort as the instants do. Milliseconds because MongoDB keeps no more, so a
value reads back as it was written. Any RFC 3339 parser reads this form as before.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def rfc3339(value: datetime) -> str:
    """``value`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (naive values are UTC, as MongoDB returns them)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def to_millis(value: datetime) -> datetime:
    """``value`` cut to milliseconds: what MongoDB will store and read back."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def instants(value):
    """``value`` (a view: dicts, lists, scalars) with every datetime in it written by rfc3339()."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {key: instants(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [instants(item) for item in value]
    return value


# A datetime field of an API answer. Input is any datetime pydantic accepts; JSON output is rfc3339().
Timestamp = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]

__all__ = ["RFC3339_MS", "Timestamp", "instants", "rfc3339", "to_millis"]
