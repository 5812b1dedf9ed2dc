"""Resource pools on a real multi-node Ray cluster (guide chapter 3), through the public API of a
platform in cluster mode (``MAAS_RAY_ADDRESS``): a dedicated pool is its account's alone, a job
runs on a node of its pool, a job that could never fit is refused with the numbers, and a job that
does not fit now waits in the pool's queue — visible, with its position — and starts when the
capacity frees, never over-committing the pool.

The cluster (``ray_cluster``): a head without CPUs, a ``public`` node and a ``team-a`` node of 2 CPUs
and 8 GiB each. The platform here has its own database and topics on the session's embedded servers."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import cluster_platform
from tests.integration.conftest import signed_in_tenant, wait_for
from tests.integration.test_compression_api import create_model, job_body, tiny_folder, upload_folder  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own

SERVICES = "gateway,registry,registry-worker,compression,compression-worker,serving,deployer"


@pytest.fixture(scope="module")
async def ray_platform(platform_env, ray_cluster, tmp_path_factory):
    # Two worker slots: the pool, not the worker, makes the second job wait.
    async with cluster_platform(ray_cluster, tmp_path_factory, name="ray_pools", services=SERVICES,
                                env={"MAAS_COMPRESSION_SLOTS": "2"}) as running:
        yield running


@pytest.fixture(scope="module")
def admin(ray_platform):
    return ray_platform["admin_client"]


@pytest.fixture(scope="module")
async def team_a(admin, ray_platform):
    async with signed_in_tenant(admin, ray_platform["url"], name="team-a-user") as client:
        yield client


@pytest.fixture(scope="module")
async def team_b(admin, ray_platform):
    async with signed_in_tenant(admin, ray_platform["url"], name="team-b-user") as client:
        yield client


async def tiny_model_of(client, tiny_folder, name: str) -> dict:  # noqa: F811
    path = await upload_folder(client, tiny_folder, f"{client.default_bucket}/{name}")
    model = await create_model(client, name=name, weights_path=path, validate=False)
    assert model["status"] == "created", model
    return model


async def test_a_dedicated_pool_is_its_accounts_alone(team_a, team_b, ray_cluster, tiny_folder):  # noqa: F811
    r = await team_a.post("/api/v1/pools", json={"name": "team-a", "description": "A's node"})
    assert r.status_code == 201, r.text
    pool = r.json()
    assert pool["type"] == "dedicated" and pool["cluster"] == "ray" and pool["nodes"] == 1
    assert pool["capacity"]["cpus"] == 2 and pool["free"]["cpus"] == 2
    assert [n["id"] for n in pool["node_list"]] == sorted(ray_cluster.node_ids("team-a"))

    listed = {p["name"]: p for p in (await team_a.get("/api/v1/pools")).json()["items"]}
    assert set(listed) == {"public", "team-a"} and listed["public"]["capacity"]["cpus"] == 2

    # Account B: A's pool does not exist for it, its name is taken, and nothing of B's can use it.
    assert (await team_b.get("/api/v1/pools/team-a")).status_code == 404
    assert [p["name"] for p in (await team_b.get("/api/v1/pools")).json()["items"]] == ["public"]
    r = await team_b.post("/api/v1/pools", json={"name": "team-a"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"
    assert (await team_b.delete("/api/v1/pools/team-a")).status_code == 404
    model = await tiny_model_of(team_b, tiny_folder, "b-tiny")
    for pool_name in ("team-a", "dedicated"):
        r = await team_b.post("/api/v1/compression-jobs", json=job_body(
            name="b-on-a", source={"model_id": model["id"]}, output_model_name="b-on-a", resource_pool=pool_name))
        assert r.status_code == 400 and r.json()["error"]["field"] == "resource_pool", r.text
    assert (await team_b.get("/api/v1/compression-jobs")).json()["total"] == 0

    r = await team_a.post("/api/v1/pools", json={"name": "public"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "name"
    r = await team_a.post("/api/v1/pools", json={"name": "Bad_Name"})
    assert r.status_code == 422 or r.status_code == 400


async def test_a_job_that_could_never_fit_is_refused_with_the_numbers(team_a, tiny_folder):  # noqa: F811
    model = await tiny_model_of(team_a, tiny_folder, "a-never")
    r = await team_a.post("/api/v1/compression-jobs", json=job_body(
        name="too-big", source={"model_id": model["id"]}, output_model_name="too-big",
        resource_pool="team-a", instance_spec="cpu.4u16g"))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == "resource_pool" and "4 CPUs" in error["message"] and "team-a" in error["message"]
    assert (await team_a.get("/api/v1/compression-jobs")).json()["total"] == 0


async def test_jobs_run_on_their_pools_nodes_and_queue_for_room(team_a, ray_cluster, tiny_folder):  # noqa: F811
    model = await tiny_model_of(team_a, tiny_folder, "a-tiny")
    ids = []
    for n in (1, 2):   # cpu.2u8g: each takes both CPUs of team-a
        r = await team_a.post("/api/v1/compression-jobs", json=job_body(
            name=f"on-a-{n}", source={"model_id": model["id"]}, output_model_name=f"a-w8a8-{n}",
            resource_pool="dedicated", instance_spec="cpu.2u8g"))
        assert r.status_code == 201, r.text
        assert r.json()["placement"] == {"pool": "team-a", "cpus": 2.0, "gpus": 0.0, "memory_bytes": 8 * 2**30,
                                         "nodes": 1}
        ids.append(r.json()["id"])

    async def one_runs_one_queues():
        jobs = [(await team_a.get(f"/api/v1/compression-jobs/{i}")).json() for i in ids]
        running = [j for j in jobs if j["status"] == "running"]
        queued = [j for j in jobs if j["status"] == "pending" and j["queue"]]
        return (running[0], queued[0]) if len(running) == 1 and len(queued) == 1 else None
    running, queued = await wait_for(one_runs_one_queues, timeout=180, interval=0.5)
    assert queued["queue"]["pool"] == "team-a" and queued["queue"]["position"] == 1
    assert "2 CPUs" in queued["queue"]["reason"] and "team-a" in queued["queue"]["reason"]
    pool = (await team_a.get("/api/v1/pools/team-a")).json()
    assert [a["job_id"] for a in pool["allocations"]] == [running["id"]] and pool["free"]["cpus"] == 0
    assert [q["job_id"] for q in pool["queue"]] == [queued["id"]]

    async def settled(job_id):
        job = (await team_a.get(f"/api/v1/compression-jobs/{job_id}")).json()
        return job if job["status"] in ("completed", "failed") else None
    first = await wait_for(lambda: settled(running["id"]), timeout=600, interval=1)
    second = await wait_for(lambda: settled(queued["id"]), timeout=600, interval=1)
    assert first["status"] == "completed" and second["status"] == "completed", (first, second)
    assert second["started_at"] >= first["finished_at"]      # never both on the pool's 2 CPUs at once
    team_a_node = ray_cluster.node_ids("team-a").pop()
    for job in (first, second):
        log = (await team_a.get(f"/api/v1/compression-jobs/{job['id']}/logs", params={"search": "running on"})).json()
        assert any(f"ray node {team_a_node}" in line["line"] for line in log["items"]), log
    pool = (await team_a.get("/api/v1/pools/team-a")).json()
    assert pool["allocations"] == [] and pool["queue"] == [] and pool["free"]["cpus"] == 2

    # Both runs are metered on the dedicated pool, never charged to a package (the account's own nodes).
    [usage] = (await team_a.get("/api/v1/usage/compute", params={"group_by": "pool"})).json()["items"]
    assert usage["pool"] == "team-a" and usage["runs"] == 2 and usage["cpu_hours"] > 0
    assert usage["package_cpu_hours"] == 0 and usage["on_demand_cpu_hours"] == usage["cpu_hours"]



async def test_a_job_queued_behind_an_instance_starts_when_the_service_stops(team_a, tiny_folder):  # noqa: F811
    model = await tiny_model_of(team_a, tiny_folder, "a-serve")
    r = await team_a.post("/api/v1/services", json={"name": "a-holds-the-pool", "model_id": model["id"],
                                                    "qps_limit": 5, "resource_pool": "team-a",
                                                    "instance_spec": "cpu.2u8g"})
    assert r.status_code == 201, r.text
    service = r.json()

    async def serving():
        s = (await team_a.get(f"/api/v1/services/{service['id']}")).json()
        return s if s["status"] in ("running", "failed") else None
    assert (await wait_for(serving, timeout=300, interval=1))["status"] == "running"
    r = await team_a.post("/api/v1/compression-jobs", json=job_body(
        name="behind-an-instance", source={"model_id": model["id"]}, output_model_name="a-after-serving",
        resource_pool="team-a", instance_spec="cpu.2u8g"))
    assert r.status_code == 201, r.text
    job = r.json()

    async def queued():
        j = (await team_a.get(f"/api/v1/compression-jobs/{job['id']}")).json()
        return j if j["queue"] else None
    waiting = await wait_for(queued, timeout=120, interval=0.5)
    assert waiting["status"] == "pending" and waiting["queue"]["position"] == 1
    assert waiting["queue"]["reason"] == ("waiting for 2 CPUs (0 available), 8.0 GiB memory (0.0 GiB available) "
                                          "in pool 'team-a'")
    pool = (await team_a.get("/api/v1/pools/team-a")).json()
    assert [a["kind"] for a in pool["allocations"]] == ["instance"]
    assert [(q["kind"], q["job_id"]) for q in pool["queue"]] == [("compression", job["id"])]
    # A pool something runs on or waits on cannot be deleted.
    assert (await team_a.delete("/api/v1/pools/team-a")).status_code == 409

    stop_requested = datetime.now(UTC)
    assert (await team_a.post(f"/api/v1/services/{service['id']}/stop")).status_code == 200

    async def settled():
        j = (await team_a.get(f"/api/v1/compression-jobs/{job['id']}")).json()
        return j if j["status"] in ("completed", "failed") else None
    done = await wait_for(settled, timeout=600, interval=1)
    assert done["status"] == "completed", done
    started = datetime.fromisoformat(done["started_at"])
    assert (started if started.tzinfo else started.replace(tzinfo=UTC)) > stop_requested   # not before
    assert (await team_a.delete(f"/api/v1/services/{service['id']}")).status_code == 204

    async def idle():
        p = (await team_a.get("/api/v1/pools/team-a")).json()
        return p if not p["allocations"] and not p["queue"] else None
    assert (await wait_for(idle, timeout=120, interval=1))["free"]["cpus"] == 2
    # An idle pool can be deleted.
    assert (await team_a.delete("/api/v1/pools/team-a")).status_code == 204
    assert (await team_a.get("/api/v1/pools/team-a")).status_code == 404
