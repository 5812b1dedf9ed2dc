"""Resizing a dedicated pool through the API on a real Ray cluster: ``maas up --ray`` (a process of
its own, with its own embedded servers and Ray head) starts and stops ``ray start`` worker nodes
labelled with the pool as the pool's ``node_count`` changes, refuses to shrink below what runs
there, and leaves no node behind when it stops."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import stop_process, wait_for
from tests.integration.test_compression_api import create_model, tiny_folder, upload_folder  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own

POOL = "team-r"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_under(folder: Path) -> list[str]:
    """Command lines of this machine's processes that name ``folder`` (Ray's nodes name their session
    folder, which is under the data folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
async def maas_up():
    # Ray's socket paths must stay short: a folder directly under the temp dir.
    data = Path(tempfile.mkdtemp(prefix="mu-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    env.update(MAAS_IMPORT_PRESETS="false", MAAS_POOL_RECONCILE_SECONDS="1")
    log_path = data / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.apps.cli", "up", "--ray", "--data-dir", str(data),
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async def admin_token():
            if proc.poll() is not None:
                raise AssertionError(f"maas up exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            found = re.search(r"^token:\s+(\S+)$", log_path.read_text(errors="replace"), re.MULTILINE)
            return found.group(1) if found else None
        token = await wait_for(admin_token, timeout=600, interval=1)
        async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as admin:
            async def serving():
                try:
                    return (await admin.get("/api/v1/pools")).status_code == 200
                except httpx.TransportError:
                    return False
            await wait_for(serving, timeout=300, interval=1)
            yield {"admin": admin, "proc": proc, "data": data, "log": log_path}
    finally:
        stop_process(proc, sig=signal.SIGINT, timeout=180)
        shutil.rmtree(data, ignore_errors=True)


async def _pool(admin) -> dict:
    r = await admin.get(f"/api/v1/pools/{POOL}")
    assert r.status_code == 200, r.text
    return r.json()


async def _has_nodes(admin, count: int) -> dict | None:
    pool = await _pool(admin)
    return pool if pool["nodes"] == count and pool["status"] == "ready" else None


async def test_a_pool_grows_and_shrinks_with_real_ray_nodes(maas_up, tiny_folder):  # noqa: F811
    admin = maas_up["admin"]
    r = await admin.post("/api/v1/pools", json={"name": POOL, "node_resources": {"cpus": 1, "memory_gb": 4}})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["cluster"] == "ray" and created["node_count"] == 0 and created["nodes"] == 0
    assert created["node_resources"] == {"cpus": 1, "memory_gb": 4.0} and created["status"] == "ready"

    # Bad sizes: 400 naming the field and the rule.
    r = await admin.patch(f"/api/v1/pools/{POOL}", json={"node_count": 9})
    assert r.status_code == 400 and r.json()["error"]["field"] == "node_count", r.text
    assert "at most 8 nodes" in r.json()["error"]["message"]
    r = await admin.patch(f"/api/v1/pools/{POOL}", json={"node_resources": {"cpus": 0, "memory_gb": 1}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "node_resources.cpus", r.text

    r = await admin.patch(f"/api/v1/pools/{POOL}", json={"node_count": 1})
    assert r.status_code == 200, r.text
    assert r.json()["node_count"] == 1 and r.json()["status"] == "scaling"
    pool = await wait_for(lambda: _has_nodes(admin, 1), timeout=300, interval=1)
    [first] = pool["node_list"]
    assert first["address"] == "127.0.0.1" and first["resources"]["cpus"] == 1
    assert first["resources"]["memory_bytes"] == 4 * 2**30 and pool["capacity"]["cpus"] == 1

    r = await admin.patch(f"/api/v1/pools/{POOL}", json={"node_count": 2})
    assert r.status_code == 200, r.text
    pool = await wait_for(lambda: _has_nodes(admin, 2), timeout=300, interval=1)
    assert pool["capacity"]["cpus"] == 2 and first["id"] in {n["id"] for n in pool["node_list"]}

    # Something runs there: an inference instance takes 1 CPU of the pool; shrinking to 0 is refused.
    path = await upload_folder(admin, tiny_folder, f"{(await admin.get('/api/v1/auth/me')).json()['default_bucket']}/tiny")
    model = await create_model(admin, name="tiny-on-r", weights_path=path, validate=False)
    r = await admin.post("/api/v1/services", json={"name": "on-team-r", "model_id": model["id"], "qps_limit": 5,
                                                   "resource_pool": POOL, "instance_spec": "cpu.1u4g"})
    assert r.status_code == 201, r.text
    service = r.json()

    async def allocated():
        p = await _pool(admin)
        return p if p["allocations"] else None
    pool = await wait_for(allocated, timeout=300, interval=1)
    assert [a["kind"] for a in pool["allocations"]] == ["instance"]
    r = await admin.patch(f"/api/v1/pools/{POOL}", json={"node_count": 0})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["field"] == "node_count" and "holds 1 CPUs (0 on 0 nodes)" in error["message"]
    assert "keep at least 1 nodes" in error["message"]
    # One node is enough for it: the idle one goes, the one it runs on stays.
    r = await admin.patch(f"/api/v1/pools/{POOL}", json={"node_count": 1})
    assert r.status_code == 200, r.text
    pool = await wait_for(lambda: _has_nodes(admin, 1), timeout=300, interval=1)
    assert [a["kind"] for a in pool["allocations"]] == ["instance"]

    async def running():
        s = (await admin.get(f"/api/v1/services/{service['id']}")).json()
        return s if s["status"] in ("running", "failed") else None
    assert (await wait_for(running, timeout=600, interval=2))["status"] == "running"
    assert (await admin.post(f"/api/v1/services/{service['id']}/stop")).status_code == 200
    assert (await admin.delete(f"/api/v1/services/{service['id']}")).status_code == 204

    async def idle():
        p = await _pool(admin)
        return p if not p["allocations"] else None
    await wait_for(idle, timeout=300, interval=1)
    # Deleting a pool with nodes: they go first, then the pool (its name stays taken till then).
    assert (await admin.delete(f"/api/v1/pools/{POOL}")).status_code == 204
    assert (await admin.get(f"/api/v1/pools/{POOL}")).status_code == 404

    async def name_free():
        r = await admin.post("/api/v1/pools", json={"name": POOL})
        return r if r.status_code == 201 else None
    await wait_for(name_free, timeout=300, interval=1)
    assert (await _pool(admin))["nodes"] == 0
    assert (await admin.delete(f"/api/v1/pools/{POOL}")).status_code == 204


async def test_stopping_maas_up_leaves_no_node_behind(maas_up):
    admin = maas_up["admin"]
    r = await admin.post("/api/v1/pools", json={"name": "left", "node_count": 1,
                                                "node_resources": {"cpus": 1, "memory_gb": 1}})
    assert r.status_code == 201, r.text

    async def joined():
        p = (await admin.get("/api/v1/pools/left")).json()
        return p if p["nodes"] == 1 else None
    await wait_for(joined, timeout=300, interval=1)
    proc = maas_up["proc"]
    proc.send_signal(signal.SIGINT)
    # uvicorn ends on the signal it handled (130: SIGINT) after the shutdown: `maas up` cleaned up first.
    assert proc.wait(timeout=180) in (0, 130), maas_up["log"].read_text()[-3000:]
    assert maas_up["log"].read_text().rstrip().endswith("stopped.")
    assert _processes_under(maas_up["data"]) == []
