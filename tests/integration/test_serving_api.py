"""Model services through the real HTTP API, Kafka, MongoDB, S3 and inference processes (no mocks).

The helpers at the top (a tiny model, a deployed service, an API key) are shared with the other
serving/OpenAI test modules; each thing they make is made once per test session.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.lib.common.objectstore import ObjectPath
from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

_MADE: dict[str, object] = {}   # session-wide: tiny models, services and keys made by the helpers


async def upload_folder(api, folder: Path, dest: str) -> str:
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        r = await api.put(f"/api/v1/storage/objects/{dest}/{file.relative_to(folder).as_posix()}",
                          content=file.read_bytes())
        assert r.status_code == 201, r.text
    return dest


async def tiny_model(api, tmp_root: Path, *, name: str = "tiny-serving", seed: int = 0) -> dict:
    """A created tiny Qwen2 model (template qwen2-custom); made once per name."""
    key = f"model:{name}"
    if key not in _MADE:
        bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
        folder = build_tiny_model(tmp_root / f"{name}-{seed}", seed=seed)
        path = await upload_folder(api, folder, f"{bucket}/serving-tests/{name}")
        r = await api.post("/api/v1/models", json={"name": name, "template_id": "qwen2-custom", "weights_path": path})
        assert r.status_code == 201, r.text
        _MADE[key] = await settled(api, f"/api/v1/models/{r.json()['id']}", lambda m: m["status"] != "creating")
        assert _MADE[key]["status"] == "created", _MADE[key]
    return _MADE[key]


def tiny_model_folder(tmp_root: Path, *, name: str = "tiny-serving", seed: int = 0) -> Path:
    """The files ``tiny_model`` uploaded for ``name``: the same bytes (it is seeded), built again here
    when another module made the model first from a folder of its own."""
    folder = tmp_root / f"{name}-{seed}"
    return folder if folder.is_dir() else build_tiny_model(folder, seed=seed)


async def add_version(api, tmp_root: Path, model: dict, *, seed: int) -> int:
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    folder = build_tiny_model(tmp_root / f"{model['name']}-v{seed}", seed=seed)
    path = await upload_folder(api, folder, f"{bucket}/serving-tests/{model['name']}-v{seed}")
    r = await api.post(f"/api/v1/models/{model['id']}/versions", json={"weights_path": path})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    await settled(api, f"/api/v1/models/{model['id']}/versions/{number}", lambda v: v["status"] == "created")
    return number


async def settled(api, url: str, done, *, timeout: float = 180) -> dict:
    async def check():
        r = await api.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        return body if done(body) else None
    return await wait_for(check, timeout=timeout)


async def wait_status(api, service_id: str, *statuses: str, timeout: float = 240) -> dict:
    return await settled(api, f"/api/v1/services/{service_id}", lambda s: s["status"] in statuses, timeout=timeout)


async def deploy(api, *, name: str, model_id: str, wait: bool = True, **extra) -> dict:
    r = await api.post("/api/v1/services", json={"name": name, "model_id": model_id, "qps_limit": 50, **extra})
    assert r.status_code == 201, r.text
    service = r.json()
    if wait:
        service = await wait_status(api, service["id"], "running", "failed")
        assert service["status"] == "running", service
    return service


async def tiny_service(api, tmp_root: Path) -> dict:
    """The shared running tiny service (1 instance, QPS 50, moderation on)."""
    if "service:main" not in _MADE:
        model = await tiny_model(api, tmp_root)
        _MADE["service:main"] = await deploy(api, name="tiny-main", model_id=model["id"])
    return _MADE["service:main"]


async def api_key(api) -> str:
    if "key" not in _MADE:
        r = await api.post("/api/v1/api-keys", json={"description": "serving tests"})
        assert r.status_code == 201, r.text
        _MADE["key"] = r.json()["key"]
    return _MADE["key"]


@pytest.fixture(scope="session")
def serving_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serving")


# ---------------------------------------------------------------------------------------------- tests

async def test_deploy_rejects_bad_input_naming_the_field(api, serving_tmp):
    model = await tiny_model(api, serving_tmp)
    cases = [
        ({"name": "1bad"}, "name"),
        ({"name": "has.dot"}, "name"),
        ({"description": "x" * 257}, "description"),
        ({"qps_limit": 0}, "qps_limit"),
        ({"instance_count": 0}, "instance_count"),
        ({"instance_spec": "gpu.huge"}, "instance_spec"),
        ({"content_moderation": False}, "body"),
        ({"notification": {"enabled": True}}, "notification"),
        ({"resource_pool": "mine"}, "resource_pool"),
    ]
    for change, field in cases:
        body = {"name": "ok-name", "model_id": model["id"], "qps_limit": 5, **change}
        r = await api.post("/api/v1/services", json=body)
        assert r.status_code == 400, (change, r.text)
        error = r.json()["error"]
        assert error["field"].startswith(field), (change, error)
    r = await api.post("/api/v1/services", json={"name": "x1", "model_id": "nope", "qps_limit": 5})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.post("/api/v1/services", json={"name": "smollm2-135m-instruct", "model_id": model["id"],
                                                 "qps_limit": 5})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"
    assert (await api.get("/api/v1/services", params={"name": "ok-name"})).json()["total"] == 0


async def test_a_model_still_validating_cannot_be_deployed(api, running_platform):
    platform = running_platform["platform"]
    me = (await api.get("/api/v1/auth/me")).json()
    now = datetime.now(UTC)
    await platform.mongo["models"].insert_one({
        "_id": "validating-model", "tenant_id": me["tenant_id"], "name": "still-validating", "description": "",
        "template_id": "qwen2-custom", "status": "creating", "version_count": 1, "latest_version": 1,
        "created_at": now, "updated_at": now})
    await platform.mongo["model_versions"].insert_one({
        "_id": "validating-v1", "tenant_id": me["tenant_id"], "model_id": "validating-model", "number": 1,
        "status": "creating", "source_uri": "s3://x/y/", "validate_weights": True, "created_at": now,
        "updated_at": now})
    r = await api.post("/api/v1/services", json={"name": "too-early", "model_id": "validating-model", "qps_limit": 5})
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_not_ready", r.text


async def test_recommended_instance_count_is_qps_over_the_templates_single_instance_qps(api):
    r = await api.get("/api/v1/services/recommendation", params={"template_id": "qwen2-0.5b", "qps": 20})
    assert r.status_code == 200
    assert r.json()["recommended_qps_per_instance"] == 9 and r.json()["recommended_instance_count"] == 3
    r = await api.get("/api/v1/services/recommendation", params={"template_id": "qwen2-0.5b", "qps": 0})
    assert r.status_code == 400 and r.json()["error"]["field"] == "qps"
    specs = (await api.get("/api/v1/services/instance-specs")).json()
    assert "cpu.1u4g" in [s["id"] for s in specs["items"]] and specs["resource_pools"] == ["public", "dedicated"]


async def test_service_lifecycle_details_events_logs_auto_stop_and_task_record(api, running_platform, serving_tmp):
    from services.serving.service import sweep_auto_stop

    platform = running_platform["platform"]
    model = await tiny_model(api, serving_tmp)
    service = await deploy(api, name="tiny-lifecycle", model_id=model["id"], description="lifecycle test",
                           auto_stop={"enabled": True, "hours": 1}, wait=False)
    assert service["status"] == "deploying" and service["content_moderation"] is True
    assert service["api_base"] == f"/v1/infers/{service['id']}/v1" and service["call_model"] == "tiny-lifecycle"
    assert service["stop_at"] is None   # the running time counts from when it runs
    service = await wait_status(api, service["id"], "running", "failed")
    assert service["status"] == "running" and service["ready_instances"] == 1, (service["message"], service)
    assert [i["status"] for i in service["instances"]] == ["ready"]
    stop_at = datetime.fromisoformat(service["stop_at"])
    assert timedelta(minutes=59) < stop_at - datetime.now(UTC) <= timedelta(hours=1)

    # The registry shows the deployment as a task record of the version it serves.
    await settled(api, f"/api/v1/models/{model['id']}/versions/1",
                  lambda v: any(t["kind"] == "deployment" and t["id"] == service["id"] and t["status"] == "running"
                                for t in v["tasks"]))
    r = await api.delete(f"/api/v1/models/{model['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_in_use"

    # Logs of the instance are searchable.
    logs = await settled(api, f"/api/v1/services/{service['id']}/logs?search=uvicorn+running",
                         lambda body: len(body["items"]) == 1, timeout=30)
    assert "uvicorn running" in logs["items"][0]["line"].lower()

    # Auto-stop: nothing before the time, a stop after it.
    assert await sweep_auto_stop(platform, now=stop_at - timedelta(minutes=1)) == 0
    assert await sweep_auto_stop(platform, now=stop_at + timedelta(seconds=1)) == 1
    stopped = await wait_status(api, service["id"], "stopped")
    assert stopped["instances"] == [] and stopped["ready_instances"] == 0 and stopped["stop_at"] is None

    # A stopped service cannot be scaled or stopped again; start brings it back, stop stops it.
    r = await api.put(f"/api/v1/services/{service['id']}/instance-count", json={"instance_count": 3})
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_service_state"
    assert (await api.post(f"/api/v1/services/{service['id']}/stop")).status_code == 409
    r = await api.post(f"/api/v1/services/{service['id']}/start")
    assert r.status_code == 200 and r.json()["status"] == "deploying"
    assert (await wait_status(api, service["id"], "running"))["ready_instances"] == 1

    # QPS and moderation changes apply to a running service.
    r = await api.put(f"/api/v1/services/{service['id']}/qps", json={"qps_limit": 7})
    assert r.status_code == 200 and r.json()["qps_limit"] == 7
    r = await api.put(f"/api/v1/services/{service['id']}/moderation", json={"enabled": False})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    r = await api.put(f"/api/v1/services/{service['id']}/moderation",
                      json={"enabled": False, "confirm_moderation_off": True})
    assert r.status_code == 200 and r.json()["content_moderation"] is False

    r = await api.post(f"/api/v1/services/{service['id']}/stop")
    assert r.status_code == 200 and r.json()["status"] == "stopping"
    await wait_status(api, service["id"], "stopped")
    events = (await api.get(f"/api/v1/services/{service['id']}/events")).json()["items"]
    kinds = [e["kind"] for e in events]
    assert {"deploy", "stop", "start", "status", "instance", "qps", "moderation"} <= set(kinds)
    assert any(e["message"] == "deploying -> running" for e in events)
    assert any("auto-stop" in e["message"] for e in events)

    # Delete removes the service and its task record.
    assert (await api.delete(f"/api/v1/services/{service['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/services/{service['id']}")).status_code == 404

    async def gone():
        version = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()
        return not any(t["id"] == service["id"] for t in version["tasks"])
    await wait_for(gone, timeout=60)


async def test_deleting_a_running_service_stops_its_instances(api, running_platform, serving_tmp):
    platform = running_platform["platform"]
    model = await tiny_model(api, serving_tmp)
    service = await deploy(api, name="tiny-deleted", model_id=model["id"], wait=False)
    await settled(api, f"/api/v1/services/{service['id']}", lambda s: s["instances"])  # an instance is starting
    assert (await api.delete(f"/api/v1/services/{service['id']}")).status_code == 204

    async def gone():
        return await platform.mongo["service_instances"].count_documents({"service_id": service["id"]}) == 0
    await wait_for(gone, timeout=120)


async def test_the_onnx_export_is_cached_in_object_storage(api, running_platform, serving_tmp):
    await tiny_service(api, serving_tmp)
    platform = running_platform["platform"]
    bucket = platform.settings.system_bucket

    async def cached():
        objects = await platform.store.list(ObjectPath(bucket, "onnx-cache/"), recursive=True)
        return [o.key for o in objects if o.key.endswith("onnx_export.json")]
    assert await wait_for(cached, timeout=60)


async def test_upgrade_rolls_to_another_version_while_answering(api, running_platform, serving_tmp):
    import httpx

    model = await tiny_model(api, serving_tmp, name="tiny-upgrade")
    service = await deploy(api, name="tiny-upgrade-svc", model_id=model["id"])
    old_instances = {i["id"] for i in service["instances"]}
    number = await add_version(api, serving_tmp, model, seed=1)
    key = await api_key(api)
    failures, answered = [], 0
    stop = asyncio.Event()

    async def load():
        nonlocal answered
        async with httpx.AsyncClient(base_url=running_platform["url"], timeout=60,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            while not stop.is_set():
                r = await client.post(f"/v1/infers/{service['id']}/v1/chat/completions",
                                      json={"model": service["name"], "max_tokens": 2,
                                            "messages": [{"role": "user", "content": "hi"}]})
                if r.status_code == 200:
                    answered += 1
                else:
                    failures.append(r.text)
                await asyncio.sleep(0.05)

    loader = asyncio.create_task(load())
    r = await api.post(f"/api/v1/services/{service['id']}/upgrade", json={"version": 1})
    assert r.status_code == 400 and r.json()["error"]["field"] == "version"
    r = await api.post(f"/api/v1/services/{service['id']}/upgrade", json={"version": f"V{number}"})
    assert r.status_code == 200 and r.json()["operation"] == "upgrading", r.text

    def upgraded(s):
        return (s["status"] == "running" and s["version_number"] == number and len(s["instances"]) == 1
                and not {i["id"] for i in s["instances"]} & old_instances and s["operation"] is None)
    done = await settled(api, f"/api/v1/services/{service['id']}", upgraded, timeout=240)
    assert [(i["version_id"], i["version_number"]) for i in done["instances"]] == [(done["version_id"], number)]
    stop.set()
    await loader
    assert failures == [] and answered > 0
    await api.delete(f"/api/v1/services/{service['id']}")
