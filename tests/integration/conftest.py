"""Helpers of the integration tests. The ``running_platform``, ``api`` and ``anonymous`` fixtures live in
tests/conftest.py (shared with the browser tests)."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager

import httpx

from contracts import new_id
from services.lib.common.settings import Settings
from services.lib.embedded.servers import EmbeddedServers
from tests.conftest import serve_platform


def serve_process(services: str, env: dict[str, str], log_file) -> tuple[subprocess.Popen, int]:
    """``maas serve --services <services>`` as a process of its own on a free port, as production
    runs one component; ``env`` over this process's environment. Returns it and its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "services.apps.cli", "serve", "--services", services,
                             "--host", "127.0.0.1", "--port", str(port)],
                            env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT)
    return proc, port


def stop_process(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """A clean stop (``sig``: SIGTERM, or SIGINT for ``maas up``'s Ctrl-C), killed if it takes longer than
    ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


async def wait_for(predicate, *, timeout: float = 90, interval: float = 0.3):
    """Poll an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


@asynccontextmanager
async def signed_in_tenant(api, url: str, *, name: str, timeout: float = 60):
    """A new, unprivileged user in a tenant of its own (made by the admin client ``api``), as an
    httpx client carrying its login token; ``client.default_bucket`` is that tenant's bucket."""
    username, password = f"{name}-{new_id()[:6]}", "tenant-password-1"
    r = await api.post("/api/v1/users", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    bucket = r.json()["default_bucket"]
    r = await api.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    async with httpx.AsyncClient(base_url=url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {r.json()['token']}"}) as client:
        client.default_bucket = bucket
        yield client


@asynccontextmanager
async def private_platform(folder, *, services: str, topic_prefix: str, **settings):
    """Embedded servers of its own (data under ``folder``) with a platform of ``services`` on them, so a
    test may kill a server without touching the session's: yields ``{"servers", "platform", "url",
    "admin"}`` (``admin``: an httpx client with the bootstrap admin's token). ``settings``: more
    ``Settings`` fields. The environment is restored afterwards (the compute cluster sets RAY_*)."""
    env_before = dict(os.environ)
    servers = EmbeddedServers(folder / "data")
    await asyncio.to_thread(servers.start, timeout=60)
    env = servers.settings_env()
    config = Settings(kafka_bootstrap=env["MAAS_KAFKA_BOOTSTRAP"], mongo_url=env["MAAS_MONGO_URL"],
                      s3_endpoint=env["MAAS_S3_ENDPOINT"], s3_access_key=env["MAAS_S3_ACCESS_KEY"],
                      s3_secret_key=env["MAAS_S3_SECRET_KEY"], s3_secure=False,
                      work_dir=str(folder / "work"), topic_prefix=topic_prefix, **settings)
    try:
        async with serve_platform(config, services=services) as running:
            async with httpx.AsyncClient(base_url=running["url"], timeout=60,
                                         headers={"Authorization": f"Bearer {running['admin'].token}"}) as admin:
                yield {"servers": servers, "platform": running["platform"], "url": running["url"], "admin": admin}
    finally:
        await asyncio.to_thread(servers.stop)
        for name in set(os.environ) - set(env_before):
            del os.environ[name]
        os.environ.update(env_before)


async def kill_server(servers: EmbeddedServers, name: str) -> None:
    """``kill -9`` of one embedded server; returns once the servers see it gone."""
    os.kill(servers.pids()[name], signal.SIGKILL)
    while servers.running:
        await asyncio.sleep(0.05)


async def restart_server(servers: EmbeddedServers, name: str) -> None:
    """The killed server again, on its port and data (what `maas up`'s supervisor does every 2 s)."""
    assert await asyncio.to_thread(servers.restart_dead, timeout=60) == [name]
