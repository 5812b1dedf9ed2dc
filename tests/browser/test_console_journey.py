"""Browser journeys after a model exists: tune it and watch the loss chart, stop and continue a compression
job, compress and deploy it, call it with the copied curl example and an API key made in the console, see the
monitoring, chat in the playground, manage the service; the preset service's free quota and playground chat
(slow: the real SmolLM2)."""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

ANSWERS = ["The capital of France is Paris.", "There are seven days in a week.",
           "Thank you very much for your help!", "The weather today is sunny with a light breeze."]


@pytest.fixture(scope="module")
async def tiny_model(api, tmp_path_factory) -> dict:
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    folder = build_tiny_model(tmp_path_factory.mktemp("journey") / "tiny")
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        r = await api.put(f"/api/v1/storage/objects/{bucket}/journey-tiny/{file.name}", content=file.read_bytes())
        assert r.status_code == 201, r.text
    r = await api.post("/api/v1/models", json={"name": "journey-tiny", "template_id": "qwen2-custom",
                                               "weights_path": f"{bucket}/journey-tiny"})
    assert r.status_code == 201, r.text

    async def created():
        model = (await api.get(f"/api/v1/models/{r.json()['id']}")).json()
        return model if model["status"] != "creating" else None
    model = await wait_for(created, timeout=120)
    assert model["status"] == "created", model
    return model


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "alpaca64.jsonl"
    rows = [{"instruction": f"Question number {i % 4}?", "input": "", "output": ANSWERS[i % 4]} for i in range(64)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_tuning_form_shows_iterations_and_the_duration_estimate(console):
    page = console.page
    await console.goto("/console/tuning/create?template=smollm2-135m-instruct")
    form = page.get_by_test_id("tuning-create-form")
    await expect(form.locator("input[name=tune_type][value=lora]")).to_be_checked()
    await form.locator("input[name=sample_count]").fill("3200")
    await form.locator("input[name=epochs]").fill("2")
    # Table 6-4: ceil(3200 / 32) x 2 = 200 iterations; tables 6-5/6-6 give an hours range.
    await expect(page.get_by_test_id("iterations")).to_contain_text("200")
    await expect(page.get_by_test_id("estimate")).to_contain_text(re.compile(r"[\d.]+ – [\d.]+ hours"))
    await console.shot("tuning-form-estimate")
    # Fewer samples than one global batch: said before submitting; SmolLM2 lets the job choose a smaller one.
    await form.locator("input[name=sample_count]").fill("15")
    await expect(form).to_contain_text("fewer than one global batch")
    await form.locator("input[name=global_batch_size]").fill("5")
    await expect(page.get_by_test_id("iterations")).to_contain_text("6")   # ceil(15 / 5) x 2
    await expect(form).not_to_contain_text("fewer than one global batch")


async def test_lora_tune_from_the_form_and_watch_the_loss_chart(console, tiny_model, alpaca_file, api):
    page = console.page
    await console.goto(f"/console/tuning/create?model={tiny_model['id']}")
    form = page.get_by_test_id("tuning-create-form")
    await form.locator("input[name=name]").fill("browser-tune")
    await form.locator("input[name=output_model_name]").fill("browser-tuned")
    await expect(form.locator("input[name=tune_type][value=lora]")).to_be_checked()
    await page.get_by_test_id("dataset-file").set_input_files(alpaca_file)
    await expect(form.locator("input[name=sample_count]")).to_have_value("64")  # counted in the browser
    await form.locator("input[name=epochs]").fill("3")
    await form.locator("input[name=learning_rate]").fill("0.05")
    await form.locator("input[name=checkpoint_count]").fill("3")
    await expect(page.get_by_test_id("iterations")).to_contain_text("6")
    await console.shot("tuning-form-filled")
    await form.get_by_role("button", name="Submit").click()
    await page.get_by_test_id("confirm-submit").click()
    await expect(page).to_have_url(re.compile(r"/console/tuning/[0-9a-f]{32}$"), timeout=60_000)
    job_id = page.url.rsplit("/", 1)[1]

    await page.get_by_role("tab", name="Loss curve").click()
    await expect(page.locator('[data-testid=job-status] [data-status="completed"]')).to_be_visible(timeout=240_000)
    chart = page.get_by_test_id("loss-chart")
    await expect(chart).to_have_attribute("data-points", "6", timeout=15_000)
    await expect(page.get_by_test_id("latest-loss")).to_have_text(re.compile(r"^\d+\.\d{4}$"))
    await console.shot("tuning-loss-chart")

    await page.get_by_role("tab", name="Logs").click()
    await page.get_by_test_id("log-search").fill("lm loss")
    await expect(page.get_by_test_id("logs")).to_contain_text("iteration        6/       6")
    await console.shot("tuning-logs")

    await page.get_by_role("tab", name="Checkpoints").click()
    await expect(page.get_by_test_id("checkpoints").locator("tbody tr")).to_have_count(3)
    await console.shot("tuning-checkpoints")
    job = (await api.get(f"/api/v1/tuning-jobs/{job_id}")).json()
    assert job["status"] == "completed" and len(job["checkpoints"]) == 3



async def test_compression_jobs_stop_continue_and_delete_from_the_console(console, tiny_model, api, running_platform):
    page = console.page
    # The platform's compression worker claims nothing meanwhile: the job waits in "pending", however fast
    # the tiny model would compress (the job-engine tests hold their jobs the same way).
    worker = running_platform["app"].state.components["compression-worker"]
    worker.draining = True
    try:
        r = await api.post("/api/v1/compression-jobs", json={
            "name": "browser-stop", "source": {"model_id": tiny_model["id"]}, "strategy": "smoothquant-w8a8",
            "output_model_name": "browser-stop-sq"})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        # The list offers Stop for a waiting job (not Continue); stopped, it offers Continue instead.
        await console.goto("/console/compression")
        row = page.get_by_test_id("compression-table").locator('tr[data-job="browser-stop"]')
        await expect(row.locator('[data-status="pending"]')).to_be_visible()
        await expect(row.locator("button[data-action=continue]")).to_have_count(0)
        await row.locator("button[data-action=stop]").click()
        await page.get_by_role("dialog").get_by_role("button", name="OK").click()
        await expect(row.locator('[data-status="stopped"]')).to_be_visible()
        await expect(row.locator("button[data-action=stop]")).to_have_count(0)
        await expect(row.locator("button[data-action=continue]")).to_be_enabled()
        await page.locator("select[aria-label=status]").select_option("stopped")
        await expect(page.get_by_test_id("compression-table").locator("tbody tr")).to_have_count(1)
        await expect(row).to_be_visible()
        assert (await api.get(f"/api/v1/compression-jobs/{job_id}")).json()["status"] == "stopped"
        await console.shot("compression-list-stopped")

        # The detail page: "stopped" in the status line and the history; Continue queues it again (from the start).
        await row.get_by_role("link", name="browser-stop").click()
        await expect(page.locator('[data-testid=job-status] [data-status="stopped"]')).to_be_visible()
        await expect(page.locator('[data-testid=status-history] [data-status="stopped"]')).to_be_visible()
        await console.shot("compression-detail-stopped")
        await page.get_by_role("button", name="Continue", exact=True).click()
        await expect(page.get_by_role("dialog")).to_contain_text("from the start")
        await page.get_by_role("dialog").get_by_role("button", name="OK").click()
        await expect(page.locator('[data-testid=job-status] [data-status="pending"]')).to_be_visible()
        await expect(page.get_by_role("button", name="Stop", exact=True)).to_be_enabled()
        assert (await api.get(f"/api/v1/compression-jobs/{job_id}")).json()["status"] == "pending"

        await page.get_by_role("button", name="Delete", exact=True).click()
        await page.get_by_placeholder("DELETE").fill("DELETE")
        await page.get_by_test_id("confirm-delete").click()
        await expect(page).to_have_url(re.compile(r"/console/compression$"))
        assert (await api.get(f"/api/v1/compression-jobs/{job_id}")).status_code == 404
    finally:
        worker.draining = False
        worker.nudge()

async def _run_curl(command: str) -> dict:
    proc = await asyncio.create_subprocess_exec("bash", "-c", command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def _curl_status(command: str) -> str:
    command = command.replace("curl -X POST", "curl -s -o /dev/null -w '%{http_code}' -X POST", 1)
    proc = await asyncio.create_subprocess_exec("bash", "-c", command, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return out.decode().strip()


JOB_URL = re.compile(r".*/api/v1/compression-jobs/[0-9a-f]{32}$")


async def _without_output_model(route):
    response = await route.fetch()
    job = await response.json()
    job["output"]["model_id"] = None
    await route.fulfill(response=response, json=job)


async def test_compress_deploy_call_with_the_copied_curl_monitor_chat_and_manage(console, tiny_model, api):
    page = console.page
    # Compress (SmoothQuant-W8A8, migration strength 0.5 by default): a new deploy-only model.
    await console.goto(f"/console/compression/create?model={tiny_model['id']}")
    form = page.get_by_test_id("compression-create-form")
    await form.locator("input[name=name]").fill("browser-sq")
    await expect(form.locator("input[name=strategy][value=smoothquant-w8a8]")).to_be_checked()
    await expect(form.locator("input[name=alpha]")).to_have_value("0.5")
    await form.locator("input[name=output_model_name]").fill("browser-tiny-sq")
    await expect(page.get_by_test_id("estimate")).to_contain_text("minute")
    await form.get_by_role("button", name="Submit").click()
    await expect(page).to_have_url(re.compile(r"/console/compression/[0-9a-f]{32}$"), timeout=60_000)
    await expect(page.locator('[data-testid=job-status] [data-status="completed"]')).to_be_visible(timeout=300_000)
    await expect(page.get_by_test_id("size-after")).to_contain_text("KB")
    await expect(page.get_by_test_id("ppl-after")).not_to_be_empty()
    await console.shot("compression-completed")
    # The registry makes the model two events after the job completes; until then the page says so
    # (shown here by hiding the model id from the page's polls, however fast the registry was).
    await page.route(JOB_URL, _without_output_model)
    await expect(page.get_by_test_id("output-registering")).to_have_text("registering…")
    await page.unroute(JOB_URL, _without_output_model)
    # Two Kafka hops; tests/integration/test_compression_jobs.py gives the same chain 120 s on a busy machine.
    await page.get_by_role("link", name="browser-tiny-sq").click(timeout=120_000)
    await expect(page.locator('[data-testid=model-status] [data-status="created"]')).to_be_visible(timeout=120_000)
    await expect(page.get_by_role("button", name="Tune")).to_be_disabled()  # quantized: deploy only
    await expect(page.get_by_role("button", name="Compress")).to_be_disabled()
    await page.get_by_role("button", name="Deploy").click()

    await expect(page).to_have_url(re.compile(r"/console/services/deploy\?model="))
    form = page.get_by_test_id("deploy-form")
    await form.locator("input[name=name]").fill("browser-svc")
    await form.locator("input[name=qps_limit]").fill("5")
    await console.shot("deploy-form")
    await form.get_by_role("button", name="Submit").click()
    await expect(page).to_have_url(re.compile(r"/console/services/[0-9a-f]{32}$"), timeout=60_000)
    service_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator('[data-testid=service-status] [data-status="running"]')).to_be_visible(timeout=240_000)
    await console.shot("service-running")

    # The call dialog's curl example, with an API key created (and shown once) in the console.
    await page.get_by_role("button", name="Call", exact=True).click()
    await expect(page.get_by_test_id("base-url")).to_have_text(f"{console.base_url}/v1/infers/{service_id}/v1")
    curl = await page.get_by_test_id("call-example").locator("pre").inner_text()
    assert curl.startswith("curl -X POST") and "<your_api_key>" in curl
    await console.shot("call-dialog")
    await page.keyboard.press("Escape")

    await console.goto("/console/keys")
    await page.get_by_role("button", name="Create API key").click()
    await page.get_by_role("dialog").locator("textarea").fill("browser journey")
    await page.get_by_role("dialog").get_by_role("button", name="OK").click()
    secret = await page.get_by_test_id("new-key").inner_text()
    assert secret.startswith("sk-")
    await console.shot("api-key-shown-once")
    await page.get_by_role("dialog").locator(".modal-foot").get_by_role("button", name="Close").click()
    await expect(page.get_by_test_id("keys-table")).not_to_contain_text(secret)  # masked from now on

    answer = await _run_curl(curl.replace("<your_api_key>", secret))
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] > 0

    # Monitoring counts that call.
    await console.goto(f"/console/services/{service_id}")
    await page.get_by_role("tab", name="Monitoring").click()
    await expect(page.get_by_test_id("metric-requests")).not_to_have_text(re.compile(r"^(0|-)$"), timeout=30_000)
    await expect(page.get_by_test_id("metric-prefix-cache")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
    await console.shot("service-monitoring")
    await page.get_by_role("tab", name="Events").click()
    await expect(page.get_by_test_id("service-events")).to_be_visible()

    # Playground: streamed answer; sliders restore the guide's defaults.
    await console.goto(f"/console/playground?service={service_id}")
    await expect(page.get_by_test_id("service-picker")).to_have_value(service_id)
    temperature = page.get_by_label("temperature value")
    await temperature.fill("0.3")
    await temperature.press("Tab")
    await expect(temperature).to_have_value("0.3")
    await page.locator("button[data-action=restore-defaults]").click()
    await expect(temperature).to_have_value("1")
    await page.get_by_test_id("chat-input").fill("Hello!")
    await page.get_by_role("button", name="Send").click()
    reply = page.get_by_test_id("chat-log").locator(".msg-assistant .bubble")
    await expect(reply).not_to_have_text(re.compile(r"^(…)?$"), timeout=60_000)
    await expect(page.get_by_test_id("chat-log")).to_contain_text("tokens", timeout=60_000)
    await console.shot("playground-chat")

    # Manage: QPS, stop, delete (DELETE typed).
    await console.goto(f"/console/services/{service_id}")
    await page.get_by_role("button", name="Set QPS").click()
    await page.get_by_role("dialog").locator("input").fill("7")
    await page.get_by_role("dialog").get_by_role("button", name="Submit").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    assert (await api.get(f"/api/v1/services/{service_id}")).json()["qps_limit"] == 7
    await page.get_by_role("button", name="Stop", exact=True).click()
    await page.get_by_role("dialog").get_by_role("button", name="OK").click()
    await expect(page.locator('[data-testid=service-status] [data-status="stopped"]')).to_be_visible(timeout=120_000)
    await page.get_by_role("button", name="Delete", exact=True).click()
    await page.get_by_placeholder("DELETE").fill("DELETE")
    await page.get_by_test_id("confirm-delete").click()
    await expect(page).to_have_url(re.compile(r"/console/services$"))

    async def gone():
        return (await api.get(f"/api/v1/services/{service_id}")).status_code == 404
    await wait_for(gone, timeout=60)

    # The API key goes too (a user has at most 5).
    await console.goto("/console/keys")
    row = page.get_by_test_id("keys-table").locator("tr", has_text="browser journey")
    await row.get_by_role("button", name="Delete").click()
    await page.get_by_placeholder("DELETE").fill("DELETE")
    await page.get_by_test_id("confirm-delete").click()
    await expect(row).to_have_count(0)
    status = await _curl_status(curl.replace("<your_api_key>", secret))
    assert status == "401"  # deleted keys stop working at once


@pytest.mark.slow
async def test_claim_the_preset_quota_and_chat_in_the_playground(console):
    page = console.page
    await console.goto("/console/services?tab=preset")
    # The preset service is listed at once; it can be claimed once the shipped weights are imported
    # (first start: a minute or so): until then its row says "Importing n%".
    row = page.get_by_test_id("presets-table").locator("tbody tr").first
    await expect(row).to_be_visible(timeout=60_000)
    await expect(row.locator("[data-status=importing]")).to_have_count(0, timeout=300_000)
    claim = row.locator("button[data-action=claim]")
    if await claim.is_enabled():
        await claim.click()
    await expect(claim).to_have_text("Claimed")
    await expect(claim).to_be_disabled()
    await console.shot("preset-claimed")
    await row.get_by_role("button", name="Try it").click()
    await expect(page).to_have_url(re.compile(r"/console/playground\?service="))
    await page.get_by_test_id("chat-input").fill("What is the capital of France?")
    await page.get_by_role("button", name="Send").click()
    reply = page.get_by_test_id("chat-log").locator(".msg-assistant .bubble")
    await expect(page.get_by_test_id("chat-log")).to_contain_text("tokens", timeout=300_000)
    assert (await reply.inner_text()).strip()
    await console.shot("preset-playground-chat")


@pytest.mark.slow
async def test_model_from_preset_weights_gets_the_recommended_instance_count(console, api):
    page = console.page

    async def preset_ready():
        template = (await api.get("/api/v1/templates/smollm2-135m-instruct")).json()
        return template["preset_weights"]["state"]["status"] == "ready"
    await wait_for(preset_ready, timeout=600, interval=2)  # imported in the background on first start
    await console.goto("/console/models/create?template=smollm2-135m-instruct")
    form = page.get_by_test_id("model-create-form")
    await form.locator("input[name=name]").fill("browser-smollm2")
    await form.get_by_label("Preset weights").check()
    await form.get_by_role("button", name="Create").click()
    await expect(page).to_have_url(re.compile(r"/console/models/[0-9a-f]{32}$"), timeout=120_000)
    model_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator('[data-testid=model-status] [data-status="created"]')).to_be_visible(timeout=600_000)
    await page.get_by_role("button", name="Deploy").click()
    form = page.get_by_test_id("deploy-form")
    await form.locator("input[name=qps_limit]").fill("5")
    # Guide 8: recommended instances = ceil(QPS limit / the template's single-instance QPS (2)) = 3.
    await expect(page.get_by_test_id("recommended")).to_contain_text("Recommended instances: 3")
    await console.shot("deploy-recommended-instances")
    assert (await api.delete(f"/api/v1/models/{model_id}")).status_code == 204
