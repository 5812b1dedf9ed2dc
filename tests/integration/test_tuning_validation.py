"""Bad tuning requests through the real API: a clear error naming the field (and the dataset line),
the right status, and no job or compute left behind."""
from __future__ import annotations

import csv
import io
import json

import pytest

from services.lib.common.objectstore import ObjectPath
from services.lib.mlkit.tiny import build_tiny_model
from services.tuning import datasets
from services.tuning.models import MANAGED_BUCKET
from tests.integration.test_tuning_jobs import (alpaca_rows, create_model, created, job_body, jsonl, put,
                                                upload_model)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def bucket(api) -> str:
    return (await api.get("/api/v1/auth/me")).json()["default_bucket"]


@pytest.fixture(scope="module")
async def tiny_path(api, bucket, tmp_path_factory) -> str:
    folder = build_tiny_model(tmp_path_factory.mktemp("tune-bad") / "tiny")
    return await upload_model(api, folder, f"{bucket}/tune-bad-tiny")


@pytest.fixture(scope="module")
async def model(api, tiny_path) -> dict:
    return await created(api, (await create_model(api, name="tune-bad-base", path=tiny_path))["id"])


@pytest.fixture(scope="module")
async def good_data(api, bucket) -> str:
    return await put(api, f"{bucket}/tune-bad/good.jsonl", jsonl(alpaca_rows(64)))


async def job_count(api) -> int:
    return (await api.get("/api/v1/tuning-jobs")).json()["total"]


async def refused(api, body: dict, *, status: int = 400) -> dict:
    before = await job_count(api)
    r = await api.post("/api/v1/tuning-jobs", json=body)
    assert r.status_code == status, r.text
    assert await job_count(api) == before   # nothing half-written
    return r.json()["error"]


def table(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


GOOD = json.dumps(alpaca_rows(1)[0])
SHAREGPT_OK = json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
SHAREGPT_BAD = json.dumps({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]})


@pytest.mark.parametrize(("case", "filename", "content", "changes", "lines", "fragment"), [
    ("malformed", "m.jsonl", jsonl([GOOD, '{"instruction": "x",', GOOD, "nope"]), {}, [2, 4], "malformed JSON"),
    ("missing", "f.jsonl", jsonl([GOOD, GOOD, json.dumps({"instruction": "q"})]), {}, [3], "missing field 'output'"),
    ("role-order", "s.jsonl", jsonl([SHAREGPT_OK, SHAREGPT_BAD]), {"dataset_format": "sharegpt"}, [2, 2],
     "odd positions must be human or observation"),
    ("empty", "e.csv", table([["conversation_id", "human", "assistant"], [1, "q", "a"], [2, "", "a"]]), {}, [3],
     "'human' must not be empty"),
    ("non-positive", "n.csv", table([["conversation_id", "human", "assistant"], [0, "q", "a"], [1, "q", "a"]]), {},
     [2], "'conversation_id' must be a positive integer"),
    ("empty-moss", "e.jsonl", jsonl([json.dumps({"conversation_id": 1, "chat": {"turn_1": {"Human": "q", "MOSS": ""}}})]),
     {"dataset_format": "moss"}, [1], "'chat.turn_1.MOSS' must not be empty"),
    # Issue 14.4: a .jsonl file is streamed; one line is what the API holds, so a line has a cap.
    ("line-too-long", "l.jsonl", jsonl([GOOD, GOOD, json.dumps({"instruction": "q" * 2 ** 20, "output": "a"}), GOOD]),
     {}, [3], "is longer than 1048576 bytes, the most one sample line may have"),
])
async def test_every_dataset_rule_names_the_line(api, bucket, model, case, filename, content, changes, lines,
                                                 fragment):
    path = await put(api, f"{bucket}/tune-bad/{case}/{filename}", content)
    error = await refused(api, job_body(model["id"], path, name=f"bad-{case}", output_model_name=f"bad-{case}-out",
                                        **changes))
    assert error["code"] == "invalid_dataset" and error["field"] == "dataset_path"
    assert [d["line"] for d in error["details"]] == lines
    assert fragment in error["details"][0]["message"]
    assert f"line {lines[0]}: " in error["message"]


async def test_a_format_the_tune_type_does_not_accept(api, bucket, model, good_data):
    path = await put(api, f"{bucket}/tune-bad/moss.jsonl", jsonl([json.dumps(
        {"conversation_id": 1, "chat": {"turn_1": {"Human": "q", "MOSS": "a"}}})]))
    error = await refused(api, job_body(model["id"], path, tune_type="pretrain", dataset_format="moss"))
    assert error["field"] == "dataset_format" and "not accepted for incremental pretraining" in error["message"]
    sft = await refused(api, job_body(model["id"], good_data, tune_type="pretrain"))
    assert sft["code"] == "invalid_dataset" and "missing field 'text'" in sft["details"][0]["message"]


async def test_a_tune_type_the_template_does_not_support(api, tiny_path, good_data):
    # Qwen2-7B supports full and LoRA tuning only (table 6-1).
    other = await created(api, (await create_model(api, name="tune-bad-qwen2-7b", path=tiny_path,
                                                   template_id="qwen2-7b", validate=False))["id"])
    error = await refused(api, job_body(other["id"], good_data, tune_type="pretrain"))
    assert error["field"] == "tune_type" and "not supported by template 'Qwen2-7B'" in error["message"]
    assert "supported: full, lora" in error["message"]


async def test_a_compressed_model_is_deploy_only(api, tiny_path, good_data):
    awq = await created(api, (await create_model(api, name="tune-bad-awq", path=tiny_path,
                                                 template_id="qwen2-7b-awq", validate=False))["id"])
    error = await refused(api, job_body(awq["id"], good_data))
    assert error["field"] == "source.model_id" and "can only be deployed" in error["message"]


@pytest.mark.parametrize(("hyperparameters", "field", "fragment"), [
    ({"learning_rate": 0.2}, "hyperparameters.learning_rate", "must be in (0, 0.1]"),
    ({"learning_rate": 0}, "hyperparameters.learning_rate", "must be in (0, 0.1]"),
    ({"epochs": 0}, "hyperparameters.epochs", ">= 1"),
    ({"epochs": 60000}, "hyperparameters.epochs", "120000 iterations; at most 100000"),
    ({"epochs": 20, "checkpoint_count": 11}, "hyperparameters.checkpoint_count", "between 1 and 10"),
    ({"epochs": 1, "checkpoint_count": 3}, "hyperparameters.checkpoint_count", "between 1 and 2"),
])
async def test_out_of_range_hyperparameters(api, model, good_data, hyperparameters, field, fragment):
    error = await refused(api, job_body(model["id"], good_data, hyperparameters=hyperparameters))
    assert error["field"] == field and fragment in error["message"], error


@pytest.mark.parametrize(("changes", "field", "fragment"), [
    ({"name": "has.dot"}, "name", "must be 1-64 characters"),
    ({"description": "d" * 1001}, "description", "1000"),
    ({"auto_restart": {"enabled": True, "max_restarts": 129}}, "auto_restart", "between 1 and 128"),
    ({"node_count": 3}, "node_count", "cannot share a global batch of 32"),
    ({"flavor": "tpu.9"}, "flavor", "not a known flavor"),
    ({"permanent_log": {"enabled": True}}, "permanent_log", "path is required"),
    ({"output_model_name": "tune-bad-base"}, "output_model_name", "already exists"),
    ({"output_path": "someone-elses-bucket/out"}, "output_path", "does not exist"),
    ({"sample_count": 65}, "sample_count", "the dataset has 64 samples, not 65"),
])
async def test_other_bad_settings(api, model, good_data, changes, field, fragment):
    status = 409 if field == "output_model_name" else 400
    error = await refused(api, job_body(model["id"], good_data, **changes), status=status)
    assert error["field"] == field and fragment in error["message"], error


async def test_a_missing_dataset_file(api, bucket, model):
    error = await refused(api, job_body(model["id"], f"{bucket}/tune-bad/nowhere.jsonl"))
    assert error["field"] == "dataset_path" and "does not exist" in error["message"]
    error = await refused(api, job_body(model["id"], f"{bucket}/tune-bad/data.txt"))
    assert error["field"] == "dataset_path" and ".jsonl, .json, .csv or .xlsx" in error["message"]


async def test_a_streamed_dataset_counts_crlf_lines_after_a_bom_and_without_a_final_newline(api, bucket, model):
    rows = [json.dumps(r) for r in alpaca_rows(64)]
    path = await put(api, f"{bucket}/tune-bad/crlf.jsonl", b"\xef\xbb\xbf" + "\r\n".join(rows).encode())
    error = await refused(api, job_body(model["id"], path, sample_count=65))
    assert error["field"] == "sample_count" and "the dataset has 64 samples, not 65" in error["message"]


async def test_a_file_read_whole_is_capped_pointing_at_jsonl(api, bucket, model, monkeypatch):
    """Issue 14.4: .json/.csv/.xlsx are read into memory, so they have a smaller cap than .jsonl."""
    monkeypatch.setattr(datasets, "MAX_WHOLE_FILE_BYTES", 4096)
    path = await put(api, f"{bucket}/tune-bad/big.json", json.dumps(alpaca_rows(64)).encode())
    error = await refused(api, job_body(model["id"], path))
    assert error["field"] == "dataset_path"
    assert "a .json file is read whole, so it may be at most" in error["message"]
    assert "Use .jsonl for larger files" in error["message"]


async def test_a_refused_job_leaves_no_examples_in_the_platform_bucket(api, running_platform, model, good_data):
    """The examples are uploaded while the file is validated: a later refusal removes them."""
    tenant = (await api.get("/api/v1/auth/me")).json()["tenant_id"]
    store = running_platform["platform"].store

    async def kept() -> list[str]:
        if not await store.bucket_exists(MANAGED_BUCKET):
            return []
        return sorted(o.key for o in await store.list(ObjectPath(MANAGED_BUCKET, f"{tenant}/"), recursive=True))

    before = await kept()
    await refused(api, job_body(model["id"], good_data, sample_count=65))
    await refused(api, job_body(model["id"], good_data, hyperparameters={"epochs": 1, "checkpoint_count": 3}))
    assert await kept() == before


async def test_a_dataset_smaller_than_one_global_batch(api, bucket, model):
    path = await put(api, f"{bucket}/tune-bad/small.jsonl", jsonl(alpaca_rows(20)))
    error = await refused(api, job_body(model["id"], path))
    assert error["field"] == "dataset_path"
    assert "has 20 samples, fewer than one global batch" in error["message"] and "32" in error["message"]


async def test_a_small_dataset_with_a_global_batch_that_fits(api, bucket, model, tiny_path):
    """Issue 20: 15 samples are fewer than the template's 32; the estimate says so before uploading, and
    a self-hosting template lets the job choose a global batch of at most 15."""
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"model_id": model["id"]}, "tune_type": "lora", "sample_count": 15})
    assert r.status_code == 200, r.text
    assert r.json()["global_batch_size"] == 32 and r.json()["global_batch_size_range"] == [1, 512]
    assert "fewer than one global batch" in r.json()["problem"] and "global_batch_size to 15" in r.json()["problem"]
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"model_id": model["id"]}, "tune_type": "lora", "sample_count": 15, "global_batch_size": 5})
    assert r.status_code == 200 and r.json()["problem"] is None and r.json()["iterations"] == 3

    path = await put(api, f"{bucket}/tune-bad/fifteen.jsonl", jsonl(alpaca_rows(15)))
    error = await refused(api, job_body(model["id"], path, hyperparameters={"global_batch_size": 600}))
    assert error["field"] == "hyperparameters.global_batch_size" and "between 1 and 512" in error["message"]
    r = await api.post("/api/v1/tuning-jobs", json=job_body(model["id"], path, name="small-batch",
                                                            output_model_name="small-batch-out",
                                                            hyperparameters={"global_batch_size": 5}))
    assert r.status_code == 201, r.text
    job = r.json()
    try:
        hp = job["hyperparameters"]
        assert hp["global_batch_size"] == 5 and hp["iterations"] == 9   # ceil(15 / 5) x 3 epochs
    finally:
        await api.delete(f"/api/v1/tuning-jobs/{job['id']}")

    fixed = await created(api, (await create_model(api, name="tune-bad-fixed-batch", path=tiny_path,
                                                   template_id="qwen2-7b", validate=False))["id"])
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"model_id": fixed["id"]}, "tune_type": "lora", "sample_count": 15, "global_batch_size": 5})
    assert r.status_code == 400 and r.json()["error"]["field"] == "global_batch_size"
    assert "fixed global batch of 32" in r.json()["error"]["message"]
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"model_id": fixed["id"]}, "tune_type": "lora", "sample_count": 15})
    assert "add samples" in r.json()["problem"] and r.json()["global_batch_size_range"] is None


async def test_a_model_that_is_still_validating(api, tiny_path, good_data):
    # Submit right after creating the model: weight validation takes longer than the request.
    for attempt in range(3):
        fresh = await create_model(api, name=f"tune-bad-validating-{attempt}", path=tiny_path)
        before = await job_count(api)
        r = await api.post("/api/v1/tuning-jobs", json=job_body(fresh["id"], good_data, name=f"early-{attempt}",
                                                                output_model_name=f"early-{attempt}-out"))
        if r.status_code == 201:   # validation won the race this time: not what this test is about
            await api.delete(f"/api/v1/tuning-jobs/{r.json()['id']}")
            continue
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "model_not_ready" and error["field"] == "source.model_id"
        assert "is still being created (weight validation running)" in error["message"]
        assert await job_count(api) == before
        return
    pytest.fail("the model was validated before every submission; could not observe the validating state")


async def test_estimate_before_submitting(api, tiny_path):
    other = await created(api, (await create_model(api, name="tune-est-qwen2-7b", path=tiny_path,
                                                   template_id="qwen2-7b", validate=False))["id"])
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"model_id": other["id"]}, "tune_type": "lora", "sample_count": 3200, "epochs": 2,
        "flavor": "ascend.2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["iterations"] == 200 and body["global_batch_size"] == 32
    coefficient = 32 * 4096 / 3600
    assert body["estimate"]["min_hours"] == pytest.approx(coefficient * 200 / (2 * 3500) + 0.15, abs=1e-3)
    assert body["estimate"]["max_hours"] == pytest.approx(coefficient * 200 / (2 * 2600) + 0.15, abs=1e-3)
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"template_id": "qwen2-72b-1k"}, "tune_type": "full", "sample_count": 1024, "epochs": 1})
    assert r.status_code == 400 and r.json()["error"]["field"] == "source.template_id"   # no preset weights
    r = await api.post("/api/v1/tuning-jobs/estimate", json={
        "source": {"template_id": "smollm2-135m-instruct"}, "tune_type": "lora", "sample_count": 50})
    assert r.status_code == 200 and r.json()["iterations"] == 2 and r.json()["estimate"]["prepost_hours"] == 0.15


async def test_the_estimate_is_stored_on_the_job(api, tiny_path, good_data):
    other = await created(api, (await create_model(api, name="tune-est-stored", path=tiny_path,
                                                   template_id="qwen2-7b", validate=False))["id"])
    r = await api.post("/api/v1/tuning-jobs", json=job_body(other["id"], good_data, name="with-estimate",
                                                            output_model_name="with-estimate-out"))
    assert r.status_code == 201, r.text
    job = r.json()
    try:
        assert job["estimate"]["iterations"] == 6 and job["estimate"]["throughput_high"] == 3500
        assert job["estimate"]["min_hours"] < job["estimate"]["max_hours"]
        assert (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()["estimate"] == job["estimate"]
    finally:
        await api.delete(f"/api/v1/tuning-jobs/{job['id']}")
