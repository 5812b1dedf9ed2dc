"""The job engine, the same for every kind of job: a run whose worker dies (its task is gone without a
word, its job process killed) is found by the watchdog when its lease expires, re-queued, and
finished by another worker from where the kind resumes (tuning: the latest checkpoint; compression
and weight validation: the start)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from collections.abc import Awaitable, Callable

import pytest

from services.compression.worker import CompressionSettings, build_runner
from services.lib.jobs.runner import JobRunner, RunnerSettings
from services.registry import validation_jobs
from services.tuning.settings import TuningSettings
from services.tuning.worker import build_worker
from tests.integration.conftest import wait_for
from tests.integration.test_compression_api import bucket, job_body, tiny_folder, upload_folder  # noqa: F401
from tests.integration.test_compression_api import create_model as create_compression_source
from tests.integration.test_tuning_jobs import alpaca_rows, created, create_model, jsonl, put, upload_model
from tests.integration.test_tuning_jobs import job_body as tuning_body

pytestmark = pytest.mark.integration

# A worker that dies quickly: short lease, frequent heartbeats.
SHORT = {"lease_seconds": 3, "heartbeat_seconds": 0.5}


@dataclass
class Kind:
    name: str
    local: Callable[[dict], JobRunner]                # the test platform's runner of the kind
    doomed: Callable[[object], JobRunner]             # platform -> a runner that is about to die
    submit: Callable[..., Awaitable[dict]]            # (api, fixtures) -> the created job
    restarts: Callable[[dict], int]                   # how the kind counts a recovered run
    read: Callable[..., Awaitable[dict]]              # (api, platform, job_id) -> the job
    claims: Callable[..., Awaitable[list[str]]]       # (api, platform, job_id) -> its "claimed by" log lines


def _rest(path: str):
    """How a kind with a REST collection reads its jobs and their logs (as a user does)."""
    async def read(api, platform, job_id):
        return (await api.get(f"/api/v1/{path}/{job_id}")).json()

    async def claims(api, platform, job_id):
        r = await api.get(f"/api/v1/{path}/{job_id}/logs", params={"search": "claimed by worker"})
        return [i["line"] for i in r.json()["items"]]
    return {"read": read, "claims": claims}


async def _read_validation(api, platform, job_id):   # no REST collection: the registry's own jobs
    return await platform.mongo[validation_jobs.JOBS].find_one({"_id": job_id})


async def _validation_claims(api, platform, job_id):
    cursor = platform.mongo[validation_jobs.LOGS].find({"job_id": job_id, "line": {"$regex": "claimed by worker"}})
    return [d["line"] async for d in cursor.sort("seq", 1)]


class _Hangs:
    """The doomed validation worker's checks never end: it dies in the middle of them (a tiny model's
    real checks could finish before the test kills it)."""
    async def run(self, work, listener):
        await asyncio.Event().wait()

    def close(self):
        pass


async def _submit_validation(api, bucket, tiny_folder, running_platform, **_):  # noqa: F811
    path = await upload_folder(api, tiny_folder, f"{bucket}/engine-validate")
    r = await api.post("/api/v1/models", json={"name": "engine-validate", "template_id": "qwen2-custom",
                                               "weights_path": path})
    assert r.status_code == 201, r.text
    platform = running_platform["platform"]
    job = await wait_for(lambda: platform.mongo[validation_jobs.JOBS].find_one({"model_id": r.json()["id"]}))
    return {"id": job["_id"], "model_id": r.json()["id"]}


async def _submit_compression(api, bucket, tiny_folder, **_):  # noqa: F811
    path = await upload_folder(api, tiny_folder, f"{bucket}/engine-source")
    source_model = await create_compression_source(api, name="engine-source", weights_path=path)
    r = await api.post("/api/v1/compression-jobs", json=job_body(
        name="engine-recover", source={"model_id": source_model["id"]}, output_model_name="engine-recovered"))
    assert r.status_code == 201, r.text
    return r.json()


async def _submit_tuning(api, bucket, tmp_path_factory, **_):  # noqa: F811
    from services.lib.mlkit.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("engine") / "tiny")
    path = await upload_model(api, folder, f"{bucket}/engine-tiny")
    model = await created(api, (await create_model(api, name="engine-base", path=path))["id"])
    data = await put(api, f"{bucket}/engine/alpaca.jsonl", jsonl(alpaca_rows(64)))
    r = await api.post("/api/v1/tuning-jobs", json=tuning_body(
        model["id"], data, name="engine-recover", output_model_name="engine-tuned",
        hyperparameters={"epochs": 4, "checkpoint_count": 4}, auto_restart={"enabled": True, "max_restarts": 3}))
    assert r.status_code == 201, r.text
    return r.json()


KINDS = [
    Kind("compression", lambda platform: platform["app"].state.components["compression-worker"],
         lambda platform: build_runner(platform, CompressionSettings(**SHORT)), _submit_compression,
         lambda job: job["attempt"] - 1, **_rest("compression-jobs")),
    Kind("tuning", lambda platform: platform["app"].state.components["tuning-worker"].runner,
         lambda platform: build_worker(platform, TuningSettings(**SHORT)).runner, _submit_tuning,
         lambda job: job["restart_count"], **_rest("tuning-jobs")),
    Kind("weight-validation", lambda platform: platform["app"].state.components["registry-worker"],
         lambda platform: JobRunner(platform, validation_jobs.WeightValidations(platform, _Hangs()), RunnerSettings(
             lease_seconds=SHORT["lease_seconds"], heartbeat_seconds=SHORT["heartbeat_seconds"])),
         _submit_validation, lambda job: job["attempt"] - 1, _read_validation, _validation_claims),
]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_a_job_whose_worker_dies_is_recovered_by_the_watchdog_and_finished_elsewhere(
        kind, api, running_platform, bucket, tiny_folder, tmp_path_factory):  # noqa: F811
    platform = running_platform["platform"]
    local = kind.local(running_platform)
    local.draining = True                      # this process's worker steps aside while the doomed one works
    doomed = kind.doomed(running_platform["platform"])
    try:
        job = await kind.submit(api, bucket=bucket, tiny_folder=tiny_folder, tmp_path_factory=tmp_path_factory,
                                running_platform=running_platform)

        async def working_there():
            if job["id"] not in doomed.runs:
                await doomed.try_claim(job["id"])
            claims = await kind.claims(api, platform, job["id"])
            return job["id"] in doomed.runs and any(doomed.worker_id in line for line in claims)
        await wait_for(working_there, timeout=180)
        task = doomed.runs[job["id"]]
        task.cancel()                          # the worker is gone: no end recorded, no more heartbeats
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        local.draining = False
        local.nudge()

    async def finished_here():
        doc = await kind.read(api, platform, job["id"])
        assert doc["status"] != "failed", doc["status_message"]
        return doc if doc["status"] == "completed" else None
    doc = await wait_for(finished_here, timeout=300, interval=1)
    assert kind.restarts(doc) == 1
    assert any("stopped responding" in (h["message"] or "") for h in doc["history"]), doc["history"]
    claims = await kind.claims(api, platform, job["id"])
    assert doomed.worker_id in claims[0] and local.worker_id in claims[-1], claims
