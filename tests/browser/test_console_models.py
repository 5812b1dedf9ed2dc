"""Browser journeys: log in, browse the model square, create a model from uploaded weights, delete it."""
from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from services.lib.mlkit.tiny import build_tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("browser") / "tiny-model")


async def test_log_in_with_the_form_and_out_again(browser, running_platform):
    admin = running_platform["admin"]
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(running_platform["url"] + "/")
        await expect(page).to_have_url(re.compile(r"/console/login"))
        # Arriving through a redirect leaves no boot placeholder above the login card (nor later).
        await expect(page.locator("input[name=username]")).to_be_visible()
        await expect(page.locator(".boot")).to_have_count(0)
        await page.fill("input[name=username]", admin.username)
        await page.fill("input[name=password]", "wrong-password")
        await page.click("button[type=submit]")
        await expect(page.locator(".error-box")).to_contain_text("wrong username or password")
        await page.fill("input[name=password]", admin.password)
        await page.click("button[type=submit]")
        await expect(page).to_have_url(re.compile(r"/console/square$"))
        await expect(page.get_by_test_id("current-user")).to_have_text(admin.username)
        await expect(page.locator(".boot")).to_have_count(0)
        assert await page.evaluate("localStorage.getItem('maas.token')")
        await page.screenshot(path=str(_shot("login-done")), full_page=False)
        await page.get_by_role("button", name="Log out").click()
        await expect(page).to_have_url(re.compile(r"/console/login"))
        assert await page.evaluate("localStorage.getItem('maas.token')") is None
    finally:
        await context.close()


async def model_named(api, name: str) -> bool:
    listed = (await api.get("/api/v1/models", params={"name": name})).json()["items"]  # a substring search
    return any(m["name"] == name for m in listed)


def _shot(step: str):
    from tests.browser.conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"login-{step}.png"


async def test_model_square_cards_filters_and_greyed_buttons(console):
    page = console.page
    await console.goto("/console/square")
    cards = page.locator(".tpl-card")
    await expect(cards.first).to_be_visible()
    total = await cards.count()
    assert total > 20
    await page.select_option("select[aria-label=task]", "compress")
    await expect(page.locator('.tpl-card[data-template="baichuan2-7b"]')).to_have_count(0)
    assert 0 < await cards.count() < total
    await console.shot("square-compressible")

    # A deploy-only template: tune and compress are greyed out, deploy is not.
    await console.goto("/console/square/baichuan2-7b")
    await expect(page.locator("button[data-action=tune]")).to_be_disabled()
    await expect(page.locator("button[data-action=compress]")).to_be_disabled()
    await expect(page.locator("button[data-action=deploy]")).to_be_enabled()
    await console.shot("deploy-only-template")
    # Chinese UI: the guide's wording.
    await page.get_by_role("button", name="中文").click()
    await expect(page.locator("button[data-action=tune]")).to_have_text("调优")
    await expect(page.locator(".nav-item.active")).to_have_text(re.compile("模型广场"))
    await console.shot("deploy-only-template-zh")
    await page.get_by_role("button", name="EN").click()


async def test_create_a_model_from_an_uploaded_folder_then_delete_it(console, tiny_folder, api):
    page = console.page
    await console.goto("/console/models/create?template=qwen2-custom")
    form = page.get_by_test_id("model-create-form")
    await expect(form.locator("select[name=template_id]")).to_have_value("qwen2-custom")

    # Validation feedback before anything is sent: the name rule and the missing folder.
    await form.locator("input[name=name]").fill("1-not-a-name")
    await form.get_by_role("button", name="Create").click()
    await expect(form.locator('[data-field="name"] .field-error')).to_contain_text("starting with a letter")
    await expect(form.locator('[data-field="weights_path"] .field-error')).to_contain_text("No files chosen")
    await console.shot("create-validation")
    assert not await model_named(api, "browser-tiny")

    await form.locator("input[name=name]").fill("browser-tiny")
    await form.get_by_test_id("weights-folder").set_input_files(tiny_folder)
    await expect(form.locator('[data-field="weights_path"] .hint')).to_contain_text("config.json")
    await form.get_by_role("button", name="Create").click()
    await expect(page).to_have_url(re.compile(r"/console/models/[0-9a-f]{32}$"), timeout=60_000)
    await console.shot("model-creating")
    await expect(page.locator('[data-testid=model-status] [data-status="created"]')).to_be_visible(timeout=120_000)
    await console.shot("model-created")

    # The version's task records show the weight validation that ran.
    await page.get_by_role("link", name="V1").click()
    records = page.get_by_test_id("task-records")
    await expect(records).to_contain_text("Weight validation")
    await expect(records.locator('[data-status="succeeded"]')).to_be_visible()
    await console.shot("version-task-records")
    await page.go_back()

    # Deleting needs the word DELETE.
    await page.locator("button[data-action=delete-model]").click()
    confirm = page.get_by_test_id("confirm-delete")
    await expect(confirm).to_be_disabled()
    await page.get_by_placeholder("DELETE").fill("delete")
    await expect(confirm).to_be_disabled()
    await page.get_by_placeholder("DELETE").fill("DELETE")
    await console.shot("delete-confirm")
    await confirm.click()
    await expect(page).to_have_url(re.compile(r"/console/models$"))
    await expect(page.locator('tr[data-model="browser-tiny"]')).to_have_count(0)
    assert not await model_named(api, "browser-tiny")
