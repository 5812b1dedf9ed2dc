"""A running platform (every service in one process, real HTTP) on the session's embedded servers."""
from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn

from services.common.settings import get_settings
from services.gateway.identity import ensure_bootstrap_admin
from services.runtime import build_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
async def running_platform(platform_env, tmp_path_factory):
    settings = get_settings().model_copy(update={"work_dir": str(tmp_path_factory.mktemp("work"))})
    app = build_app(settings, services="all")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    admin = await ensure_bootstrap_admin(app.state.platform)
    yield {"app": app, "platform": app.state.platform, "url": f"http://127.0.0.1:{port}", "admin": admin}
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
async def api(running_platform):
    admin = running_platform["admin"]
    async with httpx.AsyncClient(base_url=running_platform["url"], timeout=60,
                                 headers={"Authorization": f"Bearer {admin.token}"}) as client:
        yield client


@pytest.fixture(scope="session")
async def anonymous(running_platform):
    async with httpx.AsyncClient(base_url=running_platform["url"], timeout=30) as client:
        yield client


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
