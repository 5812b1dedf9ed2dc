"""My models through the real HTTP API, Kafka, MongoDB and S3 (no mocks)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.lib.mlkit.tiny import build_tiny_model
from services.registry.weight_checks import MSG_GENERATION_CONFIG as GENERATION_CONFIG_ERROR
from services.registry.weight_checks import MSG_QUANT_EXTRA as QUANT_EXTRA_ERROR
from services.registry.weight_checks import MSG_STRUCTURE as STRUCTURE_ERROR
from services.registry.weight_checks import MSG_USER_CONFIG as USER_CONFIG_ERROR
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
async def bucket(api) -> str:
    me = (await api.get("/api/v1/auth/me")).json()
    return me["default_bucket"]


async def upload_folder(api, folder: Path, dest: str, *, edit: dict[str, str | None] | None = None) -> str:
    """PUT every file of ``folder`` under ``dest``; ``edit`` replaces (or, with None, drops) files by name."""
    edit = edit or {}
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        if file.name in edit and edit[file.name] is None:
            continue
        body = edit[file.name].encode() if file.name in edit else file.read_bytes()
        r = await api.put(f"/api/v1/storage/objects/{dest}/{file.name}", content=body)
        assert r.status_code == 201, r.text
    return dest


async def settled_model(api, model_id: str) -> dict:
    async def done():
        model = (await api.get(f"/api/v1/models/{model_id}")).json()
        return model if model["status"] != "creating" else None
    return await wait_for(done, timeout=120)


async def create(api, **body) -> dict:
    r = await api.post("/api/v1/models", json={"template_id": "qwen2-custom", **body})
    assert r.status_code == 201, r.text
    return r.json()


async def test_uploaded_tiny_weights_become_a_created_model(api, bucket, tiny_folder, running_platform):
    path = await upload_folder(api, tiny_folder, f"{bucket}/tiny-ok")
    model = await create(api, name="tiny-qwen", description="tiny test model", weights_path=path)
    assert model["status"] == "creating" and model["versions"][0]["name"] == "V1"

    settled = await settled_model(api, model["id"])
    assert settled["status"] == "created", settled
    version = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()
    assert version["status"] == "created"
    [task] = version["tasks"]
    assert task["kind"] == "weight_validation" and task["status"] == "succeeded"
    assert task["checks"] and all(c["passed"] for c in task["checks"])
    # The platform keeps its own copy of the weights.
    store = running_platform["platform"].store
    from services.lib.common.objectstore import ObjectPath
    copied = await store.list(ObjectPath.parse(version["storage_uri"]), recursive=True)
    assert {Path(o.key).name for o in copied} >= {"config.json", "model.safetensors"}


async def test_a_validation_whose_request_was_lost_is_found_by_a_polling_worker(api, bucket, tiny_folder,
                                                                                running_platform):
    """The validation job is the truth, its request only a wake-up call: a job no event announces
    is still claimed (by the worker's poll) and settles its version."""
    from services.registry.models import MODELS, TASK_RECORDS, VERSIONS
    from services.registry.validation_jobs import JOBS

    platform = running_platform["platform"]
    path = await upload_folder(api, tiny_folder, f"{bucket}/tiny-lost")
    model = await create(api, name="tiny-lost", weights_path=path)
    assert (await settled_model(api, model["id"]))["status"] == "created"
    [job] = [j async for j in platform.mongo[JOBS].find({"model_id": model["id"]})]
    assert job["status"] == "completed" and job["attempt"] == 1
    # As if its request had never been delivered: waiting, with no event to wake anyone.
    await platform.mongo[MODELS].update_one({"_id": model["id"]}, {"$set": {"status": "creating"}})
    await platform.mongo[VERSIONS].update_one({"model_id": model["id"]}, {"$set": {"status": "creating"}})
    await platform.mongo[TASK_RECORDS].update_one({"_id": job["_id"]}, {"$set": {"status": "running"}})
    await platform.mongo[JOBS].update_one({"_id": job["_id"]}, {"$set": {"status": "waiting", "run": None}})

    assert (await settled_model(api, model["id"]))["status"] == "created"
    again = await platform.mongo[JOBS].find_one({"_id": job["_id"]})
    assert again["status"] == "completed" and again["attempt"] == 2
    [task] = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()["tasks"]
    assert task["status"] == "succeeded"


@pytest.mark.parametrize(("case", "edit", "message"), [
    ("no-config-json-content", {"config.json": "{not json"}, USER_CONFIG_ERROR),
    ("quantized", "quant", QUANT_EXTRA_ERROR),
    ("wrong-arch", "arch", STRUCTURE_ERROR),
    ("bad-generation-config", {"generation_config.json": "{oops"}, GENERATION_CONFIG_ERROR),
])
async def test_broken_weights_fail_with_the_guides_message(api, bucket, tiny_folder, case, edit, message):
    config = json.loads((tiny_folder / "config.json").read_text())
    if edit == "quant":
        edit = {"config.json": json.dumps({**config, "quantization_config": {"quant_method": "awq", "bits": 4}})}
    elif edit == "arch":
        edit = {"config.json": json.dumps({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})}
    path = await upload_folder(api, tiny_folder, f"{bucket}/broken-{case}", edit=edit)
    model = await create(api, name=f"broken-{case}", weights_path=path)
    settled = await settled_model(api, model["id"])
    assert settled["status"] == "failed"
    version = (await api.get(f"/api/v1/models/{model['id']}/versions/V1")).json()
    assert version["message"] == message
    assert version["tasks"][0]["status"] == "failed" and version["tasks"][0]["message"] == message


async def _count_models(api) -> int:
    return (await api.get("/api/v1/models")).json()["total"]


@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"name": "1starts-with-digit"}, "name", "must be 1-64 characters"),
    ({"name": "has space"}, "name", "start with a letter"),
    ({"name": "x" * 65}, "name", "1-64"),
    ({"name": ""}, "name", "1-64"),
    ({"name": "ok-name", "description": "d" * 101}, "description", "at most 100"),
    ({"name": "ok-name", "template_id": "no-such-template"}, "template_id", "not a model-square template"),
    ({"name": "ok-name", "weights_path": None}, "weights_path", "required"),
    ({"name": "ok-name", "weights_path": "BUCKET/does-not-exist"}, "weights_path", "does not exist"),
    ({"name": "ok-name", "weights_path": "someone-elses-bucket/x"}, "weights_path", "does not exist"),
    ({"name": "ok-name", "unknown": 1}, "unknown", "not a known field"),
])
async def test_bad_create_requests_name_the_field_and_leave_nothing(api, bucket, tiny_folder, body, field, fragment):
    await upload_folder(api, tiny_folder, f"{bucket}/tiny-for-errors")
    before = await _count_models(api)
    payload = {"template_id": "qwen2-custom", "weights_path": f"{bucket}/tiny-for-errors", **body}
    if isinstance(payload.get("weights_path"), str):
        payload["weights_path"] = payload["weights_path"].replace("BUCKET", bucket)
    r = await api.post("/api/v1/models", json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == field and fragment in error["message"], error
    assert await _count_models(api) == before


async def test_a_folder_that_is_not_hf_format_is_refused(api, bucket):
    r = await api.put(f"/api/v1/storage/objects/{bucket}/not-hf/readme.txt", content=b"hello")
    assert r.status_code == 201
    r = await api.post("/api/v1/models", json={"name": "not-hf", "template_id": "qwen2-custom",
                                               "weights_path": f"{bucket}/not-hf"})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "weights_path" and "Hugging Face" in r.json()["error"]["message"]


async def test_malformed_json_and_oversized_bodies(api):
    r = await api.post("/api/v1/models", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = await api.post("/api/v1/models", content=b"{" + b" " * 2_000_000 + b"}",
                       headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_duplicate_name_is_a_conflict(api, bucket, tiny_folder):
    path = await upload_folder(api, tiny_folder, f"{bucket}/tiny-dup")
    await create(api, name="dup-name", weights_path=path, validate_weights=False)
    r = await api.post("/api/v1/models", json={"name": "dup-name", "template_id": "qwen2-custom", "weights_path": path})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"


async def test_versions_are_numbered_and_capped_at_ten(api, bucket, tiny_folder, running_platform):
    path = await upload_folder(api, tiny_folder, f"{bucket}/tiny-versions")
    model = await create(api, name="versioned", weights_path=path, validate_weights=False)
    for expected in range(2, 11):
        r = await api.post(f"/api/v1/models/{model['id']}/versions",
                           json={"weights_path": path, "validate_weights": False, "description": f"v{expected}"})
        assert r.status_code == 201, r.text
        assert r.json()["number"] == expected and r.json()["base_version"] == expected - 1
    r = await api.post(f"/api/v1/models/{model['id']}/versions", json={"weights_path": path})
    assert r.status_code == 409 and r.json()["error"]["code"] == "version_limit"
    detail = (await api.get(f"/api/v1/models/{model['id']}")).json()
    assert [v["number"] for v in detail["versions"]] == list(range(1, 11))

    # A job's checkpoint asking for an 11th version is refused too, and the job hears why.
    from contracts.events import ModelArtifactProduced
    tenant = (await api.get("/api/v1/auth/me")).json()["tenant_id"]
    async with running_platform["platform"].uow() as uow:
        uow.emit(ModelArtifactProduced(task_id="convert-11", task_kind="tuning", target="new_version",
                                       model_id=model["id"], template_id="qwen2-custom", validate_weights=False,
                                       weights_uri=f"s3://{path}/"),
                 tenant_id=tenant, subject="tuning-jobs/convert-11")

    async def rejection():
        r = await api.get("/api/v1/events",
                          params={"subject": "tuning-jobs/convert-11", "type": "ModelArtifactRejected"})
        return r.json()["items"]
    [event] = await wait_for(rejection)
    assert event["data"]["reason"] == ("model_id: model 'versioned' already has 10 versions, the most a model may "
                                       "have; delete one and convert again")
    assert (await api.get(f"/api/v1/models/{model['id']}")).json()["version_count"] == 10


async def test_a_model_with_task_records_cannot_be_deleted_until_they_go(api, bucket, tiny_folder, running_platform):
    from contracts.events import TaskRecordChanged

    platform = running_platform["platform"]
    path = await upload_folder(api, tiny_folder, f"{bucket}/tiny-delete")
    model = await create(api, name="in-use", weights_path=path)
    settled = await settled_model(api, model["id"])
    version_id = settled["versions"][0]["id"]
    tenant = (await api.get("/api/v1/auth/me")).json()["tenant_id"]

    async def announce(removed: bool):
        # What the tuning service will publish when a job uses this version (through Kafka).
        async with platform.uow() as uow:
            uow.emit(TaskRecordChanged(task_id="tune-1", task_kind="tuning", task_name="my-lora-job",
                                       model_id=model["id"], version_id=version_id, status="running",
                                       removed=removed), tenant_id=tenant, subject="tuning-jobs/tune-1")

    await announce(False)

    async def has_tuning_record():
        v = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()
        return any(t["kind"] == "tuning" for t in v["tasks"])
    await wait_for(has_tuning_record)
    r = await api.delete(f"/api/v1/models/{model['id']}")
    assert r.status_code == 409 and "my-lora-job" in r.json()["error"]["message"]

    await announce(True)

    async def deletable():
        return (await api.delete(f"/api/v1/models/{model['id']}")).status_code == 204
    await wait_for(deletable)
    assert (await api.get(f"/api/v1/models/{model['id']}")).status_code == 404

    from services.lib.common.objectstore import ObjectPath

    async def objects_gone():
        left = await platform.store.list(ObjectPath.parse(settled["versions"][0]["storage_uri"]), recursive=True)
        return not left
    await wait_for(objects_gone)


async def test_tenants_do_not_see_each_others_models(api, anonymous, bucket, tiny_folder):
    path = await upload_folder(api, tiny_folder, f"{bucket}/tiny-tenant")
    model = await create(api, name="private-model", weights_path=path, validate_weights=False)
    r = await api.post("/api/v1/users", json={"username": "bob", "password": "bob-secret-pw"})
    assert r.status_code == 201
    token = (await anonymous.post("/api/v1/auth/login", json={"username": "bob", "password": "bob-secret-pw"})).json()["token"]
    bob = {"Authorization": f"Bearer {token}"}
    assert (await anonymous.get(f"/api/v1/models/{model['id']}", headers=bob)).status_code == 404
    assert all(m["id"] != model["id"] for m in (await anonymous.get("/api/v1/models", headers=bob)).json()["items"])
    # Nor may bob point a model at the admin's bucket.
    r = await anonymous.post("/api/v1/models", headers=bob, json={"name": "steal", "template_id": "qwen2-custom",
                                                                  "weights_path": path})
    assert r.status_code == 400 and r.json()["error"]["field"] == "weights_path"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
async def test_missing_or_invalid_token_is_401(anonymous, headers):
    r = await anonymous.get("/api/v1/models", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_model_square_lists_and_filters_templates(api):
    everything = (await api.get("/api/v1/templates")).json()
    assert everything["total"] >= 40
    lora_zh = (await api.get("/api/v1/templates", params={"task": "lora", "language": "zh"})).json()["items"]
    assert lora_zh and all("lora" in t["tasks"]["tune"] and "zh" in t["languages"] for t in lora_zh)
    detail = (await api.get("/api/v1/templates/qwen2-7b")).json()
    assert detail["name"] == "Qwen2-7B" and detail["recommended_qps"]
    assert (await api.get("/api/v1/templates/nope")).status_code == 404
    assert (await api.get("/api/v1/templates", params={"task": "dance"})).status_code == 400


@pytest.mark.slow
async def test_preset_smollm2_is_listed_and_becomes_a_model_without_upload(api):
    async def ready():
        t = (await api.get("/api/v1/templates/smollm2-135m-instruct")).json()
        state = t["preset_weights"]["state"]
        assert state["status"] != "failed", state
        return state["status"] == "ready"
    await wait_for(ready, timeout=300, interval=2)
    r = await api.post("/api/v1/models", json={"name": "my-smollm2", "template_id": "smollm2-135m-instruct",
                                               "weights_source": "preset"})
    assert r.status_code == 201, r.text
    settled = await settled_model(api, r.json()["id"])
    assert settled["status"] == "created", settled


async def test_a_jobs_artifact_becomes_a_deploy_only_model_and_then_a_version(api, tiny_folder, running_platform):
    """What tuning and compression publish when they finish (ModelArtifactProduced), through Kafka."""
    from contracts.events import ModelArtifactProduced
    from services.lib.common.objectstore import ObjectPath

    platform = running_platform["platform"]
    tenant = (await api.get("/api/v1/auth/me")).json()["tenant_id"]
    await platform.store.ensure_bucket("maas-jobs")
    await platform.store.upload_folder(tiny_folder, ObjectPath("maas-jobs", "compress-1/out/"))

    async def publish(**fields):
        async with platform.uow() as uow:
            uow.emit(ModelArtifactProduced(task_id="compress-1", task_kind="compression", template_id="qwen2-custom",
                                           weights_uri="s3://maas-jobs/compress-1/out/", **fields),
                     tenant_id=tenant, subject="compression-jobs/compress-1")

    await publish(target="new_model", model_name="tiny-w4a16", quantization="awq-w4a16", validate_weights=False)

    async def created():
        items = (await api.get("/api/v1/models", params={"name": "tiny-w4a16"})).json()["items"]
        return items and items[0]["status"] == "created" and items[0]
    model = await wait_for(created)
    assert model["quantization"] == "awq-w4a16"

    await publish(target="new_version", model_id=model["id"], validate_weights=False)

    async def second_version():
        detail = (await api.get(f"/api/v1/models/{model['id']}")).json()
        return len(detail["versions"]) == 2 and detail["versions"][1]["status"] == "created"
    await wait_for(second_version)


async def test_an_artifact_the_registry_cannot_register_is_answered_with_the_reason(api, running_platform):
    """A version for a model that is gone, or a template nobody knows: the job hears why (ModelArtifactRejected)."""
    from contracts.events import ModelArtifactProduced

    platform = running_platform["platform"]
    tenant = (await api.get("/api/v1/auth/me")).json()["tenant_id"]
    cases = {"compress-gone": dict(target="new_version", model_id="0" * 32, template_id="qwen2-custom"),
             "compress-tpl": dict(target="new_model", model_name="never-made", template_id="no-such-template")}
    for task_id, fields in cases.items():
        async with platform.uow() as uow:
            uow.emit(ModelArtifactProduced(task_id=task_id, task_kind="compression", validate_weights=False,
                                           weights_uri=f"s3://maas-jobs/{task_id}/out/", **fields),
                     tenant_id=tenant, subject=f"compression-jobs/{task_id}")

    async def rejection(task_id: str):
        r = await api.get("/api/v1/events", params={"subject": f"compression-jobs/{task_id}",
                                                    "type": "ModelArtifactRejected"})
        items = r.json()["items"]
        return items[0]["data"] if items else None
    gone = await wait_for(lambda: rejection("compress-gone"))
    assert gone["reason"] == f"model_id: the model {'0' * 32} no longer exists"
    assert gone["task_kind"] == "compression" and gone["weights_uri"] == "s3://maas-jobs/compress-gone/out/"
    unknown = await wait_for(lambda: rejection("compress-tpl"))
    assert unknown["reason"] == "template_id: the template 'no-such-template' is unknown"
    assert (await api.get("/api/v1/models", params={"name": "never-made"})).json()["items"] == []
