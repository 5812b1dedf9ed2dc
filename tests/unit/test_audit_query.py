"""Who reads which audit records, the filters, and CSV a spreadsheet cannot be tricked by
(mongomock runs the filters; tests/integration/test_audit_log.py reads through the API)."""
from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from mongomock_motor import AsyncMongoMockClient

from contracts.timestamps import rfc3339
from services.lib.common.auth import Principal
from services.lib.common.errors import ApiError
from services.gateway.accounts.audit_api import CSV_COLUMNS, audit_query, csv_line, record_view

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PLATFORM_ADMIN = Principal(user_id="root", tenant_id="t-root", username="admin", role="admin")
ALICE = Principal(user_id="u-a", tenant_id="t-a", username="alice", role="user")


def rec(i: int, *, tenant="t-a", user="u-a", username="alice", action="maas:models:create",
        resource="/api/v1/models", days_ago: float = 0) -> dict:
    return {"_id": f"r{i}", "at": NOW - timedelta(days=days_ago), "tenant_id": tenant, "user_id": user,
            "username": username, "action": action, "resource": resource, "method": "POST", "status": 201,
            "client": "10.0.0.1"}


@pytest.fixture
async def records():
    collection = AsyncMongoMockClient(tz_aware=True)["maas"]["audit_log"]
    await collection.insert_many([
        rec(1), rec(2, action="maas:models:delete", resource="/api/v1/models/m1"),
        rec(3, action="maas:services:scale", resource="/api/v1/services/s1/instance-count", days_ago=2),
        rec(4, tenant="t-b", user="u-b", username="bob"),
        rec(5, days_ago=200),                                    # past the retention
        rec(6, tenant=None, user=None, username="nobody", action="maas:auth:login", resource="/api/v1/auth/login"),
    ])
    return collection


async def ids(collection, **kwargs) -> set[str]:
    query = audit_query(retention_days=180, now=NOW, **kwargs)
    return {d["_id"] async for d in collection.find(query)}


async def test_an_account_reads_only_its_own_records(records):
    assert await ids(records, principal=ALICE) == {"r1", "r2", "r3"}
    assert await ids(records, principal=ALICE, account="t-a") == {"r1", "r2", "r3"}
    with pytest.raises(ApiError) as raised:
        audit_query(principal=ALICE, retention_days=180, account="t-b")
    assert raised.value.status == 403 and raised.value.field == "account"


async def test_the_platform_admin_reads_every_account_or_one(records):
    assert await ids(records, principal=PLATFORM_ADMIN) == {"r1", "r2", "r3", "r4", "r6"}
    assert await ids(records, principal=PLATFORM_ADMIN, account="t-b") == {"r4"}


async def test_filters_by_user_action_resource_and_time(records):
    assert await ids(records, principal=PLATFORM_ADMIN, user="bob") == {"r4"}
    assert await ids(records, principal=PLATFORM_ADMIN, user="u-b") == {"r4"}
    assert await ids(records, principal=ALICE, action="maas:models:delete") == {"r2"}
    assert await ids(records, principal=ALICE, action="maas:models:*") == {"r1", "r2"}
    assert await ids(records, principal=ALICE, action="maas:models") == set()   # exact unless it ends in '*'
    assert await ids(records, principal=ALICE, resource="/api/v1/models") == {"r1", "r2"}
    assert await ids(records, principal=ALICE, resource="/api/v1/models/m1") == {"r2"}
    assert await ids(records, principal=ALICE, resource="/api/v1/m.dels") == set()   # no regex from users
    assert await ids(records, principal=ALICE, since=NOW - timedelta(days=3), until=NOW - timedelta(days=1)) == {"r3"}
    naive = (NOW - timedelta(days=1)).replace(tzinfo=None)   # a query string without a zone: UTC
    assert await ids(records, principal=ALICE, since=naive) == {"r1", "r2"}


def test_an_empty_time_range_names_the_field():
    with pytest.raises(ApiError) as raised:
        audit_query(principal=ALICE, retention_days=180, since=NOW, until=NOW)
    assert raised.value.status == 400 and raised.value.field == "since"


def test_csv_cells_a_spreadsheet_would_run_are_quoted_as_text():
    doc = rec(7, username='=HYPERLINK("http://evil")', resource="/api/v1/auth/login")
    view = record_view(doc)
    row = next(csv.reader(io.StringIO(csv_line(view[c] for c in CSV_COLUMNS))))
    assert row[CSV_COLUMNS.index("username")] == "'=HYPERLINK(\"http://evil\")"
    assert row[CSV_COLUMNS.index("at")] == rfc3339(NOW) and row[CSV_COLUMNS.index("status")] == "201"
    assert row[CSV_COLUMNS.index("account_id")] == "t-a"
