"""Recent traces of this process, for the console when no Tempo/Grafana runs (embedded default)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.lib.common.auth import Principal
from services.lib.common.errors import ApiError, not_found
from services.lib.common.telemetry_export import RECENT_SPANS
from services.lib.iam.authorize import Authorized

router = APIRouter(prefix="/api/v1", tags=["observability"])


def _admin_only(principal) -> None:
    # Spans carry ids and routes of every tenant.
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "traces are visible to administrators only")


@router.get("/traces/recent", summary="The latest traces recorded by this process, newest first")
async def recent_traces(principal: Principal = Authorized("maas:traces:list"),
                        limit: Annotated[int, Query(ge=1, le=500)] = 50):
    _admin_only(principal)
    items = RECENT_SPANS.traces(limit=limit)
    return {"total": len(items), "items": items}


@router.get("/traces/{trace_id}", summary="Every recorded span of one trace, in start order")
async def get_trace(trace_id: str, principal: Principal = Authorized("maas:traces:get")):
    _admin_only(principal)
    spans = RECENT_SPANS.trace(trace_id.lower())
    if not spans:
        raise not_found("trace", trace_id)
    return {"trace_id": trace_id.lower(), "spans": spans}
