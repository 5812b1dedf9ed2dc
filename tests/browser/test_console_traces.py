"""Browser journey: an administrator finds a request's trace and its spans on the traces page."""
from __future__ import annotations

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.integration


async def test_recent_traces_list_a_request_and_open_its_spans(console, api):
    assert (await api.get("/api/v1/templates", params={"task": "lora"})).status_code == 200
    page = console.page
    await console.goto("/console/traces")
    row = page.get_by_test_id("traces-table").locator("tr", has_text="GET /api/v1/templates").first
    await expect(row).to_be_visible(timeout=20_000)
    await row.get_by_role("button").click()
    spans = page.get_by_test_id("trace-spans")
    await expect(spans).to_contain_text("GET /api/v1/templates")
    await expect(spans).to_contain_text("SERVER")
    await console.shot("trace-spans")
    # The console's own static files are not traced: they would crowd out the requests that matter.
    assert await page.get_by_test_id("traces-table").locator("tr", has_text="/console/assets/").count() == 0
