"""Compression jobs end to end on the real servers with the tiny model: a W8A8 and a W4A16 job each
produce a deploy-only model; progress, logs, metrics, task records, events, deletion, failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.lib.common.objectstore import ObjectPath
from tests.integration.conftest import wait_for
from tests.integration.test_compression_api import (bucket, create_model, job_body, tiny_folder,  # noqa: F401
                                                    upload_folder)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def source_model(api, bucket, tiny_folder) -> dict:  # noqa: F811
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-jobs/tiny")
    model = await create_model(api, name="compress-jobs-tiny", weights_path=path)
    assert model["status"] == "created", model
    return model


async def settled_job(api, job_id: str, *, timeout: float = 300) -> dict:
    async def done():
        job = (await api.get(f"/api/v1/compression-jobs/{job_id}")).json()
        return job if job["status"] in ("completed", "failed") else None
    return await wait_for(done, timeout=timeout, interval=1.0)


async def output_model(api, job: dict) -> dict:
    async def created():
        current = (await api.get(f"/api/v1/compression-jobs/{job['id']}")).json()
        model_id = current["output"]["model_id"]
        if not model_id:
            return None
        model = (await api.get(f"/api/v1/models/{model_id}")).json()
        return model if model["status"] != "creating" else None
    return await wait_for(created, timeout=120)


@pytest.mark.parametrize("strategy, alpha, method, bits", [
    ("smoothquant-w8a8", 0.6, "smoothquant", 8),
    ("awq-w4a16", None, "awq", 4),
])
async def test_a_job_produces_a_quantized_deploy_only_model(api, source_model, running_platform, strategy, alpha,
                                                            method, bits):
    tag = strategy.split("-")[0]
    body = job_body(name=f"job-{tag}", strategy=strategy, source={"model_id": source_model["id"]},
                    output_model_name=f"tiny-{tag}", description="压缩 tiny", instance_count=2)
    if alpha is not None:
        body["alpha"] = alpha
    r = await api.post("/api/v1/compression-jobs", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "pending" and created["params"]["alpha"] == alpha
    assert created["estimate"]["basis"] == "measured" and created["resources"]["instance_count"] == 2

    job = await settled_job(api, created["id"])
    assert job["status"] == "completed", job
    metrics = job["metrics"]
    assert 0 < metrics["size_after_bytes"] < metrics["size_before_bytes"]
    assert metrics["size_ratio"] < (0.5 if bits == 8 else 0.4)
    assert metrics["perplexity_before"] > 0 and metrics["perplexity_ratio"] < 1.1
    assert metrics["duration_seconds"] > 0
    assert job["progress"]["fraction"] == 1.0 and job["started_at"] and job["finished_at"]

    # The output becomes a deploy-only model of "my models", weights and all.
    model = await output_model(api, job)
    assert model["name"] == f"tiny-{tag}" and model["status"] == "created" and model["quantization"] == strategy
    version = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()
    store = running_platform["platform"].store
    folder = ObjectPath.parse(version["storage_uri"])
    names = {Path(o.key).name for o in await store.list(folder, recursive=True)}
    assert {"model.onnx", "config.json", "tokenizer.json", "quantization.json"} <= names
    config = json.loads(await store.get_bytes(ObjectPath(folder.bucket, folder.key + "config.json")))
    assert config["quantization_config"]["quant_method"] == method and config["quantization_config"]["bits"] == bits
    if alpha is not None:
        assert config["quantization_config"]["alpha"] == alpha

    # A compressed model cannot be compressed again.
    r = await api.post("/api/v1/compression-jobs", json=job_body(name="again", source={"model_id": model["id"]},
                                                                   output_model_name=f"again-{tag}"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "already_quantized"

    # Logs: searchable, and downloadable as a whole.
    logs = (await api.get(f"/api/v1/compression-jobs/{job['id']}/logs", params={"search": "PERPLEXITY"})).json()
    assert logs["total"] >= 2 and all("perplexity" in item["line"].lower() for item in logs["items"])
    text = (await api.get(f"/api/v1/compression-jobs/{job['id']}/logs/download")).text
    assert "calibration:" in text and "quantized:" in text

    # Events on the job's timeline.
    async def timeline_types():
        items = (await api.get(f"/api/v1/compression-jobs/{job['id']}/timeline")).json()["items"]
        types = [e["type"] for e in items]
        return types if "CompressionCompleted" in types else None
    types = await wait_for(timeline_types, timeout=30)
    assert types.index("CompressionRequested") < types.index("CompressionStarted") < types.index("CompressionCompleted")


async def test_task_record_follows_the_job_and_goes_with_it(api, source_model):
    r = await api.post("/api/v1/compression-jobs", json=job_body(name="job-record", strategy="awq-w4a16",
                                                                   source={"model_id": source_model["id"]},
                                                                   output_model_name="tiny-record"))
    job = r.json()

    async def record(status=None):
        version = (await api.get(f"/api/v1/models/{source_model['id']}/versions/1")).json()
        found = [t for t in version["tasks"] if t["id"] == job["id"]]
        return found if found and (status is None or found[0]["status"] == status) else None

    [task] = await wait_for(record, timeout=30)
    assert task["kind"] == "compression" and task["name"] == "job-record"
    # The source model cannot be deleted while the job exists.
    r = await api.delete(f"/api/v1/models/{source_model['id']}")
    assert r.status_code == 409 and "job-record" in r.json()["error"]["message"]

    await settled_job(api, job["id"])
    await wait_for(lambda: record("completed"), timeout=30)
    listed = (await api.get("/api/v1/compression-jobs", params={"strategy": "awq-w4a16", "name": "RECORD"})).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]

    assert (await api.delete(f"/api/v1/compression-jobs/{job['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/compression-jobs/{job['id']}")).status_code == 404

    async def gone():
        version = (await api.get(f"/api/v1/models/{source_model['id']}/versions/1")).json()
        return all(t["id"] != job["id"] for t in version["tasks"])
    await wait_for(gone, timeout=30)


async def test_user_calibration_dataset_is_used(api, bucket, source_model):  # noqa: F811
    lines = [json.dumps({"instruction": f"Question {i}: what is {i} plus {i}?", "output": f"It is {2 * i}."})
             for i in range(60)]
    path = f"{bucket}/compress-jobs/calibration.jsonl"
    assert (await api.put(f"/api/v1/storage/objects/{path}", content="\n".join(lines).encode())).status_code == 201
    r = await api.post("/api/v1/compression-jobs", json=job_body(
        name="job-calib", source={"model_id": source_model["id"]}, calibration_dataset=path,
        output_model_name="tiny-calib"))
    assert r.status_code == 201, r.text
    assert r.json()["calibration"]["texts"] == 60
    job = await settled_job(api, r.json()["id"])
    assert job["status"] == "completed", job
    logs = (await api.get(f"/api/v1/compression-jobs/{job['id']}/logs", params={"search": "user texts"})).json()
    assert logs["total"] == 1 and "60 user texts" in logs["items"][0]["line"]


async def test_a_failing_job_records_why(api, bucket, tiny_folder):  # noqa: F811
    # Weights that pass the upload checks but are not a readable safetensors file (not validated).
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-jobs/corrupt",
                               edit={"model.safetensors": b"\0" * 4096})
    model = await create_model(api, name="compress-jobs-corrupt", weights_path=path, validate=False)
    r = await api.post("/api/v1/compression-jobs", json=job_body(name="job-corrupt", source={"model_id": model["id"]},
                                                                   output_model_name="tiny-corrupt"))
    assert r.status_code == 201, r.text
    job = await settled_job(api, r.json()["id"])
    assert job["status"] == "failed"
    assert job["status_message"].startswith("the weights cannot be loaded: SafetensorError"), job["status_message"]
    logs = (await api.get(f"/api/v1/compression-jobs/{job['id']}/logs", params={"search": "ERROR"})).json()
    assert logs["total"] == 1

    async def failed_event():
        items = (await api.get(f"/api/v1/compression-jobs/{job['id']}/timeline")).json()["items"]
        return any(e["type"] == "CompressionFailed" and "cannot be loaded" in (e["message"] or "") for e in items)
    await wait_for(failed_event, timeout=30)
    # No model came out of it.
    models = (await api.get("/api/v1/models", params={"name": "tiny-corrupt"})).json()
    assert models["total"] == 0
