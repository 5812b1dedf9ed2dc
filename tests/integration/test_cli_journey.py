"""The CLI journey after a model exists: LoRA-tune it with a live progress bar, deploy it, call it with an
API key (the copied curl example and `maas chat`), see the monitoring, manage and delete the service."""
from __future__ import annotations

import asyncio
import json

import pytest

from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.cli_helpers import Maas

pytestmark = pytest.mark.integration

ANSWERS = ["The capital of France is Paris.", "There are seven days in a week.",
           "Thank you very much for your help!", "The weather today is sunny with a light breeze."]


@pytest.fixture(scope="module")
async def maas(running_platform, tmp_path_factory) -> Maas:
    cli = Maas(running_platform["url"], tmp_path_factory.mktemp("cli-journey"))
    admin = running_platform["admin"]
    assert (await cli("login", "-u", admin.username, "-p", admin.password)).code == 0
    return cli


@pytest.fixture(scope="module")
async def model(maas, tmp_path_factory) -> str:
    folder = build_tiny_model(tmp_path_factory.mktemp("cli-journey-model") / "tiny")
    result = await maas("models", "create", "cli-journey", "-t", "qwen2-custom", "-w", str(folder), "--json")
    assert result.code == 0, result.err
    return "cli-journey"


async def test_lora_tuning_with_a_progress_bar_loss_and_checkpoints(maas, model, tmp_path):
    dataset = tmp_path / "alpaca64.jsonl"
    dataset.write_text("".join(json.dumps({"instruction": f"Question number {i % 4}?", "input": "",
                                           "output": ANSWERS[i % 4]}) + "\n" for i in range(64)))
    estimate = (await maas("tune", "estimate", "--model", model, "--samples", "64", "--epochs", "3", "--json")).json()
    assert estimate["iterations"] == 6  # ceil(64 / 32) x 3

    run = await maas("tune", "create", "cli-tune", "--model", model, "--type", "lora", "--output-name", "cli-tuned",
                     "--dataset", str(dataset), "--format", "alpaca", "--epochs", "3", "--lr", "0.05",
                     "--checkpoints", "3", "--watch", timeout=600)
    assert run.code == 0, run.err
    assert "6 iterations" in run.out and "completed" in run.out
    assert "6/6" in run.err and "loss" in run.err  # the progress bar: iterations, latest loss, ETA

    loss = (await maas("tune", "logs", "cli-tune", "--loss", "--json")).json()
    assert [p["iteration"] for p in loss] == [1, 2, 3, 4, 5, 6] and all(p["lm_loss"] > 0 for p in loss)
    found = (await maas("tune", "logs", "cli-tune", "--search", "lm loss", "--json")).json()
    assert found["total"] == 6
    downloaded = tmp_path / "job.log"
    assert (await maas("tune", "logs", "cli-tune", "--download", str(downloaded))).code == 0
    assert downloaded.read_text().count("lm loss") == 6
    checkpoints = (await maas("tune", "checkpoints", "cli-tune", "--json")).json()
    assert [c["iteration"] for c in checkpoints["items"]] == [2, 4, 6]
    job = (await maas("tune", "show", "cli-tune", "--json")).json()
    assert job["status"] == "completed" and job["progress"]["iteration"] == 6

    not_stoppable = await maas("tune", "stop", "cli-tune")
    assert not_stoppable.code == 1 and "HTTP 409" in not_stoppable.err


@pytest.fixture(scope="module")
async def compressed(maas, model):
    """`maas compress create --watch`: the job's outcome (run once, asserted below)."""
    return await maas("compress", "create", "cli-sq", "--model", model, "--strategy", "smoothquant-w8a8",
                      "--output-name", "cli-journey-sq", "--watch", timeout=600)


async def test_compression_with_a_progress_bar_gives_a_deploy_only_model(maas, compressed):
    assert compressed.code == 0, compressed.err
    assert "cli-sq" in compressed.err and "100%" in compressed.err      # the progress bar
    assert "perplexity" in compressed.out and "completed" in compressed.out
    job = (await maas("compress", "show", "cli-sq", "--json")).json()
    assert job["status"] == "completed" and job["params"]["alpha"] == 0.5
    metrics = job["metrics"]
    assert metrics["size_after_bytes"] < metrics["size_before_bytes"] and metrics["perplexity_after"] > 0
    out = (await maas("models", "show", "cli-journey-sq", "--json")).json()
    assert out["quantization"] == "smoothquant-w8a8"
    # --watch ended once the registry had made the model, so the job links to it.
    assert job["output"]["model_id"] == out["id"]
    shown = await maas("compress", "show", "cli-sq")
    assert f"cli-journey-sq ({out['id']})" in " ".join(shown.out.split())
    refused = await maas("compress", "create", "cli-sq-again", "--model", "cli-journey-sq", "-o", "x-sq")
    assert refused.code == 1 and "field: source" in refused.err


async def test_deploy_call_monitor_and_remove_a_service(maas, compressed):
    assert compressed.code == 0, compressed.err
    deployed = await maas("deploy", "cli-journey-sq", "--name", "cli-svc", "--qps", "2", "--json", timeout=600)
    assert deployed.code == 0, deployed.err
    service = deployed.json()
    assert service["status"] == "running" and service["instance_count"] == 1

    key = (await maas("keys", "create", "--description", "cli test", "--json")).json()["key"]
    call = (await maas("services", "call", "cli-svc", "--json")).json()
    assert call["base_url"].endswith(f"/v1/infers/{service['id']}/v1") and call["model"] == "cli-svc"
    proc = await asyncio.create_subprocess_exec("bash", "-c", call["curl"].replace("<your_api_key>", key),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["choices"][0]["message"]["role"] == "assistant"

    answer = (await maas("chat", "cli-svc", "Hello", "--api-key", key, "--max-tokens", "8", "--json")).json()
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] > 0
    streamed = await maas("chat", "cli-svc", "Hello", "--max-tokens", "8")
    assert streamed.code == 0 and streamed.out.strip() and "completion tokens" in streamed.err
    bad_key = await maas("chat", "cli-svc", "Hello", "--api-key", "sk-wrong-key-000000000000", "--no-stream")
    assert bad_key.code == 1 and "HTTP 401" in bad_key.err
    assert "maas keys create" in bad_key.err and "maas login" not in bad_key.err   # the key, not the login

    scaled = await maas("services", "scale", "cli-svc", "2", "--wait", timeout=600)
    assert scaled.code == 0, scaled.err
    assert "cli-svc: running, 2/2 instance(s) ready" in scaled.err   # each step on a line of its own

    async def counted():
        metrics = (await maas("services", "metrics", "cli-svc", "--json")).json()
        return metrics["totals"]["requests"] >= 3
    for _ in range(30):
        if await counted():
            break
        await asyncio.sleep(1)
    else:
        raise AssertionError("the service's monitoring never counted the calls")

    assert (await maas("services", "qps", "cli-svc", "4", "--json")).json()["qps_limit"] == 4
    events = (await maas("services", "events", "cli-svc", "--json")).json()
    assert events["total"] >= 1
    stopped = await maas("services", "stop", "cli-svc", "--json")
    assert stopped.code == 0 and stopped.json()["status"] in ("stopping", "stopped")
    assert (await maas("services", "delete", "cli-svc", "--yes")).code == 0
    keys = (await maas("keys", "list", "--json")).json()
    [mine] = [k for k in keys["items"] if k["description"] == "cli test"]
    assert key not in json.dumps(keys)  # listed masked only
    assert (await maas("keys", "delete", mine["id"], "--yes")).code == 0
