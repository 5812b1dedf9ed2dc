"""Resizing dedicated pools (docs/cluster.md "Resizing a dedicated pool"): the limits and refusals of
the use case, the reconcile pass, the KubeRay patch (sent through a fake transport: no Kubernetes
here) and the local provisioner's choice of which ``ray start`` children to start and stop (fake
processes). The local provisioner on a real Ray cluster: tests/integration/test_pool_resizing.py."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from pydantic import ValidationError

from services.apps.cli import local_ray
from services.apps.cli.local_ray import LocalRayWorkers, worker_command
from tests.unit.cli_fakes import api  # noqa: F401 (a fixture)
from services.lib.common.cluster import Node, Resources
from services.lib.common.errors import ApiError
from services.lib.common.settings import Settings
from services.lib.pools import service
from services.lib.pools.kuberay import JSON_PATCH, KubeRayNodes, plan
from services.lib.pools.ledger import ALLOCATIONS
from services.lib.pools.models import POOLS, NodeResources, PoolCreate, PoolUpdate
from services.lib.pools.provisioning import GIB, PoolNode, PoolTarget, reconcile_once, refusal

ROOT = Path(__file__).resolve().parents[2]


def node(name: str, *, idle: bool = True, pool: str = "team-a", cpus: float = 1) -> PoolNode:
    return PoolNode(id=f"id-{name}", pool=pool, name=name, resources=Resources(cpus=cpus), idle=idle)


# ---- which platform resizes, and the request's limits

def test_only_a_platform_that_starts_nodes_resizes_and_the_refusal_says_what_to_do():
    embedded = refusal(Settings(ray_address=""), "team-a")
    assert "embedded default has one machine" in embedded and "maas up --ray" in embedded
    external = refusal(Settings(ray_address="127.0.0.1:6379"), "team-a")
    assert "does not manage the nodes of pool 'team-a'" in external and "openmaas.io/pool=team-a" in external
    assert refusal(Settings(pool_provisioner="local", ray_address="127.0.0.1:6379"), "team-a") is None
    assert "embedded default" in refusal(Settings(pool_provisioner="local", ray_address=""), "team-a")
    assert refusal(Settings(pool_provisioner="kuberay", ray_address="ray://head:10001"), "team-a") is None
    with pytest.raises(ValidationError):
        Settings(pool_provisioner="docker")


@pytest.mark.parametrize("body, field", [
    ({"node_count": -1}, "node_count"), ({"node_count": 1001}, "node_count"),
    ({"node_resources": {"cpus": 0, "memory_gb": 4}}, "cpus"),
    ({"node_resources": {"cpus": 1.5, "memory_gb": 4}}, "cpus"),
    ({"node_resources": {"cpus": 1, "memory_gb": 0}}, "memory_gb"),
    ({"node_resources": {"cpus": 1}}, "memory_gb"),
    ({"node_resources": {"cpus": 1, "memory_gb": 4, "gpus": 1}}, "gpus"),
])
def test_every_number_a_user_gives_has_bounds(body, field):
    with pytest.raises(ValidationError) as caught:
        PoolUpdate(**body)
    assert field in str(caught.value)
    assert PoolUpdate().model_dump() == {"description": None, "node_count": None, "node_resources": None}
    assert PoolCreate(name="a", node_count=2).node_resources is None


class FakeUsage:
    def __init__(self, used: dict | None):
        self.used = used

    async def find_one(self, query, session=None):
        return self.used


def platform_of(*, provisioner="local", used: dict | None = None, nodes=(), **settings):
    from services.lib.pools import ledger

    async def cluster_nodes():
        return list(nodes)
    return SimpleNamespace(settings=Settings(pool_provisioner=provisioner, ray_address="127.0.0.1:1", **settings),
                           mongo={ledger.USAGE: FakeUsage(used)},
                           cluster=SimpleNamespace(kind="ray", nodes=cluster_nodes))


async def test_a_size_over_the_settings_limits_is_a_400_naming_the_field_and_the_rule():
    platform = platform_of(pool_max_nodes=3, pool_node_max_cpus=4, pool_node_max_memory_gb=16)
    cases = [({"node_count": 4}, "node_count", "at most 3 nodes per pool"),
             ({"shape": NodeResources(cpus=8, memory_gb=4)}, "node_resources.cpus", "at most 4 CPUs per node"),
             ({"shape": NodeResources(cpus=1, memory_gb=32)}, "node_resources.memory_gb", "at most 16 GiB per node")]
    for kwargs, field, rule in cases:
        with pytest.raises(ApiError) as caught:
            await service._size(platform, pool="p", node_count=kwargs.get("node_count"), shape=kwargs.get("shape"),
                                current={})
        assert caught.value.status == 400 and caught.value.field == field and rule in caught.value.message


async def test_a_size_on_a_platform_that_starts_no_nodes_is_a_409():
    with pytest.raises(ApiError) as caught:
        await service._size(platform_of(provisioner="none"), pool="p", node_count=1, shape=None, current={})
    assert caught.value.status == 409 and caught.value.field == "node_count"
    assert "does not manage the nodes of pool 'p'" in caught.value.message


async def test_local_nodes_get_a_default_shape_and_a_shape_alone_keeps_the_node_count():
    local = platform_of()
    assert await service._size(local, pool="p", node_count=2, shape=None, current={}) == {
        "node_count": 2, "node_resources": {"cpus": 1, "memory_gb": 4.0}}
    kube_nodes = [Node(id="n1", pool="p", address="", resources=Resources(cpus=4))]
    kube = platform_of(provisioner="kuberay", nodes=kube_nodes)
    # On KubeRay the worker group's template sizes the nodes; a shape alone keeps the nodes there are.
    assert await service._size(kube, pool="p", node_count=3, shape=None, current={}) == {"node_count": 3}
    assert await service._size(kube, pool="p", node_count=None, shape=NodeResources(cpus=2, memory_gb=8),
                               current={}) == {"node_count": 1, "node_resources": {"cpus": 2, "memory_gb": 8.0}}


async def test_shrinking_below_what_is_allocated_is_refused_with_the_numbers():
    platform = platform_of(used={"cpus": 3.0, "gpus": 0.0})
    shape = {"cpus": 2, "memory_gb": 4}
    with pytest.raises(ApiError) as caught:
        await service._require_room_for_allocations(platform, pool="team-a", node_count=1, shape=shape)
    error = caught.value
    assert error.status == 409 and error.field == "node_count"
    assert error.message == ("node_count: work running in pool 'team-a' holds 3 CPUs (2 on 1 nodes); keep at "
                             "least 2 nodes of this size, or stop work in the pool first")
    await service._require_room_for_allocations(platform, pool="team-a", node_count=2, shape=shape)
    # Memory is reserved too: 2 nodes of 4 GiB cannot hold 12 GiB.
    with pytest.raises(ApiError) as caught:
        await service._require_room_for_allocations(platform_of(used={"cpus": 1.0, "memory_bytes": 12 * GIB}),
                                                    pool="team-a", node_count=2, shape=shape)
    assert "12.0 GiB memory (8.0 GiB on 2 nodes)" in caught.value.message and "at least 3 nodes" in caught.value.message
    await service._require_room_for_allocations(platform_of(used=None), pool="team-a", node_count=0, shape=shape)


# ---- the reconcile pass

class FakePools:
    def __init__(self, docs: list[dict]):
        self.docs = {d["_id"]: d for d in docs}

    def find(self, query):
        async def rows():
            for doc in list(self.docs.values()):
                if doc.get("node_count") is not None:
                    yield doc
        return rows()

    async def update_one(self, query, update):
        self.docs[query["_id"]].update(update["$set"])

    async def delete_one(self, query):
        if self.docs.get(query["_id"], {}).get("deleting") == query.get("deleting"):
            self.docs.pop(query["_id"])


class FakeAllocations:
    def __init__(self, nodes_by_pool: dict[str, list[str]]):
        self.nodes_by_pool = nodes_by_pool

    async def distinct(self, key, query):
        assert key == "nodes"
        return self.nodes_by_pool.get(query["pool"], [])


class FakeProvisioner:
    kind = "fake"

    def __init__(self, answers: dict[str, str | Exception]):
        self.answers, self.calls = answers, []

    async def apply(self, target, nodes):
        self.calls.append((target, [(n.name, n.idle) for n in nodes]))
        answer = self.answers.get(target.pool, "")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self):
        pass


async def test_a_pass_hands_each_sized_pool_its_nodes_and_stores_what_holds_it_back():
    pools = FakePools([
        {"_id": "a", "node_count": 2, "node_resources": {"cpus": 2, "memory_gb": 8}},
        {"_id": "b", "node_count": 1},
        {"_id": "plain"},                                              # not resized: untouched
        {"_id": "gone", "node_count": 0, "deleting": True},            # deleted, its nodes are gone
        {"_id": "going", "node_count": 0, "deleting": True},           # deleted, a node still there
    ])
    provisioner = FakeProvisioner({"a": "waiting for 1 busy node(s)", "b": RuntimeError("api down")})
    allocations = FakeAllocations({"a": ["id-a-2"]})    # the ledger gave a-2 work Ray has not started yet
    await reconcile_once(mongo={POOLS: pools, ALLOCATIONS: allocations}, provisioner=provisioner,
                         nodes=[node("a-1", pool="a"), node("a-2", pool="a"), node("x", pool="public"),
                                node("g-1", pool="going")])
    targets = {t.pool: (t, names) for t, names in provisioner.calls}
    assert set(targets) == {"a", "b", "gone", "going"}
    assert targets["a"] == (PoolTarget("a", 2, 2, 8 * GIB), [("a-1", True), ("a-2", False)])
    assert targets["going"][1] == [("g-1", True)]
    assert pools.docs["a"]["status_message"] == "waiting for 1 busy node(s)"
    assert pools.docs["b"]["status_message"] == "resizing failed, trying again: api down"
    assert "gone" not in pools.docs and "going" in pools.docs       # the name stays taken until then


def test_a_deleted_pool_targets_no_nodes():
    assert PoolTarget.of({"_id": "p", "node_count": 3, "deleting": True}).count == 0
    assert PoolTarget.of({"_id": "p", "node_count": 3, "node_resources": {"cpus": 2, "memory_gb": 0.5}}) == \
        PoolTarget("p", 3, 2, GIB // 2)


# ---- KubeRay: the patch it sends

def raycluster() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kubernetes" / "raycluster.yaml").read_text())


def test_the_manifest_has_a_worker_group_per_pool_for_the_provisioner_to_scale():
    groups = raycluster()["spec"]["workerGroupSpecs"]
    assert [(g["groupName"], g["labels"]["openmaas.io/pool"]) for g in groups] == [("public", "public"),
                                                                                   ("team-a", "team-a")]


def test_growing_raises_replicas_and_the_ceiling_and_sets_the_node_shape():
    group = raycluster()["spec"]["workerGroupSpecs"][1]          # team-a: 1 replica, 1..4
    ops, message = plan(group, 1, PoolTarget("team-a", 6, 2, 8 * GIB), [node("pod-1")])
    assert message == ""
    assert ops[0] == {"op": "test", "path": "/spec/workerGroupSpecs/1/groupName", "value": "team-a"}
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 6} in ops
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/1/maxReplicas", "value": 6} in ops
    [resources] = [op["value"] for op in ops if op["path"].endswith("/containers/0/resources")]
    assert resources == {"requests": {"cpu": "2", "memory": "8192Mi"}, "limits": {"cpu": "2", "memory": "8192Mi"}}
    # Nothing to change: nothing sent.
    group.update(replicas=6, maxReplicas=6)
    group["template"]["spec"]["containers"][0]["resources"] = resources
    assert plan(group, 1, PoolTarget("team-a", 6, 2, 8 * GIB), []) == ([], "")


def test_shrinking_names_only_idle_pods_and_waits_for_busy_ones():
    group = {"groupName": "team-a", "replicas": 3, "minReplicas": 3, "maxReplicas": 4}
    nodes = [node("pod-a", idle=False), node("pod-b"), node("pod-c", idle=False)]
    ops, message = plan(group, 0, PoolTarget("team-a", 0), nodes)
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2} in ops
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": 2} in ops
    assert {"op": "add", "path": "/spec/workerGroupSpecs/0/scaleStrategy",
            "value": {"workersToDelete": ["pod-b"]}} in ops
    assert message == "waiting for 2 busy node(s) of pool 'team-a' to finish their work before removing them"
    assert not any(op["path"].endswith("resources") for op in ops)   # no shape asked: the template's stays


async def test_the_provisioner_patches_the_rayclusters_group_with_the_service_accounts_token(tmp_path):
    (tmp_path / "token").write_text("sa-token\n")
    sent: list[httpx.Request] = []
    cluster = raycluster()

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=cluster)
    settings = Settings(kubernetes_api_url="https://kube.example:6443/", kuberay_cluster="openmaas-ray",
                        kuberay_namespace="openmaas")
    provisioner = KubeRayNodes(settings, transport=httpx.MockTransport(answer), service_account=tmp_path)
    try:
        assert await provisioner.apply(PoolTarget("team-a", 2), [node("pod-1")]) == ""
        message = await provisioner.apply(PoolTarget("team-b", 1), [])
    finally:
        await provisioner.close()
    assert "no worker group 'team-b'" in message
    get, patch, get_again = sent                                   # no patch for a missing group
    url = "https://kube.example:6443/apis/ray.io/v1/namespaces/openmaas/rayclusters/openmaas-ray"
    assert str(get.url) == str(patch.url) == str(get_again.url) == url
    assert get.method == "GET" and patch.method == "PATCH"
    assert patch.headers["authorization"] == "Bearer sa-token" and patch.headers["content-type"] == JSON_PATCH
    assert json.loads(patch.content) == [
        {"op": "test", "path": "/spec/workerGroupSpecs/1/groupName", "value": "team-a"},
        {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 2}]


# ---- the local provisioner: which children it starts and stops

class FakeProcess:
    started: list["FakeProcess"] = []

    def __init__(self, argv, **kwargs):
        self.argv, self.returncode, self.terminated = argv, None, False
        FakeProcess.started.append(self)

    def poll(self):
        return self.returncode

    def terminate(self):
        self.terminated, self.returncode = True, 0

    def wait(self, timeout=None):
        return self.returncode

    def kill(self):
        self.returncode = -9

    @property
    def name(self) -> str:
        labels = next(a for a in self.argv if a.startswith("--labels="))
        return labels.split("openmaas.io/node=")[1]


@pytest.fixture
def workers(monkeypatch, tmp_path):
    FakeProcess.started = []
    monkeypatch.setattr(local_ray.subprocess, "Popen", FakeProcess)
    head = SimpleNamespace(address="127.0.0.1:6379", temp_dir=tmp_path, driver_env={"RAY_AUTH_MODE": "token"})
    return LocalRayWorkers(head)


def test_a_worker_joins_the_head_on_loopback_with_the_pools_label_and_size():
    argv = worker_command(address="127.0.0.1:6379", pool="team-a", name="team-a-1", cpus=2, memory_bytes=4 * GIB)
    assert "--address=127.0.0.1:6379" in argv and "--node-ip-address=127.0.0.1" in argv and "--block" in argv
    assert "--labels=openmaas.io/pool=team-a,openmaas.io/node=team-a-1" in argv
    assert "--num-cpus=2" in argv and f"--memory={4 * GIB}" in argv
    ports = [a for a in argv if a.endswith("-port") is False and "-port=" in a and "worker-port" not in a]
    assert len({a.split("=")[1] for a in ports}) == len(ports) == 6    # each of its own


async def test_local_nodes_start_to_the_count_and_only_idle_ones_stop(workers):
    target = PoolTarget("team-a", 2, 1, 4 * GIB)
    assert await workers.apply(target, []) == ""
    first, second = FakeProcess.started
    assert {p.name for p in (first, second)} == set(workers.names("team-a"))
    # Both joined; the first is busy. Down to 0: only the idle one goes, the pool says why it waits.
    nodes = [node(first.name, idle=False), node(second.name)]
    message = await workers.apply(PoolTarget("team-a", 0, 1, 4 * GIB), nodes)
    assert message == "waiting for 1 busy node(s) of pool 'team-a' to finish their work before removing them"
    assert second.terminated and not first.terminated and workers.names("team-a") == [first.name]
    assert await workers.apply(PoolTarget("team-a", 0, 1, 4 * GIB), [node(first.name)]) == ""
    assert first.terminated and workers.names("team-a") == []


async def test_a_node_that_exits_is_replaced_and_a_new_shape_replaces_idle_nodes(workers):
    await workers.apply(PoolTarget("team-a", 1, 1, 4 * GIB), [])
    [crashed] = FakeProcess.started
    crashed.returncode = 1
    message = await workers.apply(PoolTarget("team-a", 1, 1, 4 * GIB), [])
    assert f"node {crashed.name} exited with code 1" in message and len(FakeProcess.started) == 2
    replacement = FakeProcess.started[1]
    assert await workers.apply(PoolTarget("team-a", 1, 1, 4 * GIB), [node(replacement.name)]) == ""
    await workers.apply(PoolTarget("team-a", 1, 2, 8 * GIB), [node(replacement.name)])
    assert replacement.terminated and "--num-cpus=2" in FakeProcess.started[2].argv


async def test_stopping_maas_up_stops_every_node_it_started(workers):
    await workers.apply(PoolTarget("a", 2, 1, GIB), [])
    await workers.apply(PoolTarget("b", 1, 1, GIB), [])
    workers.stop_all()
    assert len(FakeProcess.started) == 3 and all(p.terminated for p in FakeProcess.started)
    assert workers.names("a") == workers.names("b") == []


def test_a_node_gets_none_of_the_platforms_settings(workers, monkeypatch):
    monkeypatch.setenv("MAAS_S3_SECRET_KEY", "secret")
    captured = {}
    monkeypatch.setattr(local_ray.subprocess, "Popen", lambda argv, env, **kw: captured.update(env) or FakeProcess(argv))
    workers._start("team-a", cpus=1, memory_bytes=GIB)
    assert "MAAS_S3_SECRET_KEY" not in captured and captured["RAY_AUTH_MODE"] == "token"
    assert captured["RAY_worker_niceness"] == "0"


# ---- the CLI

def test_maas_pools_resize_sends_the_size_and_shows_joined_of_desired(api):  # noqa: F811
    from tests.unit.cli_fakes import maas
    answer = {"name": "team-a", "type": "dedicated", "nodes": 1, "node_count": 2, "status": "scaling",
              "status_message": ""}
    api.on("PATCH", "/api/v1/pools/team-a", answer)
    done = maas("pools", "resize", "team-a", "--nodes", "2", "--cpus", "2", "--memory-gb", "8")
    assert done.exit_code == 0, done.output
    assert api.sent("PATCH", "/api/v1/pools/team-a")[0].body == {
        "node_count": 2, "node_resources": {"cpus": 2, "memory_gb": 8.0}}
    assert "nodes 1 of 2 (scaling)" in done.output
    refused = "node_count: this platform does not manage the nodes of pool 'team-a'; label nodes ..."
    api.on("PATCH", "/api/v1/pools/team-a", {"error": {"code": "pool_nodes_not_managed", "field": "node_count",
                                                        "message": refused}}, status=409)
    done = maas("pools", "resize", "team-a", "--nodes", "1")
    assert done.exit_code == 1 and "does not manage the nodes" in done.output and "HTTP 409" in done.output
