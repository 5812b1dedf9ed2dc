"""The resource pools page (issue 16): create a dedicated pool (the name rule and the API's errors at the
field), see it listed with its capacity, its detail with my allocations, the 409 of deleting a pool in use;
a job that waits for room shows its queue position and placement; compute usage and packages render.

A local platform's public pool is this machine; a dedicated pool has no nodes. What a job would hold is
taken here through the pools' own ledger by a stand-in holder, so the pages show real allocations and
queueing without running work."""
from __future__ import annotations

import re
import uuid

import pytest
from playwright.async_api import expect

from services.lib.common.cluster import Resources
from services.lib.common.context import transact
from services.lib.mlkit.tiny import build_tiny_model
from services.lib.pools import ledger
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

STAND_IN = "browser-test-holders"   # no job runner tidies this collection


@pytest.fixture(scope="module")
async def tiny_model(api, tmp_path_factory) -> dict:
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    folder = build_tiny_model(tmp_path_factory.mktemp("pools") / "tiny")
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        r = await api.put(f"/api/v1/storage/objects/{bucket}/pools-tiny/{file.name}", content=file.read_bytes())
        assert r.status_code == 201, r.text
    r = await api.post("/api/v1/models", json={"name": "pools-tiny", "template_id": "qwen2-custom",
                                               "weights_path": f"{bucket}/pools-tiny"})
    assert r.status_code == 201, r.text

    async def created():
        model = (await api.get(f"/api/v1/models/{r.json()['id']}")).json()
        return model if model["status"] != "creating" else None
    model = await wait_for(created, timeout=120)
    assert model["status"] == "created", model
    return model


def fmt(n: float) -> str:
    return f"{n:g}"


async def hold(platform, *, tenant_id: str, pool: str, resources: Resources, capacity: Resources) -> str:
    holder = ledger.Holder(kind="tuning", collection=STAND_IN, job_id=uuid.uuid4().hex, run_id=uuid.uuid4().hex,
                           tenant_id=tenant_id)
    await transact(platform, lambda uow: ledger.admit(uow, holder=holder, pool=pool, request=resources,
                                                      capacity=capacity))
    return holder.key


async def let_go(platform, key: str) -> None:
    await transact(platform, lambda uow: ledger.release(uow, key=key))


async def test_pools_page_dedicated_pool_queue_usage_and_packages(console, api, running_platform, tiny_model):
    page = console.page
    platform, tenant_id = running_platform["platform"], running_platform["admin"].tenant_id
    name = f"team-{uuid.uuid4().hex[:6]}"
    public = next(p for p in (await api.get("/api/v1/pools")).json()["items"] if p["name"] == "public")

    # The list: the public pool with its capacity; the nav entry follows "Model deployment".
    await console.goto("/console/pools")
    nav = await page.locator("nav a.nav-item").evaluate_all("links => links.map((a) => a.getAttribute('href'))")
    assert nav.index("/console/pools") == nav.index("/console/services") + 1, nav
    row = page.locator('[data-testid=pools-table] tr[data-pool="public"]')
    await expect(row.locator("[data-col=cpus]")).to_contain_text(f" / {fmt(public['capacity']['cpus'])}")
    await expect(row.locator("[data-col=nodes]")).to_have_text(str(public["nodes"]))
    await expect(row.locator("button[data-action=delete-pool]")).to_have_count(0)
    await expect(page.get_by_test_id("compute-usage")).to_be_visible()

    # Create a dedicated pool: the name rule at the field, then the API's own refusal there, then done.
    await page.locator("button[data-action=create-pool]").click()
    form = page.get_by_test_id("create-pool-form")
    await form.locator("input[name=name]").fill("Team_A")
    await page.get_by_test_id("create-pool-ok").click()
    await expect(form.locator('[data-field="name"] .field-error')).to_contain_text("lowercase letters")
    await form.locator("input[name=name]").fill("public")
    await page.get_by_test_id("create-pool-ok").click()
    await expect(form.locator('[data-field="name"] .field-error')).to_contain_text("reserved")
    await form.locator("input[name=name]").fill(name)
    await form.locator("textarea[name=description]").fill("browser test machines")
    await console.shot("create-pool")
    await page.get_by_test_id("create-pool-ok").click()
    row = page.locator(f'[data-testid=pools-table] tr[data-pool="{name}"]')
    await expect(row).to_contain_text("Dedicated pool")
    await expect(row).to_contain_text("browser test machines")
    await expect(row.locator("[data-col=cpus]")).to_contain_text("0 / 0")
    await expect(row.locator("[data-col=nodes]")).to_have_text("0")
    assert (await api.get(f"/api/v1/pools/{name}")).status_code == 200
    await console.shot("pool-created")

    capacity = Resources(cpus=public["capacity"]["cpus"], gpus=public["capacity"]["gpus"])
    free = Resources(cpus=public["free"]["cpus"], gpus=public["free"]["gpus"])
    held: list[str] = []
    job_id = None
    try:
        # Something of mine holds the new pool: its detail lists it, and deleting it is refused (409).
        held.append(await hold(platform, tenant_id=tenant_id, pool=name, resources=Resources(), capacity=Resources()))
        await row.get_by_role("link", name=name).click()
        await expect(page).to_have_url(re.compile(f"/console/pools/{name}$"))
        await expect(page.get_by_test_id("pool-allocations")).to_contain_text("Model tuning")
        await page.locator("button[data-action=delete-pool]").click()
        await page.get_by_placeholder("DELETE").fill("DELETE")
        await page.get_by_test_id("confirm-delete").click()
        await expect(page.get_by_role("dialog").locator(".error-box")).to_contain_text("is in use")
        await console.shot("pool-in-use")
        await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()

        # The job form offers my pools; a job the empty dedicated pool could never hold is refused at the field.
        await console.goto(f"/console/compression/create?model={tiny_model['id']}")
        form = page.get_by_test_id("compression-create-form")
        select = form.locator("select[name=resource_pool]")
        await expect(select.locator(f'option[value="{name}"]')).to_have_count(1)
        await form.locator("input[name=name]").fill("pool-waiter")
        await select.select_option(name)
        await form.get_by_role("button", name="Submit").click()
        await expect(form.locator('[data-field="resource_pool"] .field-error')).to_contain_text("could never start")

        # On a full public pool the job waits: its page shows the queue position, the reason and its placement.
        r = await api.post("/api/v1/packages", json={"account_id": tenant_id, "name": f"starter-{name}",
                                                     "cpu_hours": 5, "accelerator_hours": 1, "valid_days": 1})
        assert r.status_code == 201, r.text
        held.append(await hold(platform, tenant_id=tenant_id, pool="public", resources=free, capacity=capacity))
        await select.select_option("public")
        await form.get_by_role("button", name="Submit").click()
        await expect(page).to_have_url(re.compile(r"/console/compression/[0-9a-f]{32}$"), timeout=30_000)
        job_id = page.url.rsplit("/", 1)[1]
        queue = page.get_by_test_id("job-queue")
        await expect(queue).to_contain_text("Position 1 in the queue of pool public", timeout=30_000)
        await expect(queue).to_contain_text("waiting for")
        placement = page.get_by_test_id("job-placement")
        await expect(placement).to_contain_text("public")
        await console.shot("job-waiting")
        await placement.get_by_role("link", name="public").click()
        waiting = page.locator(f'[data-testid=pool-queue] tr[data-job="{job_id}"]')
        await expect(waiting).to_contain_text("pool-waiter")
        await expect(waiting).to_contain_text("waiting for")
        await expect(page.get_by_test_id("pool-allocations")).to_contain_text("Model tuning")
        await console.shot("public-pool-queue")
    finally:
        if job_id:
            await api.post(f"/api/v1/compression-jobs/{job_id}/stop")
            await api.delete(f"/api/v1/compression-jobs/{job_id}")
        for key in held:
            await let_go(platform, key)

    # What the stand-in held in the public pool was metered at the release, paid from the package first
    # (it expires first: valid one day).
    await console.goto("/console/pools")
    usage = page.get_by_test_id("compute-usage")
    package = page.locator(f'[data-testid=packages-table] tr[data-package="starter-{name}"]')
    await expect(package).to_contain_text("/ 1")
    if free.cpus:   # zero when other work filled the pool already: then nothing was held, nothing metered
        await expect(usage.locator('[data-testid=usage-table] tr[data-row="public"]')).to_be_visible()
        await usage.locator("select[name=group_by]").select_option("kind")
        await expect(usage.locator('[data-testid=usage-table] tr[data-row="tuning"]')).to_contain_text("Model tuning")
        await expect(package.locator("td").nth(1)).to_have_text(re.compile(r"^4\.\d+ / 5$"))
    await console.shot("usage-and-packages")

    # Nothing holds the pool now: it is deleted from the list.
    row = page.locator(f'[data-testid=pools-table] tr[data-pool="{name}"]')
    await row.locator("button[data-action=delete-pool]").click()
    await page.get_by_placeholder("DELETE").fill("DELETE")
    await page.get_by_test_id("confirm-delete").click()
    await expect(row).to_have_count(0)
    assert (await api.get(f"/api/v1/pools/{name}")).status_code == 404

    # The page in Chinese: the guide's words.
    await page.get_by_role("button", name="中文").click()
    await expect(page.locator(".page-head h2")).to_have_text("资源池")
    await expect(page.get_by_role("button", name="创建专属资源池")).to_be_visible()
