"""Compression jobs through the real HTTP API: every kind of bad input is refused with a clear
error before any compute (and leaves no job behind), and the duration estimate of table 7-4."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.lib.common.objectstore import ObjectPath
from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


# ---- helpers shared with the other compression test modules ------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-compress") / "model")


@pytest.fixture(scope="module")
async def bucket(api) -> str:
    return (await api.get("/api/v1/auth/me")).json()["default_bucket"]


async def upload_folder(api, folder: Path, dest: str, *, edit: dict[str, bytes] | None = None) -> str:
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        body = (edit or {}).get(file.name, file.read_bytes())
        r = await api.put(f"/api/v1/storage/objects/{dest}/{file.name}", content=body)
        assert r.status_code == 201, r.text
    return dest


async def create_model(api, *, name: str, weights_path: str, template_id: str = "qwen2-custom",
                       validate: bool = True, wait: bool = True) -> dict:
    r = await api.post("/api/v1/models", json={"name": name, "template_id": template_id,
                                               "weights_path": weights_path, "validate_weights": validate})
    assert r.status_code == 201, r.text
    model = r.json()
    if not wait:
        return model

    async def settled():
        doc = (await api.get(f"/api/v1/models/{model['id']}")).json()
        return doc if doc["status"] != "creating" else None
    return await wait_for(settled, timeout=120)


def job_body(**overrides) -> dict:
    body = {"name": "compress-tiny", "strategy": "smoothquant-w8a8", "output_model_name": "tiny-w8a8"}
    body.update(overrides)
    return body


async def job_count(api) -> int:
    return (await api.get("/api/v1/compression-jobs")).json()["total"]


# ---- fixtures of this module -----------------------------------------------------------------------

@pytest.fixture(scope="module")
async def tiny_model(api, bucket, tiny_folder) -> dict:
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-api/tiny")
    model = await create_model(api, name="compress-api-tiny", weights_path=path)
    assert model["status"] == "created", model
    return model


async def _expect_refused(api, body: dict, *, status: int, field: str | None, text: str,
                          code: str | None = None) -> dict:
    before = await job_count(api)
    r = await api.post("/api/v1/compression-jobs", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert text in error["message"], error
    if field is not None:
        assert error.get("field") == field, error
    if code is not None:
        assert error["code"] == code, error
    assert await job_count(api) == before   # nothing half-written
    return error


# ---- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field, text", [
    ({"name": "tiny.v1"}, "name", "'-' and '_'"),
    ({"name": "1tiny"}, "name", "start with a letter"),
    ({"description": "x" * 1001}, "description", "at most 1000 characters"),
    ({"alpha": 1.5}, "alpha", "between 0 and 1; got 1.5"),
    ({"alpha": -0.1}, "alpha", "between 0 and 1"),
    ({"alpha": 0.5, "strategy": "awq-w4a16"}, "alpha", "applies to smoothquant-w8a8 only"),
    ({"strategy": "gptq-w4"}, "strategy", "smoothquant-w8a8"),
    ({"instance_count": 0}, "instance_count", "between 1 and 8"),
    ({"output_model_name": "-bad"}, "output_model_name", "start with a letter"),
])
async def test_malformed_requests_are_400(api, tiny_model, overrides, field, text):
    body = job_body(source={"model_id": tiny_model["id"]}, **overrides)
    await _expect_refused(api, body, status=400, field=field, text=text)


async def test_source_must_be_one_model_or_one_template(api, tiny_model):
    body = job_body(source={"model_id": tiny_model["id"], "template_id": "smollm2-135m-instruct"})
    await _expect_refused(api, body, status=400, field="source", text="either model_id")
    await _expect_refused(api, job_body(source={"model_id": "nope"}), status=404, field=None,
                          text="model 'nope' does not exist")
    await _expect_refused(api, job_body(source={"template_id": "no-such"}), status=400,
                          field="source.template_id", text="not a model-square template")


async def test_unknown_instance_spec(api, tiny_model):
    body = job_body(source={"model_id": tiny_model["id"]}, instance_spec="gpu.huge")
    await _expect_refused(api, body, status=400, field="instance_spec", text="not a known spec")


async def test_strategy_the_template_does_not_support(api, bucket, tiny_folder):
    # Qwen2-72B offers SmoothQuant-W8A8 only (table 7-2); the weights are not validated here.
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-api/q72")
    model = await create_model(api, name="compress-api-q72", weights_path=path, template_id="qwen2-72b",
                               validate=False)
    assert model["status"] == "created", model
    error = await _expect_refused(api, job_body(source={"model_id": model["id"]}, strategy="awq-w4a16"),
                                  status=400, field="strategy", text="AWQ-W4A16 is not supported for 'Qwen2-72B'",
                                  code="strategy_not_supported")
    assert "supported: smoothquant-w8a8" in error["message"]
    # A template outside table 7-2 offers nothing.
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-api/bc")
    model = await create_model(api, name="compress-api-bc", weights_path=path, template_id="baichuan2-7b",
                               validate=False)
    await _expect_refused(api, job_body(source={"model_id": model["id"]}), status=400, field="strategy",
                          text="supported: none")


async def test_an_already_quantized_model_is_refused(api, bucket, tiny_folder):
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-api/awq")
    model = await create_model(api, name="compress-api-awq", weights_path=path, template_id="qwen2-7b-awq",
                               validate=False)
    assert model["quantization"] == "awq-w4a16"
    await _expect_refused(api, job_body(source={"model_id": model["id"]}), status=400, field="source.model_id",
                          text="already quantized (awq-w4a16)", code="already_quantized")
    await _expect_refused(api, job_body(source={"template_id": "qwen2-7b-awq"}), status=400,
                          field="source.template_id", text="already quantized", code="already_quantized")


async def test_missing_weights_are_refused(api, bucket, tiny_folder, running_platform):
    path = await upload_folder(api, tiny_folder, f"{bucket}/compress-api/gone")
    model = await create_model(api, name="compress-api-gone", weights_path=path)
    version = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()
    # The platform's copy of the weights disappears (an operator cleaned the bucket, say).
    await running_platform["platform"].store.remove_prefix(ObjectPath.parse(version["storage_uri"]))
    await _expect_refused(api, job_body(source={"model_id": model["id"]}), status=400, field="source.model_id",
                          text="weights of model 'compress-api-gone' V1 are missing", code="weights_missing")


async def test_a_model_still_being_validated_is_refused(api, bucket, tiny_folder):
    # Padding makes the validation worker's download take a moment, so the request lands while it runs.
    folder = tiny_folder
    path = await upload_folder(api, folder, f"{bucket}/compress-api/slow")
    r = await api.put(f"/api/v1/storage/objects/{path}/padding.bin.txt", content=b"\0" * (24 * 1024 * 1024))
    assert r.status_code == 201
    model = await create_model(api, name="compress-api-slow", weights_path=path, wait=False)
    error = await _expect_refused(api, job_body(source={"model_id": model["id"]}), status=409,
                                  field="source.model_id", text="is still being created")
    assert error["code"] == "model_not_ready"


async def test_unknown_or_broken_calibration_dataset(api, bucket, tiny_model):
    source = {"model_id": tiny_model["id"]}
    await _expect_refused(api, job_body(source=source, calibration_dataset=f"{bucket}/nope/calib.jsonl"),
                          status=400, field="calibration_dataset", text="does not exist", code="dataset_not_found")
    await _expect_refused(api, job_body(source=source, calibration_dataset="someone-elses-bucket/calib.jsonl"),
                          status=400, field="calibration_dataset", text="bucket 'someone-elses-bucket' does not exist")
    broken = b'{"text": "fine line of calibration text"}\n{"text": oops}\n'
    assert (await api.put(f"/api/v1/storage/objects/{bucket}/calib/broken.jsonl", content=broken)).status_code == 201
    await _expect_refused(api, job_body(source=source, calibration_dataset=f"{bucket}/calib/broken.jsonl"),
                          status=400, field="calibration_dataset", text="broken.jsonl line 2: malformed JSON",
                          code="invalid_dataset")
    assert (await api.put(f"/api/v1/storage/objects/{bucket}/calib/c.csv", content=b"a,b")).status_code == 201
    await _expect_refused(api, job_body(source=source, calibration_dataset=f"{bucket}/calib/c.csv"),
                          status=400, field="calibration_dataset", text="must be a .txt, .jsonl, .json file")


async def test_output_name_already_taken(api, tiny_model):
    await _expect_refused(api, job_body(source={"model_id": tiny_model["id"]}, output_model_name="compress-api-tiny"),
                          status=409, field="output_model_name", text="already exists")


# ---- duration estimate (table 7-4) --------------------------------------------------------------------

async def test_duration_estimate_before_submission(api, tiny_model):
    r = await api.post("/api/v1/compression-jobs/estimate",
                       json={"source": {"template_id": "llama2-7b"}, "strategy": "smoothquant-w8a8"})
    assert r.status_code == 200, r.text
    assert r.json()["estimate"] == {"min_minutes": 5, "max_minutes": 10, "text": "5~10 minutes", "basis": "table 7-4"}
    r = await api.post("/api/v1/compression-jobs/estimate",
                       json={"source": {"template_id": "llama2-70b"}, "strategy": "awq-w4a16"})
    assert r.json()["estimate"]["text"] == "3 hours"
    # Not in the table: scaled from this platform's measurement, from the model's own size.
    r = await api.post("/api/v1/compression-jobs/estimate",
                       json={"source": {"model_id": tiny_model["id"]}, "strategy": "awq-w4a16"})
    small = r.json()["estimate"]
    assert small["basis"] == "measured" and small["max_minutes"] < 1
    r = await api.post("/api/v1/compression-jobs/estimate",
                       json={"source": {"template_id": "smollm2-135m-instruct"}, "strategy": "awq-w4a16"})
    smol = r.json()["estimate"]
    assert smol["basis"] == "measured" and smol["max_minutes"] > small["max_minutes"]
    r = await api.post("/api/v1/compression-jobs/estimate",
                       json={"source": {"template_id": "qwen2-72b"}, "strategy": "awq-w4a16"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "strategy"


async def test_strategies_listing(api):
    r = await api.get("/api/v1/compression-strategies")
    assert r.status_code == 200
    assert r.json()["strategies"] == ["smoothquant-w8a8", "awq-w4a16"]
    assert r.json()["alpha"] == {"min": 0.0, "max": 1.0, "default": 0.5}


async def test_unknown_job_is_404(api):
    for method, url in (("GET", "/api/v1/compression-jobs/nope"), ("DELETE", "/api/v1/compression-jobs/nope"),
                        ("GET", "/api/v1/compression-jobs/nope/logs")):
        r = await api.request(method, url)
        assert r.status_code == 404 and "compression job 'nope'" in r.json()["error"]["message"]


async def test_tenant_isolation(anonymous):
    r = await anonymous.get("/api/v1/compression-jobs")
    assert r.status_code == 401


