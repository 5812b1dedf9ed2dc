"""A multi-node tuning job on a real Ray cluster through the public API of a platform in cluster
mode: its two ranks run on two different nodes of the account's dedicated pool, and when a rank's
node is lost mid-job the job's auto-restart resumes it from its latest checkpoint on the remaining
capacity, and it completes with every iteration trained once after that checkpoint."""
from __future__ import annotations

import asyncio
import re

import pytest

from services.lib.mlkit.tiny import build_tiny_model
from tests.conftest import cluster_platform
from tests.integration.conftest import signed_in_tenant, wait_for
from tests.integration.test_tuning_jobs import alpaca_rows, create_model, created, job_body, jsonl, put, upload_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own

SERVICES = "gateway,registry,registry-worker,tuning,tuning-worker"
POOL = "tune-pool"
ITERATION = re.compile(r"iteration\s+(\d+)/")


@pytest.fixture(scope="module")
async def ray_platform(platform_env, ray_cluster, tmp_path_factory):
    async with cluster_platform(ray_cluster, tmp_path_factory, name="ray_tuning", services=SERVICES) as running:
        yield running


@pytest.fixture(scope="module")
async def team(ray_platform):
    async with signed_in_tenant(ray_platform["admin_client"], ray_platform["url"], name="tuner") as client:
        yield client


async def test_ranks_on_two_nodes_and_a_lost_node_resumes_from_the_checkpoint(team, ray_cluster, tmp_path):
    first_nodes = [ray_cluster.add_node(POOL, cpus=1) for _ in range(2)]
    r = await team.post("/api/v1/pools", json={"name": POOL})
    assert r.status_code == 201 and r.json()["nodes"] == 2, r.text
    path = await upload_model(team, build_tiny_model(tmp_path / "tiny"), f"{team.default_bucket}/tiny")
    model = await created(team, (await create_model(team, name="ray-tune-base", path=path, validate=False))["id"])
    data = await put(team, f"{team.default_bucket}/data/alpaca64.jsonl", jsonl(alpaca_rows(64)))

    # A job that could never start (4 nodes of a 2-node pool) is refused with the numbers.
    r = await team.post("/api/v1/tuning-jobs", json=job_body(model["id"], data, name="four", node_count=4,
                                                             output_model_name="four", resource_pool=POOL))
    assert r.status_code == 400 and r.json()["error"]["field"] == "resource_pool", r.text
    assert "4 CPUs (2 in the whole pool)" in r.json()["error"]["message"]

    # 64 samples / 32 per batch x 60 epochs = 120 iterations, a checkpoint every 12.
    r = await team.post("/api/v1/tuning-jobs", json=job_body(
        model["id"], data, name="two-nodes", output_model_name="two-nodes-out", node_count=2, resource_pool=POOL,
        hyperparameters={"epochs": 60, "checkpoint_count": 10, "learning_rate": 0.01},
        auto_restart={"enabled": True, "max_restarts": 3}))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json()["placement"] == {"pool": POOL, "cpus": 2.0, "gpus": 0.0, "memory_bytes": 8 * 2**30, "nodes": 2}

    async def checkpointed():
        job = (await team.get(f"/api/v1/tuning-jobs/{job_id}")).json()
        assert job["status"] != "failed", job["status_message"]
        return job if job["status"] == "running" and job["checkpoints"] else None
    job = await wait_for(checkpointed, timeout=300, interval=0.3)
    saved = max(c["iteration"] for c in job["checkpoints"])

    # A third node joins; the node of the job's coordinating task is lost — with one of the ranks (each
    # of the two nodes holds one): the hardest case, the run can clean nothing up after itself.
    lines = [i["line"] for i in (await team.get(f"/api/v1/tuning-jobs/{job_id}/logs",
                                                params={"search": "running on ray node"})).json()["items"]]
    coordinator = re.search(r"ray node (\w+)", lines[-1]).group(1)
    [lost] = [n for n in first_nodes if n.node_id == coordinator]
    spare = ray_cluster.add_node(POOL, cpus=1)
    await asyncio.to_thread(ray_cluster.remove_node, lost)

    async def settled():
        job = (await team.get(f"/api/v1/tuning-jobs/{job_id}")).json()
        return job if job["status"] in ("completed", "failed") else None
    done = await wait_for(settled, timeout=600, interval=1)
    assert done["status"] == "completed", done["status_message"]
    assert done["restart_count"] >= 1
    lines = [i["line"] for i in (await team.get(f"/api/v1/tuning-jobs/{job_id}/logs",
                                                params={"limit": 5000})).json()["items"]]
    assert any("lost its node" in line or "node" in line and "lost" in line for line in lines), lines[-40:]
    resumed = [line for line in lines if "resum" in line.lower()]
    assert resumed, lines[-40:]
    iterations = [int(m.group(1)) for line in lines if (m := ITERATION.search(line))]
    # The first run trained 1..m; the resumed run trained from its latest checkpoint r (>= the one
    # seen above, a multiple of 12) to the end, each iteration once.
    drop = next(i for i in range(1, len(iterations)) if iterations[i] <= iterations[i - 1])
    first, second = iterations[:drop], iterations[drop:]
    resumed_from = second[0] - 1
    assert first == list(range(1, len(first) + 1)) and saved <= resumed_from <= first[-1]
    assert resumed_from % 12 == 0 and second == list(range(resumed_from + 1, 121))
    nodes_line = next(line for line in reversed(lines) if "ranks ran on nodes" in line)
    rank_nodes = re.findall(r"\d: (\w+)", nodes_line)
    assert len(set(rank_nodes)) == 2 and set(rank_nodes) <= ray_cluster.node_ids(POOL)
    assert spare.node_id in rank_nodes   # the resumed run used the node that joined
