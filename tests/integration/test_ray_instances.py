"""Inference instances as Ray actors in their service's resource pool, on a real multi-node Ray
cluster, through the public API of a platform in cluster mode (``MAAS_RAY_ADDRESS``): a 2-instance
service lands on two nodes of its pool and answers through the gateway; another account cannot
deploy into the pool; losing a node, the service gets its instance count back on the pool's
remaining capacity and keeps answering; another service that does not fit waits in the pool's
queue and starts when the service is stopped; every instance's share of the pool comes back. A
deployer that starts afresh finds the (detached) instances again by name.

The cluster is the module's (``ray_cluster``); this module adds the nodes of its own pool
``serve-a`` (1 CPU each: one ``cpu.1u4g`` instance per node). The platform here has its own
database and topics on the session's embedded servers.
"""
from __future__ import annotations

import httpx
import pytest

from services.deployer.backend import Health
from services.deployer.ray_backend import RayInstanceBackend
from services.lib.readmodels.serving_refs import INSTANCES
from tests.conftest import cluster_platform
from tests.integration.conftest import signed_in_tenant, wait_for
from tests.integration.test_compression_api import create_model, job_body, tiny_folder, upload_folder  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own

SERVICES = "gateway,registry,registry-worker,serving,deployer,compression"   # compression: its API only
POOL = "serve-a"
CHAT = {"max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
async def ray_serving(platform_env, ray_cluster, tmp_path_factory):
    # The test cluster's nodes are on 127.0.0.1 (tests/conftest.py): instances listen there too.
    async with cluster_platform(ray_cluster, tmp_path_factory, name="ray_serving", services=SERVICES) as running:
        yield running


@pytest.fixture(scope="module")
def admin(ray_serving):
    return ray_serving["admin_client"]


@pytest.fixture(scope="module")
async def team_a(admin, ray_serving):
    async with signed_in_tenant(admin, ray_serving["url"], name="serve-a-user") as client:
        yield client


@pytest.fixture(scope="module")
async def team_b(admin, ray_serving):
    async with signed_in_tenant(admin, ray_serving["url"], name="serve-b-user") as client:
        yield client


async def tiny_model_of(client, folder, name: str) -> dict:
    path = await upload_folder(client, folder, f"{client.default_bucket}/{name}")
    model = await create_model(client, name=name, weights_path=path, validate=False)
    assert model["status"] == "created", model
    return model


async def chat(client: httpx.AsyncClient, service: dict) -> httpx.Response:
    return await client.post(f"/v1/infers/{service['id']}/v1/chat/completions",
                             json={**CHAT, "model": service["name"]})


async def instance_docs(platform, service_id: str) -> list[dict]:
    return [d async for d in platform.mongo[INSTANCES].find({"service_id": service_id})]


async def test_a_service_spreads_over_its_pools_nodes_and_survives_losing_one(
        team_a, team_b, ray_serving, ray_cluster, tiny_folder, tmp_path):  # noqa: F811
    platform = ray_serving["platform"]
    ray_cluster.add_node(POOL, cpus=1)
    ray_cluster.add_node(POOL, cpus=1)
    r = await team_a.post("/api/v1/pools", json={"name": POOL, "description": "A's serving nodes"})
    assert r.status_code == 201, r.text
    assert r.json()["nodes"] == 2 and r.json()["capacity"]["cpus"] == 2

    # Account B: A's pool is not one it can deploy into, by name or as "its dedicated pool".
    b_model = await tiny_model_of(team_b, tiny_folder, "b-tiny")
    for pool in (POOL, "dedicated"):
        r = await team_b.post("/api/v1/services", json={"name": "b-on-a", "model_id": b_model["id"], "qps_limit": 5,
                                                        "resource_pool": pool})
        assert r.status_code == 400 and r.json()["error"]["field"] == "resource_pool", r.text
    assert (await team_b.get("/api/v1/services")).json()["total"] == 0

    # An instance larger than every node of the pool could never start: refused with the numbers.
    model = await tiny_model_of(team_a, tiny_folder, "a-tiny")
    r = await team_a.post("/api/v1/services", json={"name": "too-big", "model_id": model["id"], "qps_limit": 5,
                                                    "resource_pool": POOL, "instance_spec": "cpu.2u8g"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == "resource_pool" and "2 CPUs" in error["message"] and POOL in error["message"], error

    r = await team_a.post("/api/v1/services", json={"name": "a-chat", "model_id": model["id"], "qps_limit": 50,
                                                    "instance_count": 2, "resource_pool": "dedicated"})
    assert r.status_code == 201, r.text
    service = r.json()
    assert service["placement"]["pool"] == POOL and service["placement"]["cpus"] == 1

    async def running():
        s = (await team_a.get(f"/api/v1/services/{service['id']}")).json()
        return s if s["status"] in ("running", "failed") else None
    assert (await wait_for(running, timeout=300, interval=1))["status"] == "running"
    docs = await instance_docs(platform, service["id"])
    assert len(docs) == 2 and {d["node"] for d in docs} == ray_cluster.node_ids(POOL)   # one on each node
    assert all(d["url"].startswith("http://127.0.0.1:") and d["backend"] == "ray" for d in docs)
    pool = (await team_a.get(f"/api/v1/pools/{POOL}")).json()
    assert sorted(a["job_id"] for a in pool["allocations"]) == sorted(d["_id"] for d in docs)
    assert {a["kind"] for a in pool["allocations"]} == {"instance"} and pool["free"]["cpus"] == 0

    # A deployer starting afresh (another backend object, nothing in memory) finds them by name.
    fresh = RayInstanceBackend(platform.cluster, root=tmp_path / "deployer")
    try:
        found = {h.instance_id: h for h in await fresh.list()}
        assert {d["_id"]: d["url"] for d in docs}.items() <= {i: h.url for i, h in found.items()}.items()
        assert [await fresh.health(found[d["_id"]]) for d in docs] == [Health.ready, Health.ready]
    finally:
        await fresh.close()

    async def server_logs_shipped():   # read from the actors on their nodes
        logs = (await team_a.get(f"/api/v1/services/{service['id']}/logs")).json()["items"]
        return {line["instance_id"] for line in logs} == {d["_id"] for d in docs}
    await wait_for(server_logs_shipped, timeout=60)

    key = (await team_a.post("/api/v1/api-keys", json={"description": "ray serving"})).json()["key"]
    async with httpx.AsyncClient(base_url=ray_serving["url"], timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        answered_by = set()
        for _ in range(6):
            r = await chat(client, service)
            assert r.status_code == 200 and "usage" in r.json(), r.text
            answered_by.add(r.headers["x-maas-instance"])
        assert answered_by <= {d["_id"] for d in docs}

        # A spare node, then the node of one instance is lost: the instance is replaced on the spare.
        spare = ray_cluster.add_node(POOL, cpus=1)
        lost = next(d for d in docs if d["node"] != spare.node_id)
        ray_cluster.remove_node(next(n for n in ray_cluster.nodes[POOL] if n.node_id == lost["node"]))

        async def recovered():
            now = await instance_docs(platform, service["id"])
            ready = [d for d in now if d["status"] == "ready"]
            s = (await team_a.get(f"/api/v1/services/{service['id']}")).json()
            return now if (len(now) == 2 and len(ready) == 2 and lost["_id"] not in {d["_id"] for d in now}
                           and s["status"] == "running") else None
        now = await wait_for(recovered, timeout=300, interval=1)
        assert {d["node"] for d in now} == ray_cluster.node_ids(POOL)   # the survivor and the spare
        for _ in range(4):
            r = await chat(client, service)
            assert r.status_code == 200, r.text
            assert r.headers["x-maas-instance"] in {d["_id"] for d in now}
    pool = (await team_a.get(f"/api/v1/pools/{POOL}")).json()
    assert pool["nodes"] == 2 and sorted(a["job_id"] for a in pool["allocations"]) == sorted(d["_id"] for d in now)

    async def lost_is_reported():
        events = (await team_a.get(f"/api/v1/services/{service['id']}/events")).json()["items"]
        return any(f"instance {lost['_id'][:8]} failed" in e["message"] for e in events)
    await wait_for(lost_is_reported, timeout=60)

    # The pool is full: a second service waits in its queue; a job could never run on these nodes.
    r = await team_a.post("/api/v1/compression-jobs", json=job_body(
        name="never-here", source={"model_id": model["id"]}, output_model_name="a-w8a8", resource_pool=POOL))
    assert r.status_code == 400 and "runs on one node and needs 2 CPUs (1 on its largest node)" in r.text, r.text
    r = await team_a.post("/api/v1/services", json={"name": "a-later", "model_id": model["id"], "qps_limit": 5,
                                                    "resource_pool": POOL})
    assert r.status_code == 201, r.text
    later = r.json()

    async def queued():
        queue = (await team_a.get(f"/api/v1/pools/{POOL}")).json()["queue"]
        return queue if [(q["kind"], q["job_id"]) for q in queue] == [("service", later["id"])] else None
    [entry] = await wait_for(queued, timeout=120, interval=1)
    assert entry["position"] == 1 and entry["reason"] == (f"waiting for 1 CPUs (0 available), 4.0 GiB memory "
                                                          f"(0.0 GiB available) in pool '{POOL}'")
    waiting = (await team_a.get(f"/api/v1/services/{later['id']}")).json()
    assert waiting["status"] == "deploying" and waiting["message"] == entry["reason"], waiting
    assert (await team_b.get(f"/api/v1/pools/{POOL}")).status_code == 404   # B sees neither pool nor queue

    # Stopping the service gives its two CPUs back: the waiting service's instance starts.
    assert (await team_a.post(f"/api/v1/services/{service['id']}/stop")).status_code == 200

    async def later_running():
        s = (await team_a.get(f"/api/v1/services/{later['id']}")).json()
        return s if s["status"] == "running" else None
    await wait_for(later_running, timeout=300, interval=1)
    assert not await instance_docs(platform, service["id"])
    assert (await team_a.get(f"/api/v1/pools/{POOL}")).json()["queue"] == []

    # Deleting the services stops their actors and gives the pool back.
    for svc in (service, later):
        assert (await team_a.delete(f"/api/v1/services/{svc['id']}")).status_code == 204

    async def released():
        p = (await team_a.get(f"/api/v1/pools/{POOL}")).json()
        return p if not p["allocations"] and not await instance_docs(platform, later["id"]) else None
    assert (await wait_for(released, timeout=120, interval=1))["free"]["cpus"] == 2


FRAG = "frag-a"


async def test_an_instance_that_fits_the_pool_but_no_node_waits_in_the_queue_until_a_node_frees(
        team_a, ray_serving, ray_cluster, tiny_folder):  # noqa: F811
    """Node-level admission: two nodes of 2 CPUs with 1 CPU free on each hold no 2-CPU instance. It
    is not handed to Ray to hang there: it waits in the pool's queue saying so, and starts on the
    node that frees — the one the ledger gives it, where Ray finds the room."""
    platform = ray_serving["platform"]
    ray_cluster.add_node(FRAG, cpus=2)
    ray_cluster.add_node(FRAG, cpus=2)
    r = await team_a.post("/api/v1/pools", json={"name": FRAG})
    assert r.status_code == 201 and r.json()["capacity"]["memory_bytes"] == 16 * 2**30, r.text
    model = await tiny_model_of(team_a, tiny_folder, "frag-tiny")

    async def deploy(name: str, spec: str = "cpu.1u4g") -> dict:
        r = await team_a.post("/api/v1/services", json={"name": name, "model_id": model["id"], "qps_limit": 5,
                                                        "resource_pool": FRAG, "instance_spec": spec})
        assert r.status_code == 201, r.text
        return r.json()

    async def status_of(service: dict, *wanted: str):
        s = (await team_a.get(f"/api/v1/services/{service['id']}")).json()
        return s if s["status"] in wanted else None

    small = [await deploy(f"frag-{n}") for n in range(3)]
    for service in small:
        assert (await wait_for(lambda s=service: status_of(s, "running", "failed"), timeout=300,
                               interval=1))["status"] == "running"
    node_of = {s["id"]: (await instance_docs(platform, s["id"]))[0]["node"] for s in small}
    # Best fit packs: two instances share a node, the third has the other to itself.
    [shared] = [n for n in set(node_of.values()) if list(node_of.values()).count(n) == 2]
    paired = [s for s in small if node_of[s["id"]] == shared]
    [alone] = [s for s in small if node_of[s["id"]] != shared]
    assert (await team_a.post(f"/api/v1/services/{paired[0]['id']}/stop")).status_code == 200

    async def fragmented():   # one CPU free on each node: 2 in the pool, none on one node
        p = (await team_a.get(f"/api/v1/pools/{FRAG}")).json()
        return p if p["free"]["cpus"] == 2 and len(p["allocations"]) == 2 else None
    await wait_for(fragmented, timeout=120, interval=1)

    big = await deploy("frag-big", "cpu.2u8g")
    reason = (f"waiting for a node of pool '{FRAG}' with 2 CPUs, 8.0 GiB memory free; "
              "largest free share is 1 CPUs, 4.0 GiB memory")

    async def queued():
        queue = (await team_a.get(f"/api/v1/pools/{FRAG}")).json()["queue"]
        return queue if [(q["kind"], q["job_id"]) for q in queue] == [("service", big["id"])] else None
    [entry] = await wait_for(queued, timeout=120, interval=1)
    assert entry["position"] == 1 and entry["reason"] == reason
    waiting = (await team_a.get(f"/api/v1/services/{big['id']}")).json()
    assert waiting["status"] == "deploying" and waiting["message"] == reason, waiting
    assert not await instance_docs(platform, big["id"])     # nothing handed to Ray to hang there

    # The instance alone on its node stops: that node is free whole, and the big instance starts there.
    assert (await team_a.post(f"/api/v1/services/{alone['id']}/stop")).status_code == 200
    assert (await wait_for(lambda: status_of(big, "running", "failed"), timeout=300, interval=1))["status"] == "running"
    [instance] = await instance_docs(platform, big["id"])
    assert instance["node"] == node_of[alone["id"]]
    pool = (await team_a.get(f"/api/v1/pools/{FRAG}")).json()
    assert pool["queue"] == [] and pool["free"] == {"cpus": 1.0, "gpus": 0.0, "memory_bytes": 4 * 2**30}

    for service in (*small, big):
        assert (await team_a.delete(f"/api/v1/services/{service['id']}")).status_code == 204

    async def released():
        p = (await team_a.get(f"/api/v1/pools/{FRAG}")).json()
        return p if not p["allocations"] else None
    assert (await wait_for(released, timeout=120, interval=1))["free"]["cpus"] == 4
