"""Two deployers, one leading (issue 18, item 2): the leader is killed with SIGKILL while it serves a
service; the standby takes the lead when the lease lapses, finds the instance gone (the leader's
children die with it) and starts a new one; the service answers again. The lease itself is checked
on the real database: one holder at a time, renewal, hand-over at expiry or at a clean release, and
a crashed holder of this machine lapses at once."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid

import httpx
import psutil
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from services.lib.common.leader import LEADERS, LeaderLease, dead_on_this_machine
from services.lib.mlkit.tiny import build_tiny_model
from tests.conftest import serve_platform
from tests.integration.conftest import serve_process, stop_process, wait_for
from tests.integration.test_serving_api import settled, upload_folder, wait_status

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def leases(embedded_servers):
    client = AsyncIOMotorClient(embedded_servers.settings_env()["MAAS_MONGO_URL"])
    collection = client["maas_leader_tests"][f"{LEADERS}_{uuid.uuid4().hex[:8]}"]
    yield collection
    await collection.drop()
    client.close()


async def test_one_holder_at_a_time_renewed_handed_over_at_expiry_or_release(leases):
    a = LeaderLease(leases, name="deployer", holder="host-a:1:x", lease_seconds=0.6)
    b = LeaderLease(leases, name="deployer", holder="host-b:2:y", lease_seconds=0.6)
    assert await a.hold() is True
    assert await b.hold() is False
    assert await a.hold() is True          # renewal
    assert await leases.count_documents({}) == 1
    await asyncio.sleep(0.8)               # a fell silent past its lease
    assert await b.hold() is True and await a.hold() is False
    assert await b.holder_now() == "host-b:2:y"
    await b.release()
    assert await a.hold() is True          # at once after a clean release


async def test_a_holder_known_to_be_dead_lapses_at_once(leases):
    dead = LeaderLease(leases, name="deployer", holder="here:999999:x", lease_seconds=300)
    assert await dead.hold() is True
    alive = LeaderLease(leases, name="deployer", holder="here:1:y", lease_seconds=300)
    assert await alive.hold() is False
    restarted = LeaderLease(leases, name="deployer", holder="here:2:z", lease_seconds=300,
                            gone=lambda holder: holder == "here:999999:x")
    assert await restarted.hold() is True and await alive.hold() is False
    # What the deployer and the migrations use: this machine's process ids.
    me = socket.gethostname()
    assert dead_on_this_machine(f"{me}:{_dead_pid()}:t") and not dead_on_this_machine(f"{me}:{os.getpid()}:t")
    assert not dead_on_this_machine(f"another-machine:{_dead_pid()}:t")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _start_deployer(env: dict, log_file) -> subprocess.Popen:
    return serve_process("deployer", env, log_file)[0]


async def test_a_killed_leading_deployer_is_replaced_by_the_standby_and_the_service_answers_again(
        platform_env, tmp_path, tmp_path_factory):
    from services.lib.common.settings import get_settings

    name = f"failover{uuid.uuid4().hex[:6]}"
    settings = get_settings().model_copy(update={"mongo_db": f"maas_{name}", "topic_prefix": f"maas-{name}",
                                                 "work_dir": str(tmp_path_factory.mktemp(f"{name}-work"))})
    env = {**platform_env, "MAAS_MONGO_DB": settings.mongo_db, "MAAS_TOPIC_PREFIX": settings.topic_prefix,
           "MAAS_WORK_DIR": settings.work_dir,
           # The lead lapses within seconds of the leader's death (long enough for a busy CI box).
           "MAAS_DEPLOYER_LEADER_LEASE_SECONDS": "4", "MAAS_DEPLOYER_LEADER_RENEW_SECONDS": "0.5"}
    logs = {n: open(tmp_path / f"deployer-{n}.log", "wb") for n in ("a", "b")}
    procs: dict[str, subprocess.Popen] = {}
    # Everything but the deployer in this process; the two deployers are processes of their own.
    async with serve_platform(settings, services="gateway,registry,registry-worker,serving") as running:
        leaders = running["platform"].mongo[LEADERS]
        try:
            procs["a"] = _start_deployer(env, logs["a"])

            async def a_leads():
                assert procs["a"].poll() is None, (tmp_path / "deployer-a.log").read_text()[-3000:]
                doc = await leaders.find_one({"_id": "deployer"})
                return doc and f":{procs['a'].pid}:" in doc["holder"]
            await wait_for(a_leads, timeout=180, interval=0.3)
            procs["b"] = _start_deployer(env, logs["b"])

            async with httpx.AsyncClient(base_url=running["url"], timeout=60, headers={
                    "Authorization": f"Bearer {running['admin'].token}"}) as api:
                bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
                path = await upload_folder(api, build_tiny_model(tmp_path / "tiny"), f"{bucket}/failover/tiny")
                r = await api.post("/api/v1/models", json={"name": "failover-tiny", "template_id": "qwen2-custom",
                                                           "weights_path": path})
                assert r.status_code == 201, r.text
                model = await settled(api, f"/api/v1/models/{r.json()['id']}", lambda m: m["status"] != "creating")
                assert model["status"] == "created", model
                r = await api.post("/api/v1/services", json={"name": "failover-svc", "model_id": model["id"],
                                                             "qps_limit": 50})
                assert r.status_code == 201, r.text
                service = await wait_status(api, r.json()["id"], "running", "failed")
                assert service["status"] == "running", service
                key = (await api.post("/api/v1/api-keys", json={"description": "failover"})).json()["key"]

                async def chat() -> int:
                    r = await api.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                       json={"model": "failover-svc", "messages": HI, "max_tokens": 4})
                    return r.status_code
                assert await chat() == 200
                [first] = (await api.get(f"/api/v1/services/{service['id']}")).json()["instances"]
                a_instances = instance_pids(procs["a"])
                assert len(a_instances) == 1 and instance_pids(procs["b"]) == set()   # the standby runs nothing

                os.kill(procs["a"].pid, signal.SIGKILL)
                procs["a"].wait(timeout=30)

                async def answered_again():
                    assert procs["b"].poll() is None, (tmp_path / "deployer-b.log").read_text()[-3000:]
                    items = (await api.get(f"/api/v1/services/{service['id']}")).json()["instances"]
                    ready = [i for i in items if i["status"] == "ready" and i["id"] != first["id"]]
                    return ready if ready and await chat() == 200 else None
                [second] = await wait_for(answered_again, timeout=240, interval=0.5)
                assert not any(_running(pid) for pid in a_instances)   # the leader's instance died with it
                assert len(instance_pids(procs["b"])) == 1               # the new one is the standby's
                assert f":{procs['b'].pid}:" in (await leaders.find_one({"_id": "deployer"}))["holder"]
                now = (await api.get(f"/api/v1/services/{service['id']}")).json()
                assert [i["id"] for i in now["instances"]] == [second["id"]] and now["status"] == "running"
                assert (await api.delete(f"/api/v1/services/{service['id']}")).status_code == 204
        finally:
            for proc in procs.values():
                stop_process(proc)
            for f in logs.values():
                f.close()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def instance_pids(proc: subprocess.Popen) -> set[int]:
    """The inference servers a deployer process started."""
    found = set()
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "services.lib.inference.server" in " ".join(child.cmdline()) and _running(child.pid):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found
