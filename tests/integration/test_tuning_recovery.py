"""Auto-restart: a worker process killed mid-job (kill -9) loses its lease; the watchdog re-queues the
job and another worker resumes it from the latest checkpoint, with the restart counted."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.integration.conftest import serve_process, wait_for
from tests.integration.test_tuning_jobs import (ITERATION, alpaca_rows, create_model, created, job_body, jsonl, put,
                                                upload_model)

pytestmark = pytest.mark.integration


def start_worker_process(platform_env: dict, work_dir, log_file) -> subprocess.Popen:
    """A second tuning worker, as production runs it: ``maas serve --services tuning-worker``."""
    env = {**platform_env, "MAAS_WORK_DIR": str(work_dir),
           # A short lease so that its death is noticed within seconds (long enough for a busy CI box).
           "MAAS_TUNING_LEASE_SECONDS": "8", "MAAS_TUNING_HEARTBEAT_SECONDS": "1", "MAAS_TUNING_POLL_SECONDS": "1"}
    return serve_process("tuning-worker", env, log_file)[0]


async def test_a_killed_workers_job_resumes_on_another_worker(api, platform_env, running_platform, tmp_path,
                                                              tmp_path_factory):
    from services.lib.mlkit.tiny import build_tiny_model

    local = running_platform["app"].state.components["tuning-worker"].runner
    local.draining = True           # this process's worker steps aside, so the other one takes the job
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:  # started first: it boots while the model is being prepared
        proc = start_worker_process(platform_env, tmp_path / "work", log_file)
    try:
        bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
        folder = build_tiny_model(tmp_path_factory.mktemp("recover") / "tiny")
        path = await upload_model(api, folder, f"{bucket}/recover-tiny")
        model = await created(api, (await create_model(api, name="tune-recover-base", path=path))["id"])
        data = await put(api, f"{bucket}/recover/alpaca.jsonl", jsonl(alpaca_rows(64)))
        job = (await api.post("/api/v1/tuning-jobs", json=job_body(
            model["id"], data, name="recover", output_model_name="recover-out",
            hyperparameters={"epochs": 20, "checkpoint_count": 10},
            auto_restart={"enabled": True, "max_restarts": 3}))).json()

        seen = {}

        async def checkpointed_elsewhere():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            doc = seen["job"] = (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()
            assert doc["status"] not in ("failed", "completed"), (doc["status_message"], doc["history"])
            return doc if doc["checkpoints"] and f":{proc.pid}:" in (doc["worker_id"] or "") else None
        try:
            await wait_for(checkpointed_elsewhere, timeout=300, interval=0.3)
        except AssertionError as timeout:   # say where the job stood and what the other worker printed
            doc = seen.get("job") or {}
            raise AssertionError(f"{timeout}; job: {({k: doc.get(k) for k in ('status', 'status_message', 'worker_id', 'queue', 'placement', 'progress')})}"
                                 f"; worker log: {log_path.read_text()[-2000:]}") from None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        local.draining = False
        local.nudge()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    async def resumed_here():
        doc = (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()
        assert doc["status"] != "failed", doc["status_message"]
        lines = [i["line"] for i in (await api.get(f"/api/v1/tuning-jobs/{job['id']}/logs",
                                                   params={"limit": 5000})).json()["items"]]
        marks = [k for k, line in enumerate(lines) if "resuming from the checkpoint at iteration" in line]
        after = [line for line in lines[marks[-1]:] if "lm loss" in line] if marks else []
        return (doc, lines, marks[-1]) if doc["worker_id"] == local.worker_id and after else None
    doc, lines, mark = await wait_for(resumed_here, timeout=120, interval=0.5)

    assert doc["restart_count"] == 1
    assert any("stopped responding" in h["message"] and h["status"] == "waiting"
               for h in doc["history"] if h["message"])
    resumed_from = int(lines[mark].split("iteration ")[1].split()[0])
    first_after = next(int(ITERATION.search(line).group(1)) for line in lines[mark:] if "lm loss" in line)
    assert resumed_from >= 1 and first_after == resumed_from + 1
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204


async def test_a_worker_shutting_down_hands_its_job_back(api, running_platform, tmp_path_factory):
    """Graceful shutdown: the run stops at a checkpoint and the job is re-queued, no restart counted."""
    from services.lib.mlkit.tiny import build_tiny_model
    from services.tuning.worker import build_worker

    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    folder = build_tiny_model(tmp_path_factory.mktemp("release") / "tiny")
    model = await created(api, (await create_model(api, name="tune-release-base",
                                                   path=await upload_model(api, folder, f"{bucket}/release-tiny")))["id"])
    data = await put(api, f"{bucket}/release/alpaca.jsonl", jsonl(alpaca_rows(64)))
    local = running_platform["app"].state.components["tuning-worker"].runner
    local.draining = True
    leaving = build_worker(running_platform["platform"]).runner   # a second worker, as another process runs it
    try:
        job = (await api.post("/api/v1/tuning-jobs", json=job_body(
            model["id"], data, name="release", output_model_name="release-out",
            hyperparameters={"epochs": 20, "checkpoint_count": 10}))).json()

        async def training_there():
            if job["id"] not in leaving.runs:
                await leaving.try_claim(job["id"])
            doc = (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()
            return doc if doc["progress"]["iteration"] >= 1 and doc["worker_id"] == leaving.worker_id else None
        await wait_for(training_there, timeout=120)
        await leaving.shutdown(grace_seconds=60)
    finally:
        local.draining = False
        local.nudge()
    released = (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()
    assert released["restart_count"] == 0 and released["status"] in ("waiting", "running")
    assert any("shutting down" in (h["message"] or "") for h in released["history"])
    saved = released["checkpoints"][-1]["iteration"]

    async def resumed_here():
        doc = (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()
        return doc if doc["worker_id"] == local.worker_id and doc["progress"]["iteration"] > saved else None
    await wait_for(resumed_here, timeout=120)
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204
