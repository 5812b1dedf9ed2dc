"""The ``offset`` query parameter of every list: bounded, so a huge number is a clear 400.

MongoDB's skip is a 64-bit integer; an offset past it made the driver fail (a 500). No list of
ours comes near a billion items, so anything larger is a mistake worth naming.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_OFFSET = 1_000_000_000

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
