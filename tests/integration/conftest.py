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


def stop_process(proc: subprocess.Popen) -> None:
    """A clean stop (SIGTERM, its shutdown), killed if it takes over a minute."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
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
