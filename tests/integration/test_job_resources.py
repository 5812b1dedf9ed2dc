"""One job resource layer for every kind of job (services.lib.jobs.resources), through the public HTTP API
on the real servers and workers: stop a running job, continue it, and it runs again to the end;
the status history and the events say so; a wrong transition is a 409 naming the rule; another
account's job is a 404 whatever the call. The use cases alone: tests/unit/test_job_resources.py."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.integration.conftest import signed_in_tenant, wait_for
from tests.integration.test_compression_api import bucket, job_body, tiny_folder, upload_folder  # noqa: F401
from tests.integration.test_compression_api import create_model as create_compression_source
from tests.integration.test_tuning_jobs import alpaca_rows, create_model, created, jsonl, put, upload_model
from tests.integration.test_tuning_jobs import job_body as tuning_body

pytestmark = pytest.mark.integration


@dataclass
class Kind:
    name: str
    path: str                                  # the REST collection
    label: str                                 # how messages name a job of the kind
    stoppable: str                             # the statuses a stop accepts, as messages list them
    resumed: str                               # where continue puts a stopped job
    stop_event: str
    request_event: str
    submit: Callable[..., Awaitable[dict]]     # (api, fixtures) -> the created job


async def _submit_compression(api, *, bucket, tiny_folder, **_):  # noqa: F811
    path = await upload_folder(api, tiny_folder, f"{bucket}/resources-source")
    source = await create_compression_source(api, name="resources-source", weights_path=path)
    r = await api.post("/api/v1/compression-jobs", json=job_body(
        name="resources-stop", source={"model_id": source["id"]}, output_model_name="resources-compressed"))
    assert r.status_code == 201, r.text
    return r.json()


async def _submit_tuning(api, *, bucket, tmp_path_factory, **_):  # noqa: F811
    from services.lib.mlkit.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("resources") / "tiny")
    path = await upload_model(api, folder, f"{bucket}/resources-tiny")
    model = await created(api, (await create_model(api, name="resources-base", path=path))["id"])
    data = await put(api, f"{bucket}/resources/alpaca.jsonl", jsonl(alpaca_rows(64)))
    r = await api.post("/api/v1/tuning-jobs", json=tuning_body(
        model["id"], data, name="resources-stop", output_model_name="resources-tuned",
        hyperparameters={"epochs": 4, "checkpoint_count": 4}))
    assert r.status_code == 201, r.text
    return r.json()


KINDS = [
    Kind("compression", "compression-jobs", "compression job", "pending or running", "pending",
         "CompressionStopped", "CompressionRequested", _submit_compression),
    Kind("tuning", "tuning-jobs", "tuning job", "creating, waiting or running", "creating",
         "TuneStopped", "TuneRequested", _submit_tuning),
]
COMPRESSION = KINDS[0]


async def job_in(api, kind: Kind, job_id: str, *statuses: str, timeout: float = 300, interval: float = 0.2) -> dict:
    async def reached():
        job = (await api.get(f"/api/v1/{kind.path}/{job_id}")).json()
        assert job["status"] != "failed" or "failed" in statuses, job["status_message"]
        return job if job["status"] in statuses else None
    return await wait_for(reached, timeout=timeout, interval=interval)


def statuses(job: dict) -> list[str]:
    return [h["status"] for h in job["history"]]


def conflict_message(r) -> str:
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_state", error
    return error["message"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_stop_continue_and_the_job_runs_again_to_its_end(kind, api, running_platform, bucket,  # noqa: F811
                                                              tiny_folder, tmp_path_factory):  # noqa: F811
    job = await kind.submit(api, bucket=bucket, tiny_folder=tiny_folder, tmp_path_factory=tmp_path_factory)
    url = f"/api/v1/{kind.path}/{job['id']}"
    await job_in(api, kind, job["id"], "running", timeout=180)

    # While it runs: it cannot be continued, and it can be stopped.
    message = conflict_message(await api.post(f"{url}/continue"))
    assert message == f"{kind.label} 'resources-stop' is running; only stopped jobs can be continued"
    r = await api.post(f"{url}/stop")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "stopped" and r.json()["status_message"] == "stopped by the user"
    message = conflict_message(await api.post(f"{url}/stop"))
    assert message == f"{kind.label} 'resources-stop' is stopped; only {kind.stoppable} jobs can be stopped"

    # Another account sees nothing of it, whatever it calls.
    async with signed_in_tenant(api, running_platform["url"], name=f"resources-{kind.name}") as other:
        for method, path in (("GET", url), ("POST", f"{url}/stop"), ("POST", f"{url}/continue"),
                             ("GET", f"{url}/logs"), ("GET", f"{url}/logs/download"), ("DELETE", url)):
            r = await other.request(method, path)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["message"] == f"{kind.label} '{job['id']}' does not exist"
        assert (await other.get(f"/api/v1/{kind.path}")).json()["total"] == 0

    # The worker ends its run and lets the job go; until then continue says to wait.
    async def continued():
        r = await api.post(f"{url}/continue")
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "still_stopping", r.text
            return None
        assert r.status_code == 200, r.text
        return r.json()
    resumed = await wait_for(continued, timeout=120, interval=0.5)
    assert resumed["status"] == kind.resumed
    # Nothing was recorded over "stopped" by the run that ended.
    assert statuses(resumed)[-3:] == ["running", "stopped", kind.resumed], resumed["history"]

    done = await job_in(api, kind, job["id"], "completed")
    history = statuses(done)
    assert history.count("running") == 2 and history[-1] == "completed", done["history"]
    listed = (await api.get(f"/api/v1/{kind.path}", params={"name": "RESOURCES-STOP", "status": "completed"})).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    claims = (await api.get(f"{url}/logs", params={"search": "claimed by worker"})).json()
    assert claims["total"] == 2

    # A finished job cannot be stopped (nor continued).
    message = conflict_message(await api.post(f"{url}/stop"))
    assert message == f"{kind.label} 'resources-stop' is completed; only {kind.stoppable} jobs can be stopped"
    conflict_message(await api.post(f"{url}/continue"))

    # The events on the job's timeline: stopped by the user, then requested again as "continued".
    async def timeline():
        items = (await api.get(f"{url}/timeline")).json()["items"]
        seen = [(e["type"], e["message"]) for e in items]
        return seen if (kind.request_event, "continued") in seen else None
    seen = await wait_for(timeline, timeout=60)
    assert seen.index((kind.stop_event, "user")) < seen.index((kind.request_event, "continued")), seen
    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404


async def test_a_stopped_compression_ends_its_job_process_and_records_nothing_more(api, bucket,  # noqa: F811
                                                                                  tiny_folder):  # noqa: F811
    path = await upload_folder(api, tiny_folder, f"{bucket}/resources-pending")
    source = await create_compression_source(api, name="resources-pending", weights_path=path)
    r = await api.post("/api/v1/compression-jobs", json=job_body(
        name="resources-ended", source={"model_id": source["id"]}, output_model_name="resources-ended"))
    assert r.status_code == 201, r.text
    job = r.json()
    await job_in(api, COMPRESSION, job["id"], "running", timeout=180)
    assert (await api.post(f"/api/v1/compression-jobs/{job['id']}/stop")).status_code == 200

    async def ended():
        logs = (await api.get(f"/api/v1/compression-jobs/{job['id']}/logs", params={"search": "stopped:"})).json()
        return logs["items"]
    [line] = await wait_for(ended, timeout=60)
    assert "the job process was ended" in line["line"] and "from the beginning" in line["line"]
    stopped = (await api.get(f"/api/v1/compression-jobs/{job['id']}")).json()
    assert stopped["status"] == "stopped" and stopped["metrics"] is None and stopped["output"]["weights_uri"] is None
    assert stopped["history"][-1]["status"] == "stopped" and stopped["progress"]["fraction"] < 1.0
    assert (await api.delete(f"/api/v1/compression-jobs/{job['id']}")).status_code == 204
