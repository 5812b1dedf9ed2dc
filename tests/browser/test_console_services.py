"""Managing a running service from its console page: scale it, switch content moderation off (with the
guide's confirmation) and on, upgrade it to another version, connect it to Dify, stop and start it."""
from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.integration.test_serving_api import add_version, deploy, serving_tmp, settled, tiny_model  # noqa: F401

pytestmark = pytest.mark.integration


async def test_scale_switch_moderation_upgrade_connect_stop_and_start_a_service(console, api, serving_tmp):  # noqa: F811
    model = await tiny_model(api, serving_tmp, name="browser-manage")
    v2 = await add_version(api, serving_tmp, model, seed=1)
    service = await deploy(api, name="browser-manage-svc", model_id=model["id"], version=1)
    url = f"/api/v1/services/{service['id']}"
    page = console.page
    await console.goto(f"/console/services/{service['id']}")
    status = page.get_by_test_id("service-status")
    await expect(status.locator('[data-status="running"]')).to_be_visible(timeout=60_000)
    instances = page.locator(".kv-row").filter(has=page.locator("dt", has_text=re.compile(r"^Instances$")))
    await expect(instances.locator("dd")).to_have_text("1/1")

    # Scale: out of range is refused in the dialog, naming the field; 2 starts a second instance.
    await page.get_by_role("button", name="Scale").click()
    dialog = page.get_by_role("dialog")
    await dialog.locator("input").fill("17")
    await dialog.get_by_role("button", name="OK").click()
    await expect(dialog.locator(".field-error")).to_contain_text("16")
    await dialog.locator("input").fill("2")
    await dialog.get_by_role("button", name="OK").click()
    await expect(dialog).to_have_count(0)
    await expect(instances.locator("dd")).to_have_text("2/2", timeout=180_000)
    await console.shot("scaled-to-two")

    # Moderation: turning it off asks first; Cancel keeps it on, OK turns it off, and it turns on again.
    await page.get_by_role("button", name="Call", exact=True).click()
    call = page.get_by_role("dialog")
    switch = call.get_by_test_id("moderation-switch")
    await switch.click()
    confirm = page.get_by_role("dialog").filter(has_text="Turn off content moderation?")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_have_count(0)
    assert (await api.get(url)).json()["content_moderation"] is True
    await switch.click()
    await confirm.get_by_role("button", name="OK").click()
    await expect(confirm).to_have_count(0)
    await settled(api, url, lambda s: s["content_moderation"] is False, timeout=30)
    await switch.click()  # on again: no question asked
    await settled(api, url, lambda s: s["content_moderation"] is True, timeout=30)
    await page.keyboard.press("Escape")

    # Upgrade to V2: rolled out while the service keeps running.
    await page.get_by_role("button", name="Upgrade").click()
    dialog = page.get_by_role("dialog")
    submit = dialog.get_by_role("button", name="Submit")
    await expect(submit).to_be_disabled()  # no version chosen yet
    await dialog.locator("select").select_option(str(v2))
    await submit.click()
    await expect(dialog).to_have_count(0)
    await expect(page.get_by_role("link", name=f"browser-manage V{v2}")).to_be_visible(timeout=240_000)
    upgraded = await settled(api, url, lambda s: s["operation"] is None and s["version_number"] == v2, timeout=240)
    assert upgraded["status"] == "running" and upgraded["ready_instances"] == 2
    assert [i["version_id"] for i in upgraded["instances"]] == [upgraded["version_id"]] * 2  # the old ones stopped
    instance_rows = page.locator("table tbody tr")
    await expect(instance_rows).to_have_count(2)
    await expect(instance_rows.locator("td:nth-child(3)")).to_have_text([f"V{v2}", f"V{v2}"])
    await console.shot("upgraded")

    # The application center shows what Dify's OpenAI-API-compatible provider needs (guide table 12-2).
    await console.goto(f"/console/solutions?service={service['id']}")
    await expect(page.get_by_test_id("dify-model")).to_have_text("browser-manage-svc")
    await expect(page.get_by_test_id("dify-endpoint")).to_have_text(f"{console.base_url}/v1/infers/{service['id']}/v1")
    await expect(page.get_by_test_id("dify-settings")).to_contain_text("Tool Call")
    await console.shot("application-center")
    await page.get_by_test_id("service-picker").select_option("")
    await expect(page.get_by_test_id("dify-settings")).to_have_count(0)
    await console.goto(f"/console/services/{service['id']}")

    # Stop, then start again (the guide asks before starting: a running service is billed).
    await page.get_by_role("button", name="Stop", exact=True).click()
    await page.get_by_role("dialog").get_by_role("button", name="OK").click()
    await expect(status.locator('[data-status="stopped"]')).to_be_visible(timeout=120_000)
    await expect(page.get_by_role("button", name="Scale")).to_be_disabled()
    await page.get_by_role("button", name="Start", exact=True).click()
    start = page.get_by_role("dialog")
    await expect(start).to_contain_text("A running service is billed")
    await start.get_by_role("button", name="OK").click()
    await expect(status.locator('[data-status="running"]')).to_be_visible(timeout=240_000)
    await console.shot("started-again")

    assert (await api.delete(url)).status_code == 204
