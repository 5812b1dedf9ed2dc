"""`maas backup` of a running platform's embedded data and `maas restore` into a fresh data folder
(issue 18, item 8): models, jobs, keys, notification rules, timelines and the objects' bytes come back,
the old tokens and keys still authenticate, and the restored platform works (a new model is created
from the restored weights, its events flow through the restored Kafka).

Private servers in tmp folders (not the session's), so that the restore target is really fresh."""
from __future__ import annotations

import asyncio
import json
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from contracts import new_id
from services.lib.common.objectstore import ObjectPath
from services.lib.common.settings import get_settings
from services.lib.embedded.servers import EmbeddedServers
from services.lib.mlkit.tiny import build_tiny_model
from tests.conftest import serve_platform
from tests.integration.cli_helpers import Maas
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@asynccontextmanager
async def _platform_on(data_dir: Path, work: Path):
    """Embedded servers on ``data_dir`` and every service on them, as `maas up` runs them."""
    servers = EmbeddedServers(data_dir)
    await asyncio.to_thread(servers.start)
    try:
        env = servers.settings_env()
        settings = get_settings().model_copy(update={
            "kafka_bootstrap": env["MAAS_KAFKA_BOOTSTRAP"], "mongo_url": env["MAAS_MONGO_URL"],
            "s3_endpoint": env["MAAS_S3_ENDPOINT"], "s3_access_key": env["MAAS_S3_ACCESS_KEY"],
            "s3_secret_key": env["MAAS_S3_SECRET_KEY"], "s3_secure": False, "work_dir": str(work)})
        async with serve_platform(settings) as running:
            yield running
    finally:
        await asyncio.to_thread(servers.stop)


def _client(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})


async def _create_model(api, bucket: str, name: str, folder: Path) -> dict:
    for f in sorted(folder.iterdir()):
        r = await api.put(f"/api/v1/storage/objects/{bucket}/{name}/{f.name}", content=f.read_bytes())
        assert r.status_code == 201, r.text
    r = await api.post("/api/v1/models", json={"name": name, "template_id": "qwen2-custom",
                                               "weights_path": f"{bucket}/{name}"})
    assert r.status_code == 201, r.text
    return r.json()


async def _timeline_done(api, model_id: str):
    """The model's timeline once the notifier consumed its change to "created"."""
    events = (await api.get(f"/api/v1/models/{model_id}/timeline")).json()["items"]
    return events if any(e["type"] == "ModelVersionStatusChanged" and e["kind"] == "completed" for e in events) \
        else None


async def _job_ended(api, job_id: str):
    job = (await api.get(f"/api/v1/compression-jobs/{job_id}")).json()
    return job if job["status"] in ("completed", "failed", "stopped") else None


async def test_backup_of_a_running_platform_restores_into_a_fresh_folder(tmp_path: Path) -> None:
    source, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    maas = Maas("http://127.0.0.1:9", tmp_path / "cli-config")   # backup/restore need no API
    folder = build_tiny_model(tmp_path / "tiny")

    async with _platform_on(source, tmp_path / "work-a") as running:
        token = running["admin"].token
        async with _client(running["url"], token) as api:
            bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
            model = await _create_model(api, bucket, "kept", folder)
            await wait_for(lambda: _timeline_done(api, model["id"]), timeout=180)
            r = await api.post("/api/v1/api-keys", json={"description": "survives a restore"})
            assert r.status_code == 201, r.text
            key = r.json()
            r = await api.post("/api/v1/notification-topics", json={"name": f"ops-{new_id()[:6]}"})
            assert r.status_code == 201, r.text
            r = await api.post("/api/v1/notification-rules", json={"topic_name": r.json()["name"], "subject": "*",
                                                                   "events": ["completed", "failed"]})
            assert r.status_code == 201, r.text
            rule = r.json()
            r = await api.post("/api/v1/compression-jobs", json={
                "name": "kept-job", "strategy": "awq-w4a16", "source": {"model_id": model["id"]},
                "output_model_name": "kept-w4"})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            # Stopped at once: a job that ran to its end costs minutes here and proves nothing more about a copy.
            r = await api.post(f"/api/v1/compression-jobs/{job_id}/stop")
            assert r.status_code in (200, 202, 409), r.text   # 409: it ended before the stop arrived
            job = await wait_for(lambda: _job_ended(api, job_id), timeout=300)
            weights = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
            models = {m["id"]: m["status"] for m in (await api.get("/api/v1/models")).json()["items"]}
            timeline = (await api.get(f"/api/v1/models/{model['id']}/timeline")).json()["items"]

            # While the platform runs (its consumers, relay and health probes keep writing).
            result = await maas("backup", str(dest), "--data-dir", str(source), "--quiet")
            assert result.code == 0, result.err
            assert "backed up" in result.out

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["format"] == "openmaas-backup" and manifest["format_version"] == 1
    assert manifest["mongo"]["maas"]["models"]["documents"] >= 1 and manifest["mongo"]["maas"]["api_keys"]["documents"] >= 1
    assert manifest["kafka_bucket"] in manifest["objects"] and bucket in manifest["objects"]
    kafka_keys = [json.loads(line)["key"] for line in
                  (dest / "objects" / f"{manifest['kafka_bucket']}.jsonl").read_text().splitlines()]
    assert any("/groups/consumers/maas." in k for k in kafka_keys)   # the services' committed offsets
    assert any(k.endswith(".batch") for k in kafka_keys) and any(k.endswith("/meta.json") for k in kafka_keys)

    # Refused: a data folder with data in it, and a manifest of a format version this code does not read.
    result = await maas("restore", str(dest), "--data-dir", str(source))
    assert result.code == 1 and "not empty" in result.err, result
    future = tmp_path / "future-backup"
    shutil.copytree(dest, future)
    (future / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    result = await maas("restore", str(future), "--data-dir", str(tmp_path / "never"))
    assert result.code == 1 and "format_version 99" in result.err, result
    assert not (tmp_path / "never").exists()

    result = await maas("restore", str(dest), "--data-dir", str(restored), "--quiet")
    assert result.code == 0, result.err
    assert "restored" in result.out

    async with _platform_on(restored, tmp_path / "work-b") as running:
        assert running["admin"] is None   # the admin came back with the users: no new one
        async with _client(running["url"], token) as api:   # the old session token still works
            listed = {m["id"]: m["status"] for m in (await api.get("/api/v1/models")).json()["items"]}
            assert {i: listed.get(i) for i in models} == models
            # (an event the notifier stored after the listing above and before the copy is there too)
            after = (await api.get(f"/api/v1/models/{model['id']}/timeline")).json()["items"]
            assert after[:len(timeline)] == timeline
            assert key["id"] in {k["id"] for k in (await api.get("/api/v1/api-keys")).json()["items"]}
            assert rule["id"] in {x["id"] for x in (await api.get("/api/v1/notification-rules")).json()["items"]}
            restored_job = (await api.get(f"/api/v1/compression-jobs/{job['id']}")).json()
            assert (restored_job["status"], restored_job["metrics"]) == (job["status"], job["metrics"])
            store = running["platform"].store
            for name, body in weights.items():
                assert await store.get_bytes(ObjectPath(bucket, f"kept/{name}")) == body, name

            # The key authenticates a /v1 call.
            async with _client(running["url"], key["key"]) as with_key:
                assert (await with_key.get("/v1/models")).status_code == 200

            # The services came back: a new model from the restored weights goes through the registry
            # worker and the notifier over the restored Kafka topics.
            r = await api.post("/api/v1/models", json={"name": "after-restore", "template_id": "qwen2-custom",
                                                       "weights_path": f"{bucket}/kept"})
            assert r.status_code == 201, r.text
            await wait_for(lambda: _timeline_done(api, r.json()["id"]), timeout=180)
