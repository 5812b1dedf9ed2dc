"""Tried as a new user would (issue 13): the administrator creates a ReadOnly colleague in the console;
the colleague browses, finds the buttons they may not use greyed with the missing action, gets the
"access restricted" dialog with the policy to ask for, and a forced API call answers 403 naming it."""
from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import Console

pytestmark = pytest.mark.integration

PASSWORD = "colleague-pass-1"


async def test_admin_creates_a_read_only_colleague_who_sees_what_they_may_not_do(console, browser, running_platform):
    page = console.page
    suffix = uuid.uuid4().hex[:6]
    group, colleague = f"readers-{suffix}", f"colleague{suffix}"

    # The administrator's navigation has the access-control pages.
    await console.goto("/console/iam/groups")
    await expect(page.get_by_test_id("nav-admin")).to_be_visible()
    await page.get_by_role("button", name="Create user group").click()
    form = page.get_by_test_id("create-group-form")
    await form.locator("input[name=name]").fill(group)
    await form.locator('input[data-policy="ReadOnly"]').check()
    await console.shot("create-group")
    await page.get_by_test_id("create-group-ok").click()
    await expect(page).to_have_url(re.compile(r"/console/iam/groups/[0-9a-f]+$"))
    await expect(page.locator('[data-testid=group-policies] tr[data-policy="ReadOnly"]')).to_be_visible()

    await console.goto("/console/iam/users")
    await page.get_by_role("button", name="Create user").click()
    form = page.get_by_test_id("create-user-form")
    await form.locator("input[name=username]").fill(colleague)
    await form.locator("input[name=password]").fill("short")
    await page.get_by_test_id("create-user-ok").click()
    await expect(form.locator(".field-error").first).to_contain_text(re.compile("password|8"))  # the API's rule, at the field
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator(f'input[data-group="{group}"]').check()
    await page.get_by_test_id("create-user-ok").click()
    row = page.locator(f'[data-testid=users-table] tr[data-user="{colleague}"]')
    await expect(row).to_contain_text(group)
    await expect(row).to_contain_text("Member")
    await console.shot("colleague-created")

    # The audit log has the creation, filtered by action; the CSV export holds the same records.
    await console.goto("/console/audit")
    filters = page.get_by_test_id("audit-filters")
    await filters.locator("input[name=action]").fill("maas:users:create")
    await filters.get_by_role("button", name="Search").click()
    records = page.locator("[data-testid=audit-table] tbody tr")
    await expect(records.first).to_contain_text("maas:users:create")
    await expect(page.locator('[data-testid=audit-table] tr[data-action="maas:groups:create"]')).to_have_count(0)
    await console.shot("audit-filtered")
    async with page.expect_download() as download_info:
        await page.get_by_test_id("audit-export").click()
    download = await download_info.value
    exported = (await download.path()).read_text().splitlines()
    assert exported[0].startswith("at,account_id,user_id,username,action")
    assert len(exported) > 1 and all(",maas:users:create," in line for line in exported[1:]), exported

    # The policy editor points at a mistake's line and column (validated by the server as one types).
    await console.goto("/console/iam/policies/create")
    editor = page.locator("[data-testid=policy-editor] textarea")
    await editor.fill('{\n  "Version": "1.1",\n  "Statement": [{"Effect": "Allow", "Action": ["maas:model:create"]}]\n}')
    await expect(page.get_by_test_id("policy-invalid")).to_contain_text('did you mean "maas:models:create"')
    await expect(page.get_by_test_id("error-position")).to_contain_text(re.compile(r"Line 3, column \d+"))
    await expect(page.locator(".json-gutter .error-line")).to_have_text("3")
    await console.shot("policy-error-line-column")

    # The colleague logs in with the form, in a browser of their own.
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        mate = Console(await context.new_page(), running_platform["url"], console.name + "-colleague")
        them = mate.page
        them.set_default_timeout(20_000)
        await mate.goto("/console/login")
        await them.evaluate("localStorage.setItem('maas.lang', 'en')")
        await them.fill("input[name=username]", colleague)
        await them.fill("input[name=password]", PASSWORD)
        await them.click("button[type=submit]")
        await expect(them).to_have_url(re.compile(r"/console/square$"))
        await expect(them.get_by_test_id("nav-admin")).to_have_count(0)   # no access-control pages for members

        # Browsing works: the models page lists, with no dialog; creating is greyed, the action as the reason.
        await mate.goto("/console/models")
        await expect(them.locator("[data-testid=models-table], .empty").first).to_be_visible()
        create = them.locator("button[data-action=create-model]")
        await expect(create).to_be_disabled()
        await expect(create).to_have_attribute("title", re.compile("maas:models:create"))
        await expect(them.get_by_test_id("access-restricted")).to_have_count(0)
        await mate.shot("models-create-greyed")

        # A deployable model: deploy greyed because of the missing action, not because of the model.
        await mate.goto("/console/square/baichuan2-7b")
        deploy = them.locator("button[data-action=deploy]")
        await expect(deploy).to_be_disabled()
        await expect(deploy).to_have_attribute("title", re.compile("maas:services:create"))
        await mate.shot("deploy-greyed")
        await mate.goto("/console/services")
        await expect(them.locator("button[data-action=deploy-service]")).to_have_attribute(
            "title", re.compile("maas:services:create"))

        # The playground needs maas:inference:call: the dialog lists it and copies the policy to ask for.
        await mate.goto("/console/playground")
        dialog = them.get_by_test_id("access-restricted")
        await expect(dialog).to_contain_text("maas:inference:call")
        await expect(dialog.locator("pre")).to_contain_text('"maas:inference:call"')
        await mate.shot("access-restricted")
        await dialog.get_by_role("button", name="Copy").click()
        await expect(dialog.get_by_role("button", name="Copied")).to_be_visible()
        copied = json.loads(await them.evaluate("navigator.clipboard.readText()"))
        assert copied == {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["maas:inference:call"]}]}

        # Forcing the call anyway: 403 naming the action.
        token = await them.evaluate("localStorage.getItem('maas.token')")
        async with httpx.AsyncClient(base_url=running_platform["url"], timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            forced = await client.post("/api/v1/services", json={})
            assert (await client.get("/api/v1/models")).status_code == 200
        assert forced.status_code == 403, forced.text
        assert "maas:services:create" in forced.json()["error"]["message"]
        assert not [e for e in mate.errors if e.startswith("pageerror")], mate.errors
    finally:
        await context.close()
