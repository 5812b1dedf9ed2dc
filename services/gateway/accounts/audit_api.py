"""Reading the audit log (services/lib/common/audit.py writes it): a filtered, paged list and CSV.

An account's records are its own: everyone but the platform administrator reads only their account's
(who within an account may read them is the authorization's to decide); the platform administrator
reads every account's, or one (``account``). Newest first. Records older than the retention are
left out even where the database has not deleted them yet.
"""
from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pymongo import DESCENDING

from contracts.timestamps import rfc3339
from services.lib.common.audit import AUDIT
from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.errors import ApiError, bad_request
from services.lib.common.paging import Offset
from services.lib.iam.authorize import Authorized

EXPORT_MAX_ROWS = 100_000
CSV_COLUMNS = ("at", "account_id", "user_id", "username", "action", "resource", "method", "status", "client", "id")


def is_platform_admin(principal: Principal) -> bool:
    return principal.role == "admin"


def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)   # a time without a zone in a query string: UTC
    return value


def _prefix(text: str) -> dict:
    """Strings that start with ``text``: a range of the index, not a regex built from user input
    (nothing to escape, and no cap on a pattern's length)."""
    return {"$gte": text, "$lt": text + "\U0010ffff"}


def audit_query(*, principal: Principal, retention_days: int, account: str | None = None, user: str | None = None,
                action: str | None = None, resource: str | None = None, since: datetime | None = None,
                until: datetime | None = None, now: datetime | None = None) -> dict:
    """The MongoDB filter of a reader's query: always within what they may see."""
    since, until = _as_utc(since), _as_utc(until)
    if since is not None and until is not None and since >= until:
        raise bad_request("since must be before until", field="since")
    query: dict = {}
    if is_platform_admin(principal):
        if account:
            query["tenant_id"] = account
    else:
        if account and account != principal.tenant_id:
            raise ApiError(403, "forbidden", "only the platform administrator reads other accounts' audit records",
                           field="account")
        query["tenant_id"] = principal.tenant_id
    if user:
        query["$or"] = [{"user_id": user}, {"username": user}]
    if action:
        # "maas:models:*" (a trailing '*') matches every action that starts with what precedes it.
        query["action"] = _prefix(action[:-1]) if action.endswith("*") else action
    if resource:
        query["resource"] = _prefix(resource)   # a resource and everything under it
    oldest = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    at: dict = {"$gte": max(since, oldest) if since else oldest}
    if until is not None:
        at["$lt"] = until
    query["at"] = at
    return query


def record_view(doc: dict) -> dict:
    return {"id": doc["_id"], "at": rfc3339(doc["at"]), "account_id": doc.get("tenant_id"), "user_id": doc.get("user_id"),
            "username": doc.get("username"), "action": doc.get("action"), "resource": doc.get("resource"),
            "method": doc.get("method"), "status": doc.get("status"), "client": doc.get("client")}


def _cell(value) -> str:
    if value is None:
        return ""
    text = rfc3339(value) if isinstance(value, datetime) else str(value)
    # A spreadsheet runs a cell that starts with one of these as a formula; a username tried at login
    # is anyone's text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_line(values) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([_cell(v) for v in values])
    return out.getvalue()


async def _csv_rows(cursor) -> AsyncIterator[str]:
    yield csv_line(CSV_COLUMNS)
    async for doc in cursor:
        view = record_view(doc)
        yield csv_line(view[c] for c in CSV_COLUMNS)


def _csv_response(cursor, *, name: str) -> StreamingResponse:
    return StreamingResponse(_csv_rows(cursor), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _export_name() -> str:
    return f"audit-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.csv"


@dataclass(frozen=True)
class AuditFilters:
    user: str | None = None
    action: str | None = None
    resource: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    account: str | None = None

    def query(self, platform: Platform, principal: Principal) -> dict:
        return audit_query(principal=principal, retention_days=platform.settings.audit_retention_days,
                           account=self.account, user=self.user, action=self.action, resource=self.resource,
                           since=self.since, until=self.until)


async def audit_filters(
        user: Annotated[str | None, Query(max_length=128, description="a user id or username")] = None,
        action: Annotated[str | None, Query(max_length=128, description=(
            "an action, e.g. maas:models:create, or a prefix ending in '*' (maas:models:*)"))] = None,
        resource: Annotated[str | None, Query(max_length=1024, description=(
            "a path; records of it and of everything under it"))] = None,
        since: Annotated[datetime | None, Query(description="from this time (ISO 8601; UTC without a zone)")] = None,
        until: Annotated[datetime | None, Query(description="before this time")] = None,
        account: Annotated[str | None, Query(max_length=64, description=(
            "an account id (the platform administrator; others read their own account only)"))] = None,
) -> AuditFilters:
    """The query parameters every audit read takes (async: no thread-pool hop)."""
    return AuditFilters(user=user, action=action, resource=resource, since=since, until=until, account=account)


router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

CSV_RESPONSE = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                      "description": "The records (JSON, or CSV with ?format=csv)"}}


@router.get("", summary="The audit log: who changed what, when, from where, and the result",
            responses=CSV_RESPONSE)
async def list_records(filters: Annotated[AuditFilters, Depends(audit_filters)],
                       principal: Principal = Authorized("maas:audit:list"), offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                       format: Annotated[Literal["json", "csv"], Query(description="csv: this page as CSV")] = "json",
                       platform: Platform = Depends(get_platform)):
    query = filters.query(platform, principal)
    cursor = platform.mongo[AUDIT].find(query).sort("at", DESCENDING).skip(offset).limit(limit)
    if format == "csv":
        return _csv_response(cursor, name=_export_name())
    total = await platform.mongo[AUDIT].count_documents(query)
    return {"total": total, "items": [record_view(d) async for d in cursor]}


@router.get("/export", summary=f"Every matching audit record as CSV (newest first, at most {EXPORT_MAX_ROWS})",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}})
async def export_records(filters: Annotated[AuditFilters, Depends(audit_filters)],
                         principal: Principal = Authorized("maas:audit:export"),
                         platform: Platform = Depends(get_platform)):
    query = filters.query(platform, principal)
    cursor = platform.mongo[AUDIT].find(query).sort("at", DESCENDING).limit(EXPORT_MAX_ROWS)
    return _csv_response(cursor, name=_export_name())
