"""Browser journey: notification topics and webhook subscriptions (confirmed before they get anything)."""
from __future__ import annotations

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.integration


async def test_create_a_topic_subscribe_a_webhook_and_delete_the_topic(console, api, running_platform, monkeypatch):
    # The endpoint below is on 127.0.0.1: opt in to private webhook targets, as an operator would.
    monkeypatch.setattr(running_platform["platform"].settings, "webhook_allow_private", True)
    page = console.page
    await console.goto("/console/notifications")
    await page.get_by_role("button", name="Create topic").click()
    dialog = page.get_by_role("dialog")
    await dialog.locator("input").fill("9-bad-topic")
    await dialog.get_by_role("button", name="OK").click()
    await expect(dialog.locator(".field-error")).to_contain_text("starting with a letter")
    await dialog.locator("input").first.fill("browser-topic")
    await dialog.get_by_role("button", name="OK").click()
    await expect(page.locator("table")).to_contain_text("browser-topic")

    await page.get_by_role("tab", name="Subscriptions").click()
    await page.get_by_role("button", name="Add subscription").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_placeholder("https://example.com/hooks/maas").fill("http://127.0.0.1:9/hooks/maas")
    await dialog.get_by_role("button", name="OK").click()
    await expect(dialog).to_contain_text("confirmation request")
    await console.shot("subscription-created")
    await dialog.locator(".modal-foot").get_by_role("button", name="Close").click()
    row = page.locator("tr", has_text="http://127.0.0.1:9/hooks/maas")
    await expect(row.locator('[data-status="unconfirmed"]')).to_be_visible()
    await console.shot("subscriptions")
    subs = (await api.get("/api/v1/notification-subscriptions", params={"topic": "browser-topic"})).json()
    assert [s["status"] for s in subs["items"]] == ["unconfirmed"]

    await page.get_by_role("tab", name="Topics").click()
    await page.locator("tr", has_text="browser-topic").get_by_role("button", name="Delete").click()
    await page.get_by_placeholder("DELETE").fill("DELETE")
    await page.get_by_test_id("confirm-delete").click()
    await expect(page.locator("tr", has_text="browser-topic")).to_have_count(0)
    assert (await api.get("/api/v1/notification-topics/browser-topic")).status_code == 404
