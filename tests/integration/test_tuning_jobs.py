"""Fine-tuning through the real HTTP API, Kafka, MongoDB, S3 and trainer, on the tiny model (no mocks)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.lib.common.objectstore import ObjectPath
from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

ANSWERS = ["The capital of France is Paris.", "There are seven days in a week.",
           "Thank you very much for your help!", "The weather today is sunny with a light breeze."]
ITERATION = re.compile(r"iteration\s+(\d+)/\s*(\d+)")
LOSS = re.compile(r"lm loss: ([0-9.E+-]+)")


def alpaca_rows(n: int) -> list[dict]:
    return [{"instruction": f"Question number {i % 4}?", "input": "", "output": ANSWERS[i % 4]} for i in range(n)]


def jsonl(rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
async def bucket(api) -> str:
    return (await api.get("/api/v1/auth/me")).json()["default_bucket"]


async def put(api, path: str, data: bytes) -> str:
    r = await api.put(f"/api/v1/storage/objects/{path}", content=data)
    assert r.status_code == 201, r.text
    return path


async def upload_model(api, folder: Path, dest: str) -> str:
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        await put(api, f"{dest}/{file.name}", file.read_bytes())
    return dest


async def create_model(api, *, name: str, path: str, template_id: str = "qwen2-custom", validate: bool = True) -> dict:
    r = await api.post("/api/v1/models", json={"name": name, "template_id": template_id, "weights_path": path,
                                               "validate_weights": validate})
    assert r.status_code == 201, r.text
    return r.json()


async def created(api, model_id: str) -> dict:
    async def done():
        model = (await api.get(f"/api/v1/models/{model_id}")).json()
        return model if model["status"] != "creating" else None
    model = await wait_for(done, timeout=120)
    assert model["status"] == "created", model
    return model


@pytest.fixture(scope="module")
async def tiny_path(api, bucket, tmp_path_factory) -> str:
    folder = build_tiny_model(tmp_path_factory.mktemp("tune") / "tiny")
    return await upload_model(api, folder, f"{bucket}/tune-tiny")


@pytest.fixture(scope="module")
async def tiny_model(api, tiny_path) -> dict:
    return await created(api, (await create_model(api, name="tune-base", path=tiny_path))["id"])


@pytest.fixture(scope="module")
async def alpaca64(api, bucket) -> str:
    return await put(api, f"{bucket}/tune-data/alpaca64.jsonl", jsonl(alpaca_rows(64)))


def job_body(model_id: str, dataset: str, **changes) -> dict:
    body = {"name": "tune-job", "source": {"model_id": model_id}, "tune_type": "lora",
            "output_model_name": "tuned-model", "dataset_format": "alpaca", "dataset_path": dataset,
            "hyperparameters": {"epochs": 3, "learning_rate": 0.05, "checkpoint_count": 3}}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


async def submit(api, body: dict) -> dict:
    r = await api.post("/api/v1/tuning-jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def job_in(api, job_id: str, *statuses: str, timeout: float = 240) -> dict:
    async def reached():
        job = (await api.get(f"/api/v1/tuning-jobs/{job_id}")).json()
        if job["status"] == "failed" and "failed" not in statuses:
            raise AssertionError(f"job failed: {job['status_message']}")
        return job if job["status"] in statuses else None
    return await wait_for(reached, timeout=timeout, interval=0.5)


async def iteration_lines(api, job_id: str) -> list[str]:
    r = await api.get(f"/api/v1/tuning-jobs/{job_id}/logs", params={"search": "lm loss", "limit": 5000})
    assert r.status_code == 200
    return [item["line"] for item in r.json()["items"]]


def iterations_of(lines: list[str]) -> list[int]:
    return [int(ITERATION.search(line).group(1)) for line in lines]


# ---------------------------------------------------------------------------------------------
# A LoRA job from start to a new model
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def completed_job(api, bucket, tiny_model, alpaca64) -> dict:
    body = job_body(tiny_model["id"], alpaca64, name="lora-tiny", output_model_name="tiny-lora-out",
                    output_path=f"{bucket}/tune-out",
                    permanent_log={"enabled": True, "path": f"{bucket}/tune-logs"},
                    notification={"enabled": True, "topic_name": "tuning-alerts", "events": ["completed", "failed"]})
    job = await submit(api, body)
    assert job["status"] == "creating"
    assert job["hyperparameters"]["iterations"] == 6 and job["hyperparameters"]["global_batch_size"] == 32
    assert job["dataset"]["sample_count"] == 64
    assert job["notification"] == {"enabled": True, "topic_name": "tuning-alerts", "events": ["completed", "failed"]}
    return await job_in(api, job["id"], "completed")


async def test_a_lora_job_completes_with_falling_loss(api, completed_job):
    job = completed_job
    assert job["progress"]["iteration"] == job["progress"]["total_iterations"] == 6
    statuses = [h["status"] for h in job["history"]]
    assert statuses[0] == "creating" and statuses[-2:] == ["running", "completed"]
    lines = await iteration_lines(api, job["id"])
    assert iterations_of(lines) == [1, 2, 3, 4, 5, 6]
    for fragment in ("lm loss", "elapsed time per iteration", "global batch size:    32", "SEQ_LEN",
                     "tokens per sec per card"):
        assert all(fragment in line for line in lines), fragment
    losses = [float(LOSS.search(line).group(1)) for line in lines]
    assert losses[-1] < losses[0], losses


async def test_checkpoints_are_listed_with_format_and_path(api, bucket, completed_job, running_platform):
    r = await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}/checkpoints")
    items = r.json()["items"]
    assert [c["iteration"] for c in items] == [2, 4, 6]
    assert all(c["format"] == "lora" for c in items)
    first = items[0]
    assert first["path"] == f"s3://{bucket}/tune-out/{completed_job['id']}/checkpoints/iter_0000002/model/"
    store = running_platform["platform"].store
    weights = {Path(o.key).name for o in await store.list(ObjectPath.parse(first["path"]), recursive=True)}
    state = {Path(o.key).name for o in await store.list(ObjectPath.parse(first["state_path"]), recursive=True)}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= weights and "optimizer.pt" not in weights
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json"} <= state


async def test_logs_download_and_permanent_copy(api, bucket, completed_job, running_platform):
    r = await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}/logs/download")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert r.text.count("lm loss") == 6
    path = ObjectPath(bucket, f"tune-logs/{completed_job['id']}/lora-tiny.log")
    text = (await running_platform["platform"].store.get_bytes(path)).decode()
    assert text.count("lm loss") == 6 and "completed" in text


async def test_the_job_yields_a_created_model(api, completed_job):
    async def output():
        job = (await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}")).json()
        return job["output"]["model_id"]
    model_id = await wait_for(output, timeout=60)
    model = await created(api, model_id)
    assert model["name"] == "tiny-lora-out" and model["template_id"] == "qwen2-custom"


async def test_the_source_model_shows_the_task_record(api, tiny_model, completed_job):
    async def record():
        version = (await api.get(f"/api/v1/models/{tiny_model['id']}/versions/1")).json()
        return next((t for t in version["tasks"] if t["id"] == completed_job["id"] and t["status"] == "completed"),
                    None)
    task = await wait_for(record, timeout=30)
    assert task["kind"] == "tuning" and task["name"] == "lora-tiny"


async def test_a_lora_checkpoint_becomes_a_model_through_a_weight_conversion(api, completed_job):
    r = await api.post(f"/api/v1/tuning-jobs/{completed_job['id']}/checkpoints/4/models",
                       json={"target": "new_model", "model_name": "tiny-lora-ckpt4"})
    assert r.status_code == 202, r.text
    conversion = r.json()
    assert conversion["kind"] == "weight_conversion" and conversion["status"] == "running"

    async def linked():
        items = (await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}/conversions")).json()["items"]
        item = next(c for c in items if c["id"] == conversion["id"])
        assert item["status"] != "failed", item
        return item if item.get("version_id") else None
    item = await wait_for(linked, timeout=120)
    await created(api, item["model_id"])
    # The merge took its share of the job's pool and gave it back with its end: metered, not held.
    pool = (await api.get("/api/v1/pools/public")).json()
    assert conversion["id"] not in [a["job_id"] for a in pool["allocations"] + pool["queue"]], pool
    kinds = {r["kind"]: r for r in (await api.get("/api/v1/usage/compute", params={"group_by": "kind"})).json()["items"]}
    assert kinds["weight_conversion"]["runs"] >= 1 and kinds["weight_conversion"]["cpu_hours"] > 0, kinds

    async def conversion_record():
        version = (await api.get(f"/api/v1/models/{item['model_id']}/versions/1")).json()
        return [t["kind"] for t in version["tasks"]]
    kinds = await wait_for(lambda: _has(conversion_record, "weight_conversion"), timeout=30)
    assert "weight_conversion" in kinds and "weight_validation" in kinds


async def _has(fetch, kind):
    kinds = await fetch()
    return kinds if kind in kinds else None


async def test_a_checkpoint_becomes_a_new_version_of_the_tuned_model(api, completed_job):
    async def output():
        return (await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}")).json()["output"]["model_id"]
    model_id = await wait_for(output, timeout=60)
    r = await api.post(f"/api/v1/tuning-jobs/{completed_job['id']}/checkpoints/2/models",
                       json={"target": "new_version", "description": "iteration 2"})
    assert r.status_code == 202, r.text

    async def two_versions():
        model = (await api.get(f"/api/v1/models/{model_id}")).json()
        return model if model["version_count"] == 2 and model["versions"][1]["status"] == "created" else None
    model = await wait_for(two_versions, timeout=120)
    assert model["versions"][1]["description"] == "iteration 2"


async def test_a_checkpoint_for_a_deleted_output_model_fails_its_conversion_saying_why(api, completed_job):
    job = (await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}")).json()
    assert (await api.delete(f"/api/v1/models/{job['output']['model_id']}")).status_code == 204
    r = await api.post(f"/api/v1/tuning-jobs/{completed_job['id']}/checkpoints/2/models",
                       json={"target": "new_version", "description": "too late"})
    assert r.status_code == 202, r.text  # the registry, not the tuning service, knows the model is gone

    async def failed():
        items = (await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}/conversions")).json()["items"]
        item = next(c for c in items if c["id"] == r.json()["id"])
        return item if item["status"] == "failed" else None
    item = await wait_for(failed, timeout=120)
    assert item["message"] == f"model_id: the model {job['output']['model_id']} no longer exists"
    assert item["version_id"] is None


async def test_deleting_the_job_removes_its_task_record(api, tiny_model, completed_job, alpaca64):
    # Runs last in this group: the job and its record go away.
    r = await api.delete(f"/api/v1/tuning-jobs/{completed_job['id']}")
    assert r.status_code == 204
    assert (await api.get(f"/api/v1/tuning-jobs/{completed_job['id']}")).status_code == 404

    async def record_gone():
        version = (await api.get(f"/api/v1/models/{tiny_model['id']}/versions/1")).json()
        return all(t["id"] != completed_job["id"] for t in version["tasks"])
    await wait_for(record_gone, timeout=30)


# ---------------------------------------------------------------------------------------------
# Stop, continue, auto-stop
# ---------------------------------------------------------------------------------------------

async def long_job(api, tiny_model, dataset: str, name: str, **changes) -> dict:
    body = job_body(tiny_model["id"], dataset, name=name, output_model_name=f"{name}-out",
                    hyperparameters={"epochs": 20, "checkpoint_count": 10}, **changes)
    return await submit(api, body)


async def first_checkpoint(api, job_id: str) -> int:
    async def saved():
        job = (await api.get(f"/api/v1/tuning-jobs/{job_id}")).json()
        assert job["status"] not in ("failed", "completed"), job["status_message"]
        return job["checkpoints"][0]["iteration"] if job["checkpoints"] else None
    return await wait_for(saved, timeout=240, interval=0.3)


async def test_stop_then_continue_resumes_from_the_latest_checkpoint(api, tiny_model, alpaca64):
    job = await long_job(api, tiny_model, alpaca64, "stop-continue")
    await first_checkpoint(api, job["id"])
    r = await api.post(f"/api/v1/tuning-jobs/{job['id']}/stop")
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    assert (await api.post(f"/api/v1/tuning-jobs/{job['id']}/stop")).status_code == 409

    async def settled():  # the worker saves a checkpoint where it stopped, then lets go
        r = await api.post(f"/api/v1/tuning-jobs/{job['id']}/continue")
        assert r.status_code in (200, 409), r.text
        return r.json() if r.status_code == 200 else None
    continued = await wait_for(settled, timeout=60)
    assert continued["status"] == "creating"
    latest = continued["checkpoints"][-1]["iteration"]
    before = iterations_of(await iteration_lines(api, job["id"]))
    assert before == list(range(1, before[-1] + 1)) and latest == before[-1]

    async def resumed():
        lines = iterations_of(await iteration_lines(api, job["id"]))
        return lines if len(lines) > len(before) + 1 else None
    after = (await wait_for(resumed, timeout=180))[len(before):]
    assert after[0] == latest + 1 and after == list(range(latest + 1, after[-1] + 1))
    logs = (await api.get(f"/api/v1/tuning-jobs/{job['id']}/logs", params={"search": "resuming"})).json()
    assert f"resuming from the checkpoint at iteration {latest}" in logs["items"][-1]["line"]
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204


class _RunsCodeWhenUnpickled:
    """What an attacker would plant: unpickling it runs their code (here: writes a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


async def stopped_and_released(running_platform, job_id: str) -> None:
    """Until the worker has saved its stop checkpoint and let the job go."""
    jobs = running_platform["platform"].mongo["tuning_jobs"]

    async def released():
        doc = await jobs.find_one({"_id": job_id})
        return doc["status"] == "stopped" and not (doc.get("run") or {}).get("active")
    await wait_for(released, timeout=90)


async def test_a_planted_pickle_in_the_resume_state_never_runs(api, bucket, tiny_model, alpaca64, running_platform,
                                                               tmp_path):
    """Issue 14.1: swap the optimizer/scheduler/RNG files for a pickle, continue: the code must not run."""
    import io

    import torch

    job = await long_job(api, tiny_model, alpaca64, "planted-pickle", output_path=f"{bucket}/planted-out")
    await first_checkpoint(api, job["id"])
    assert (await api.post(f"/api/v1/tuning-jobs/{job['id']}/stop")).status_code == 200
    await stopped_and_released(running_platform, job["id"])
    marker = tmp_path / "pwned"
    evil = io.BytesIO()
    torch.save({"state": _RunsCodeWhenUnpickled(marker)}, evil)
    checkpoints = (await api.get(f"/api/v1/tuning-jobs/{job['id']}/checkpoints")).json()["items"]
    assert checkpoints
    planted = []
    for c in checkpoints:
        # Where the API says the resume state is, and beside the weights in the user's own output path.
        folders = [c["state_path"], c["path"].removesuffix("model/") + "state/"]
        for folder in folders:
            for name in ("optimizer.pt", "scheduler.pt", "rng_state_0.pt"):
                target = ObjectPath.parse(folder + name)
                r = await api.put(f"/api/v1/storage/objects/{target.bucket}/{target.key}", content=evil.getvalue())
                planted.append((target.bucket, r.status_code))

    continued = await api.post(f"/api/v1/tuning-jobs/{job['id']}/continue")
    assert continued.status_code == 200, continued.text
    latest = checkpoints[-1]["iteration"]

    async def resumed_or_failed():
        if (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()["status"] == "failed":
            return "failed"
        return max(iterations_of(await iteration_lines(api, job["id"])), default=0) > latest and "resumed"
    outcome = await wait_for(resumed_or_failed, timeout=180)
    assert not marker.exists(), "the planted pickle ran inside the training process"
    assert outcome == "resumed"
    # The resume state is in the platform's bucket, which no tenant can write to.
    assert {b for b, status in planted if status == 201} <= {bucket}, planted
    assert all(ObjectPath.parse(c["state_path"]).bucket == "maas-tuning" for c in checkpoints)
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204


async def test_auto_stop_ends_the_job_when_its_time_is_up(api, tiny_model, alpaca64, running_platform):
    from services.tuning.watchdog import report_hangs

    job = await long_job(api, tiny_model, alpaca64, "auto-stop", auto_stop={"enabled": True, "hours": 0.001})
    await job_in(api, job["id"], "running", timeout=120)
    # While it runs: the watchdog's hang check, with a threshold this job's pace exceeds (疑似卡死).
    assert await report_hangs(running_platform["platform"], hang_seconds=0.001) >= 1
    hung = (await api.get(f"/api/v1/tuning-jobs/{job['id']}/logs", params={"search": "may be hung"})).json()
    assert hung["total"] == 1
    stopped = await job_in(api, job["id"], "stopped", timeout=120)
    assert "auto-stopped" in stopped["status_message"]
    assert stopped["progress"]["iteration"] < stopped["progress"]["total_iterations"]
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204


async def test_only_valid_transitions_are_accepted(api, tiny_model, alpaca64):
    job = await long_job(api, tiny_model, alpaca64, "transitions")
    r = await api.post(f"/api/v1/tuning-jobs/{job['id']}/continue")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
    assert (await api.post(f"/api/v1/tuning-jobs/{job['id']}/stop")).status_code == 200
    listed = (await api.get("/api/v1/tuning-jobs", params={"status": "stopped", "name": "transitions"})).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204
    assert (await api.post(f"/api/v1/tuning-jobs/{job['id']}/stop")).status_code == 404


async def test_a_failing_job_records_why_and_unconditional_restarts_stop_after_three(api, bucket, tmp_path,
                                                                                     alpaca64):
    # Weights that skipped validation and do not load: the training itself fails.
    folder = build_tiny_model(tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file" * 8)
    path = await upload_model(api, folder, f"{bucket}/tune-broken")
    model = await created(api, (await create_model(api, name="tune-broken", path=path, validate=False))["id"])
    job = await submit(api, job_body(model["id"], alpaca64, name="broken", output_model_name="broken-out",
                                     auto_restart={"enabled": True, "max_restarts": 5, "unconditional": True}))
    failed = await job_in(api, job["id"], "failed", timeout=180)
    assert "SafetensorError" in failed["status_message"] and "deserializing header" in failed["status_message"]
    assert failed["restart_count"] == 3            # unconditional restarts: at most 3 in a row
    restarts = [h for h in failed["history"] if h["status"] == "waiting" and "restarting" in (h["message"] or "")]
    assert len(restarts) == 3
    errors = (await api.get(f"/api/v1/tuning-jobs/{job['id']}/logs", params={"search": "ERROR"})).json()
    assert errors["total"] == 4 and "SafetensorError" in errors["items"][-1]["line"]
    assert (await api.post(f"/api/v1/tuning-jobs/{job['id']}/continue")).status_code == 409
    assert (await api.delete(f"/api/v1/tuning-jobs/{job['id']}")).status_code == 204


async def test_two_nodes_train_data_parallel_and_both_ranks_contribute(api, tiny_model, alpaca64):
    """node_count 2: the worker runs two gloo ranks; every iteration's tokens come from both."""
    job = await submit(api, job_body(tiny_model["id"], alpaca64, name="tune-2nodes", output_model_name="tuned-2n",
                                     node_count=2, hyperparameters={"epochs": 1, "checkpoint_count": 1}))
    done = await job_in(api, job["id"], "completed")
    progress = done["progress"]
    assert progress["world_size"] == 2 and progress["iteration"] == progress["total_iterations"] == 2
    assert len(progress["rank_tokens"]) == 2 and all(t > 0 for t in progress["rank_tokens"]), progress
    r = await api.get(f"/api/v1/tuning-jobs/{job['id']}/logs", params={"search": "world size 2"})
    assert r.json()["items"], "the worker did not report a world size of 2"
